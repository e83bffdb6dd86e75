"""lib.api: joints in any form -> smplx-convention parameters that plain smplx turns back into the same joints."""

import json

import numpy as np
import pytest
import smplx
import torch
from smplx.vertex_joint_selector import VertexJointSelector

from lib.api import load_solver
from lib.core.config import REPO_ROOT
from lib.data.synthetic import sample_smpl_poses, sample_smplx_poses
from lib.data.user_joints import JOINT_ORDERS, read_joints
from lib.kinematics.tree import SMPLX_TREE

OPEN = REPO_ROOT / "data" / "open"
SMPL_FILE = OPEN / "smpl" / "OPEN_SMPL_NEUTRAL.npz"
SMPLX_FILE = OPEN / "smplx" / "OPEN_SMPLX_NEUTRAL.npz"


def vertex_ids(path):
    with np.load(path, allow_pickle=False) as d:
        return {k[4:]: int(d[k]) for k in d.files if k.startswith("vid_")}


@pytest.fixture(scope="module")
def smpl_solver():
    return load_solver("smpl")


@pytest.fixture(scope="module")
def plain_smpl():
    d = np.load(SMPL_FILE, allow_pickle=False)
    return smplx.SMPL(model_path="", data_struct=smplx.utils.Struct(**d), vertex_ids=vertex_ids(SMPL_FILE))


@pytest.fixture(scope="module")
def smpl_truth(plain_smpl):
    """Noise-free SMPL skeletons from plain smplx, with a translation: (joints (B, 24, 3) float64 numpy, params)."""
    sample = sample_smpl_poses(12, seed=21)
    pose = torch.as_tensor(sample.pose, dtype=torch.float32)
    params = {
        "global_orient": pose[:, 0],
        "body_pose": pose[:, 1:].reshape(12, 69),
        "betas": torch.as_tensor(sample.betas[:, :10], dtype=torch.float32),
        "transl": torch.randn(12, 3, generator=torch.Generator().manual_seed(0)) + torch.tensor([0, 0, 3.0]),
    }
    with torch.no_grad():
        joints = plain_smpl(**params).joints[:, :24]
    return joints.numpy().astype(np.float64), params


def test_smpl_round_trip_through_plain_smplx(smpl_solver, plain_smpl, smpl_truth):
    joints, _ = smpl_truth
    fit = smpl_solver.fit(joints)
    assert set(fit.params) == {"global_orient", "body_pose", "betas", "transl"}
    assert fit.body_pose.shape == (12, 69) and fit.global_orient.shape == (12, 3) and fit.transl.shape == (12, 3)
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float64 for v in (fit.body_pose, fit.betas, fit.transl))
    with torch.no_grad():
        again = plain_smpl(**fit.to_torch()).joints[:, :24].numpy()
    error = np.linalg.norm(again - joints, axis=-1)
    assert error.max() < 1e-3  # metres: < 1 mm, translation included
    assert fit.mpjpe_mm().max() < 1.0
    vertices = fit.vertices()
    with torch.no_grad():
        plain_vertices = plain_smpl(**fit.to_torch()).vertices.numpy()
    assert vertices.shape == plain_vertices.shape and np.abs(vertices - plain_vertices).max() < 1e-4
    assert fit.faces.shape[1] == 3


def test_smplx_round_trip_through_plain_smplx():
    sample = sample_smplx_poses(6, seed=22)
    pose = torch.as_tensor(sample.pose, dtype=torch.float32)
    b = len(pose)
    plain = smplx.SMPLX(
        model_path=str(SMPLX_FILE), use_pca=False, flat_hand_mean=True, num_betas=10, num_expression_coeffs=10
    )
    truth = {
        "global_orient": pose[:, 0],
        "body_pose": pose[:, 1:22].reshape(b, 63),
        "jaw_pose": pose[:, 22],
        "leye_pose": pose[:, 23],
        "reye_pose": pose[:, 24],
        "left_hand_pose": pose[:, 25:40].reshape(b, 45),
        "right_hand_pose": pose[:, 40:55].reshape(b, 45),
        "expression": torch.zeros(b, 10),
        "betas": torch.as_tensor(sample.betas[:, :10], dtype=torch.float32),
        "transl": torch.tensor([[0.5, 1.0, -2.0]]).expand(b, 3),
    }
    with torch.no_grad():
        plain_joints = plain(**truth).joints  # joints 0-54 come from the file's regressor: plain smplx as it is
        # smplx's own fingertip vertex ids belong to the licensed mesh; the open file carries its own (vid_ keys)
        plain.vertex_joint_selector = VertexJointSelector(vertex_ids=vertex_ids(SMPLX_FILE))
        joints = plain(**truth).joints
    assert torch.equal(plain_joints[:, :55], joints[:, :55])
    fit = load_solver("smplx").fit(joints.double())  # torch float64, smplx's 127-joint layout
    assert fit.body_pose.shape == (b, 63) and fit.left_hand_pose.shape == (b, 45) and fit.jaw_pose.shape == (b, 3)
    assert torch.is_tensor(fit.body_pose) and fit.body_pose.dtype == torch.float64
    with torch.no_grad():
        again = plain(**fit.to_torch()).joints
    skeleton = list(SMPLX_TREE.skeleton)
    assert (again[:, skeleton] - joints[:, skeleton]).norm(dim=-1).max() < 1e-3


