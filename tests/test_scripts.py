"""The entry scripts end to end on tiny databases written in the official format (subprocesses, CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import amass_options, write_amass_dbs

from lib.core.config import REPO_ROOT
from lib.kinematics.tree import SMPL_TREE
from lib.models.checkpoint import save_checkpoint
from lib.models.pan import PartAwareNetwork

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def run_script(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def tiny_dbs(tmp_path_factory):
    """64-sample test and 96-sample train dbs in the official SMPL layout, named as AMASS."""
    return write_amass_dbs(tmp_path_factory.mktemp("db"), train=(96, 12), test=(64, 11))


@pytest.fixture(scope="module")
def untrained_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model_best.pth.tar"
    save_checkpoint(path, {"epoch": 0, "gen_state_dict": PartAwareNetwork(SMPL_TREE).state_dict()})
    return path


def test_eval_smpl_end_to_end(tiny_dbs, tmp_path, untrained_checkpoint):
    result = run_script(
        "eval_smpl.py",
        "--cfg",
        "configs/smpl/open_eval.yaml",
        "TRAIN.DATASET_EVAL",
        "AMASS",
        "DATA.DB_DIR",
        str(tiny_dbs),
        "OUTPUT_DIR",
        str(tmp_path),
        "TRAIN.BATCH_SIZE",
        "32",
        "MODEL.PRETRAINED",
        str(untrained_checkpoint),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for row in ("Methods", "AnalyIK", "MixIK", "Oracle"):
        assert row in result.stdout
    record = json.loads((tmp_path / "eval_AMASS.json").read_text())
    assert record["dataset"] == "AMASS" and record["body_model"] == "smpl" and record["n_samples"] == 64
    assert record["mpbe_mm"] < 1.0 and record["analyik_mpjpe_mm"] < 1.0
    assert record["oracle_mpve_mm"] < record["analyik_mpve_mm"]
    assert record["mixik_mpve_mm"] is not None and record["mixik_mpjpe_mm"] < 1.0
    merged = (tmp_path / "eval_AMASS_config.yaml").read_text()  # the merged config beside the JSON
    assert f"PRETRAINED: {untrained_checkpoint}" in merged and "DATASET_EVAL: AMASS" in merged


def test_eval_without_checkpoint_says_it_needs_one(tiny_dbs, tmp_path):
    result = run_script(
        "eval_smpl.py",
        "--cfg",
        "configs/smpl/open_eval.yaml",
        "TRAIN.DATASET_EVAL",
        "AMASS",
        "DATA.DB_DIR",
        str(tiny_dbs),
        "OUTPUT_DIR",
        str(tmp_path),
        "MODEL.PRETRAINED",
        "",
        "EVAL.MAX_SAMPLES",
        "16",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "needs a PAN checkpoint" in result.stdout
    record = json.loads((tmp_path / "eval_AMASS.json").read_text())
    assert record["mixik_mpve_mm"] is None and record["n_samples"] == 16


@pytest.mark.parametrize(
    "override, message",
    [
        (("DATA.DB_DIR", "/nonexistent/db"), "DATA.DB_DIR"),
        (("DATA.BODY_MODEL", "/nonexistent/SMPL_NEUTRAL.pkl"), "DATA.BODY_MODEL"),
        (("MODEL.PRETRAINED", "/nonexistent/model_best.pth.tar"), "MODEL.PRETRAINED"),
        (("MODEL.MLP.EMBED_DIM", "128"), "EMBED_DIM"),
    ],
)
def test_eval_clear_errors(tiny_dbs, tmp_path, override, message):
    args = [
        "TRAIN.DATASET_EVAL",
        "AMASS",
        "DATA.DB_DIR",
        str(tiny_dbs),
        "OUTPUT_DIR",
        str(tmp_path),
        "MODEL.PRETRAINED",
        "",
        *override,
    ]
    result = run_script("eval_smpl.py", "--cfg", "configs/smpl/open_eval.yaml", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def _train_args(db_dir, out, *extra):
    return [
        "--cfg",
        "configs/smpl/open_train.yaml",
        *amass_options(db_dir),
        "OUTPUT_DIR",
        str(out),
        "TRAIN.BATCH_SIZE",
        "16",
        "LOSS.VERT_W",
        "1.0",
        "TRAIN.VAL_MAX_SAMPLES",
        "32",
        *extra,
    ]


def test_train_smpl_end_to_end_and_resume(tiny_dbs, tmp_path):
    logdir = tmp_path / "run"
    result = run_script(
        "train_smpl.py",
        *_train_args(
            tiny_dbs, tmp_path, "LOGDIR", str(logdir), "TRAIN.END_EPOCH", "1", "TRAIN.MAX_STEPS_PER_EPOCH", "2"
        ),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("config.yaml", "train.log", "checkpoint.pth.tar", "model_best.pth.tar", "best.txt"):
        assert (logdir / name).is_file(), name
    first = torch.load(logdir / "checkpoint.pth.tar", weights_only=True)
    assert first["epoch"] == 0 and "performace" in first and first["gen_optimizer"]["state"]

    config = (logdir / "config.yaml").read_text()

    # TRAIN.RESUME alone: the run's own config (db, batch size, steps) comes from the checkpoint
    result = run_script("train_smpl.py", "TRAIN.RESUME", str(logdir / "checkpoint.pth.tar"), "TRAIN.END_EPOCH", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    second = torch.load(logdir / "checkpoint.pth.tar", weights_only=True)
    assert second["epoch"] == 1
    log = (logdir / "train.log").read_text()
    assert "resumed from" in log and "resume override TRAIN.END_EPOCH: 1 -> 2" in log
    assert (logdir / "config.yaml").read_text() == config and (logdir / "config_resume_epoch1.yaml").is_file()
    # Adam's step count continued from the first run (2 + 2 steps), not from zero
    steps = {int(s["step"]) for s in second["gen_optimizer"]["state"].values()}
    assert steps == {4}


def test_train_under_torchrun_with_two_cpu_processes(tiny_dbs, tmp_path):
    logdir = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    result = subprocess.run(
        [
            *torchrun,
            "train_smpl.py",
            *_train_args(
                tiny_dbs, tmp_path, "LOGDIR", str(logdir), "TRAIN.END_EPOCH", "1", "TRAIN.MAX_STEPS_PER_EPOCH", "2"
            ),
        ],
        cwd=REPO_ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(logdir / "checkpoint.pth.tar", weights_only=True)
    assert state["epoch"] == 0
    assert not any(k.startswith("module.") for k in state["gen_state_dict"])
