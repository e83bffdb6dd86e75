"""SMPL-X through the same stages: Shape Inverse on 33 bone lengths, the hand sub-tree, the scripts end to end."""

from __future__ import annotations

import json

import pytest
import torch
from test_oracle import oracle_and_analyik
from test_scripts import run_script

from lib.core.config import REPO_ROOT
from lib.data.db import write_db
from lib.data.synthetic import make_synthetic_db, sample_smplx_poses
from lib.kinematics.tree import SMPLX_TREE
from lib.models.body_model import BodyModel
from lib.models.checkpoint import save_checkpoint
from lib.models.pan import PartAwareNetwork
from lib.solver.shape_inverse import ShapeInverse, fit_bone_length_model

OPEN_SMPLX = REPO_ROOT / "data/open/smplx/OPEN_SMPLX_NEUTRAL.npz"


@pytest.fixture(scope="module")
def body():
    return BodyModel.from_file(OPEN_SMPLX, model_type="smplx", dtype=torch.float64)


def test_shape_inverse_recovers_betas_from_33_bone_lengths(body):
    matrix, residual = fit_bone_length_model(SMPLX_TREE, body.rest_joints, body.num_betas)
    assert matrix.shape == (33, 10) and residual < 2.0
    zero = body.rest_joints(torch.zeros(1, 10, dtype=torch.float64))[0]
    solver = ShapeInverse(SMPLX_TREE, matrix, zero)
    betas = torch.randn(128, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pose = torch.as_tensor(sample_smplx_poses(128, seed=3).pose, dtype=torch.float64)
    estimate = solver(body.posed_joints(pose, betas))
    assert (estimate - betas).abs().mean() < 0.05


def test_oracle_reproduces_fingers_and_mesh(body):
    sample = sample_smplx_poses(128, seed=5)
    pose = torch.as_tensor(sample.pose, dtype=torch.float64)
    betas = torch.as_tensor(sample.betas[:, :10], dtype=torch.float64)
    truth, oracle, analytic = oracle_and_analyik(body, SMPLX_TREE, pose, betas)
    fingers = [j for hand in SMPLX_TREE.hands for j in hand]
    # fingertips are skinned vertices, not rigid children: allow a fraction of a millimetre there
    assert (oracle.joints - truth.joints)[:, fingers].norm(dim=-1).max() < 1e-3
    assert (oracle.vertices - truth.vertices).norm(dim=-1).mean() < 1e-3
    assert (analytic.vertices - truth.vertices).norm(dim=-1).mean() > 5e-3


@pytest.fixture(scope="module")
def tiny_smplx_dbs(tmp_path_factory):
    db_dir = tmp_path_factory.mktemp("smplxiks_db")
    write_db(db_dir / "motionx_test_db.pt", make_synthetic_db("smplx", 48, 21, str(OPEN_SMPLX), split="test"), "smplx")
    write_db(db_dir / "amass_train_db.pt", make_synthetic_db("smplx", 64, 22, str(OPEN_SMPLX), split="train"), "smplx")
    return db_dir


def test_eval_smplx_end_to_end(tiny_smplx_dbs, tmp_path):
    checkpoint = tmp_path / "model_best.pth.tar"
    save_checkpoint(checkpoint, {"epoch": 0, "gen_state_dict": PartAwareNetwork(SMPLX_TREE).state_dict()})
    result = run_script(
        "eval_smplx.py",
        "--cfg",
        "configs/smplx/open_eval.yaml",
        "TRAIN.DATASET_EVAL",
        "MOTIONX",
        "DATA.DB_DIR",
        str(tiny_smplx_dbs),
        "OUTPUT_DIR",
        str(tmp_path),
        "TRAIN.BATCH_SIZE",
        "16",
        "MODEL.PRETRAINED",
        str(checkpoint),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "eval_MOTIONX.json").read_text())
    assert record["body_model"] == "smplx" and record["n_samples"] == 48
    assert record["mpbe_mm"] < 1.0 and record["analyik_mpjpe_mm"] < 1.0
    assert record["oracle_mpve_mm"] < record["analyik_mpve_mm"] and record["mixik_mpve_mm"] is not None


def test_train_smplx_end_to_end(tiny_smplx_dbs, tmp_path):
    logdir = tmp_path / "run"
    result = run_script(
        "train_smplx.py",
        "--cfg",
        "configs/smplx/open_train.yaml",
        "DATA.DB_DIR",
        str(tiny_smplx_dbs),
        "TRAIN.DATASETS_3D",
        "['AMASS']",
        "TRAIN.DATASET_EVAL",
        "MOTIONX",
        "LOGDIR",
        str(logdir),
        "TRAIN.BATCH_SIZE",
        "16",
        "TRAIN.END_EPOCH",
        "1",
        "TRAIN.MAX_STEPS_PER_EPOCH",
        "2",
        "LOSS.VERT_W",
        "1.0",
        "TRAIN.VAL_MAX_SAMPLES",
        "16",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(logdir / "model_best.pth.tar", weights_only=True)
    assert any(k.startswith("lhand_rf_net.upose_upd_net") for k in state["gen_state_dict"])