def test_input_forms_give_the_same_fit(smpl_solver, smpl_truth):
    joints, _ = smpl_truth
    reference = smpl_solver.fit(joints[:3])
    single = smpl_solver.fit(torch.as_tensor(joints[0], dtype=torch.float32))  # (J, 3) torch float32
    assert single.body_pose.shape == (1, 69) and single.body_pose.dtype == torch.float32
    assert np.abs(single.body_pose.numpy() - reference.body_pose[:1]).max() < 1e-4
    millimetres = smpl_solver.fit(joints[:3] * 1000.0, units="mm")
    assert np.abs(millimetres.transl - reference.transl).max() < 1e-5


def test_outputs_are_made_in_chunks_with_the_same_values(smpl_solver, smpl_truth, monkeypatch):
    import lib.api

    joints, _ = smpl_truth
    whole = smpl_solver.fit(joints)
    monkeypatch.setattr(lib.api, "OUTPUT_CHUNK", 5)  # 12 frames: chunks of 5, 5 and 2
    chunked = smpl_solver.fit(joints)
    for name in whole.params:
        assert np.array_equal(getattr(chunked, name), getattr(whole, name)), name
    assert np.allclose(chunked.joints, whole.joints, atol=1e-6)  # batched products of other sizes: rounding


def test_units_are_detected(smpl_solver, smpl_truth):
    joints, _ = smpl_truth
    with pytest.raises(ValueError, match=r"look like mm.*units='mm'"):
        smpl_solver.fit(joints * 1000.0)
    with pytest.raises(ValueError, match=r"look like cm.*units='cm'"):
        smpl_solver.fit(joints * 100.0)


def test_a_json_joint_order_maps_other_skeletons(smpl_solver, smpl_truth, tmp_path):
    """A 29-joint skeleton (HybrIK-like: SMPL's 24 shuffled, plus 5 extra joints) through a list of names."""
    joints, _ = smpl_truth
    names = list(JOINT_ORDERS["smpl24"])
    permutation = np.random.default_rng(0).permutation(24)
    extra = ["head_top", "left_big_toe_tip", "right_big_toe_tip", "left_middle_tip", "right_middle_tip"]
    columns = [names[k] for k in permutation] + extra
    other = np.concatenate([joints[:, permutation], np.zeros((len(joints), 5, 3))], axis=1)
    order_file = tmp_path / "hybrik29.json"
    order_file.write_text(json.dumps(columns))
    fit = smpl_solver.fit(other, joint_order=str(order_file))
    assert np.abs(fit.body_pose - smpl_solver.fit(joints).body_pose).max() < 1e-6
    order_file.write_text(json.dumps({name: k for k, name in enumerate(columns[:22])}))
    with pytest.raises(ValueError, match="lacks 2 joint"):
        smpl_solver.fit(other, joint_order=str(order_file))


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((4, 24, 2)), r"shape \(J, 3\) or \(frames, J, 3\)"),
        (np.zeros((4, 20, 3)), "20 joints per frame matches no built-in joint order"),
        (np.full((2, 24, 3), np.nan), r"2 frame\(s\) contain NaN"),
    ],
)
def test_bad_input_gets_one_clear_error(smpl_solver, bad, message):
    with pytest.raises(ValueError, match=message):
        smpl_solver.fit(bad)


def test_smplx_without_fingertips_is_refused():
    solver = load_solver("smplx", checkpoint=None)
    with pytest.raises(ValueError, match="lacks 10 joint.*left_thumb.*smplx65"):
        solver.fit(np.zeros((1, 55, 3)))


def test_joint_files(tmp_path, smpl_truth):
    joints = smpl_truth[0][:3]
    np.savez(tmp_path / "one.npz", joints=joints)
    np.savez(tmp_path / "two.npz", joints=joints, other=joints)
    (tmp_path / "j.json").write_text(json.dumps(joints.tolist()))
    (tmp_path / "j.csv").write_text(
        "header\n" + "\n".join(",".join(map(str, row.tolist())) for row in joints.reshape(3, -1))
    )
    for name in ("one.npz", "j.json", "j.csv"):
        assert np.allclose(read_joints(tmp_path / name), joints)
    assert np.allclose(read_joints(tmp_path / "two.npz", "other"), joints)
    with pytest.raises(ValueError, match="holds 2 arrays"):
        read_joints(tmp_path / "two.npz")
    with pytest.raises(FileNotFoundError, match="not found"):
        read_joints(tmp_path / "missing.npy")
