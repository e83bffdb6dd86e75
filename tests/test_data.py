"""Synthetic pose sampler, official database layout, safe loading, Dataset windows, synthetic db generation."""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
import roma
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lib.data import synthetic as syn  # noqa: E402
from lib.data.db import (  # noqa: E402
    DatabaseFormatError,
    PoseDataset,
    UnsafeDatabaseError,
    db_path,
    load_db,
    safe_joblib_load,
    validate_db,
    window_starts,
    write_db,
)
from lib.data.synthetic import axes as syn_axes  # noqa: E402
from lib.data.synthetic import sampler as syn_sampler  # noqa: E402
from lib.data.synthetic import writer as syn_writer  # noqa: E402
from lib.data.synthetic.limits import SMPL_TABLE  # noqa: E402
from lib.kinematics.rotations import swing  # noqa: E402
from lib.kinematics.tree import SMPL_TREE, SMPLX_TREE  # noqa: E402
from lib.models.body_model import VERTEX_JOINT_NAMES, BodyModel  # noqa: E402
from lib.solver.twist import twist_angles  # noqa: E402

SMPL = {j.name: i for i, j in enumerate(syn.SMPL_LIMITS)}
HAND = {j.name: i for i, j in enumerate(syn.HAND_LIMITS)}

# ---------------------------------------------------------------------------------------------------------------
# A toy body in SMPL's rest frame (y up, facing +z, +x = left; T-pose, palms down), left-right symmetric.
# ---------------------------------------------------------------------------------------------------------------
_LEFT_BODY = {  # left / midline SMPL joints (rough SMPL neutral rest joints, metres)
    0: (0.0, 0.0, 0.0),
    1: (0.06, -0.09, 0.0),
    3: (0.0, 0.11, -0.02),
    4: (0.10, -0.47, 0.0),
    6: (0.0, 0.25, 0.0),
    7: (0.09, -0.87, -0.04),
    9: (0.0, 0.30, 0.02),
    10: (0.12, -0.93, 0.08),
    12: (0.0, 0.52, -0.01),
    13: (0.08, 0.42, 0.0),
    15: (0.0, 0.58, 0.04),
    16: (0.19, 0.45, -0.01),
    18: (0.45, 0.43, -0.03),
    20: (0.71, 0.44, -0.03),
    22: (0.79, 0.43, -0.04),
}
_MIRROR_OF = {2: 1, 5: 4, 8: 7, 11: 10, 14: 13, 17: 16, 19: 18, 21: 20, 23: 22}


def _body_rest() -> np.ndarray:
    rest = np.zeros((24, 3))
    for j, p in _LEFT_BODY.items():
        rest[j] = p
    for r, left in _MIRROR_OF.items():
        rest[r] = rest[left] * (-1.0, 1.0, 1.0)
    return rest


def _hand_rest(wrist: np.ndarray, side: float) -> tuple[np.ndarray, np.ndarray]:
    """15 finger joints (index, middle, pinky, ring, thumb) and 5 tips (thumb, index, middle, ring, pinky)."""
    joints, tips = [], {}
    for name, dz in (("index", 0.03), ("middle", 0.01), ("pinky", -0.03), ("ring", -0.01)):
        base = wrist + np.array([0.08 * side, 0.0, dz])
        joints += [base + np.array([0.035 * k * side, 0.0, 0.0]) for k in range(3)]
        tips[name] = base + np.array([0.095 * side, 0.0, 0.0])
    direction = np.array([side, 0.0, 1.0]) / np.sqrt(2.0)
    base = wrist + np.array([0.02 * side, -0.01, 0.03])
    joints += [base + 0.03 * k * direction for k in range(3)]
    tips["thumb"] = base + 0.085 * direction
    return np.array(joints), np.array([tips[n] for n in ("thumb", "index", "middle", "ring", "pinky")])


def toy_model(body: str) -> BodyModel:
    """A rigid toy body model: 4 vertices per joint (rest joint = their mean), one-hot skinning weights."""
    rng = np.random.default_rng(0)
    rest = _body_rest()
    tips = np.zeros((0, 3))
    parents = list(SMPL_TREE.parents)
    if body == "smplx":
        head = rest[15]
        lhand, ltips = _hand_rest(rest[20], 1.0)
        rhand, rtips = _hand_rest(rest[21], -1.0)
        rest = np.concatenate(
            [rest[:22], [head + (0, -0.05, 0.05), head + (0.03, 0.03, 0.08), head + (-0.03, 0.03, 0.08)], lhand, rhand]
        )
        tips = np.concatenate([ltips, rtips])
        parents = list(SMPLX_TREE.parents[:55])
    num_joints = len(rest)
    offsets = np.array([[0.01, 0, 0], [-0.01, 0, 0], [0, 0.01, 0.01], [0, -0.01, -0.01]])
    verts = (rest[:, None] + offsets).reshape(-1, 3)
    owner = np.repeat(np.arange(num_joints), 4)
    if len(tips):  # fingertip vertices, skinned to their distal joints
        distal = [39, 27, 30, 36, 33, 54, 42, 45, 51, 48]
        verts = np.concatenate([verts, tips])
        owner = np.concatenate([owner, distal])
    num_verts = len(verts)
    regressor = np.zeros((num_joints, num_verts))
    for j in range(num_joints):
        regressor[j, 4 * j : 4 * j + 4] = 0.25
    shape = np.repeat(rng.normal(size=(num_joints, 3, 10)) * 0.003, 4, axis=0)
    if len(tips):
        shape = np.concatenate([shape, shape[4 * owner[-len(tips) :]]])
    data = {
        "v_template": verts,
        "shapedirs": shape,
        "posedirs": np.zeros((num_verts, 3, 9 * (num_joints - 1))),
        "J_regressor": regressor,
        "weights": np.eye(num_joints)[owner],
        "kintree_table": np.array([[-1] + parents[1:], list(range(num_joints))]),
        "f": np.array([[0, 1, 2]]),
    }
    if body == "smplx":
        for k, name in enumerate(VERTEX_JOINT_NAMES):
            data[f"vid_{name}"] = np.array(num_verts - 21 + k if k >= 11 else k)
    return BodyModel(data, model_type=body, dtype=torch.float64)


OPEN_MODELS = {
    "smpl": ROOT / "data/open/smpl/OPEN_SMPL_NEUTRAL.npz",
    "smplx": ROOT / "data/open/smplx/OPEN_SMPLX_NEUTRAL.npz",
}
_MODELS: dict = {}


def _model(body: str, kind: str) -> BodyModel:
    """The toy model, or the open model."""
    if (body, kind) not in _MODELS:
        if kind == "toy":
            _MODELS[body, kind] = toy_model(body)
        else:
            _MODELS[body, kind] = BodyModel.from_file(OPEN_MODELS[body], model_type=body, dtype=torch.float64)
    return _MODELS[body, kind]


@pytest.fixture(scope="module")
def smpl_model():
    return _model("smpl", "toy")


@pytest.fixture(scope="module")
def smplx_model():
    return _model("smplx", "toy")


@pytest.fixture(params=["toy", "open"])
def any_smpl(request):
    return _model("smpl", request.param)


@pytest.fixture(params=["toy", "open"])
def any_smplx(request):
    return _model("smplx", request.param)


def _posed_joints(model: BodyModel, pose: np.ndarray) -> np.ndarray:
    pose = torch.as_tensor(pose, dtype=torch.float64).reshape(-1, model.num_pose_joints, 3)
    betas = torch.zeros(len(pose), model.num_betas, dtype=torch.float64)
    return model(pose, betas).joints.numpy()


def _single_dof(table, row: int, dof: int, degrees: float, extra: tuple = ()) -> np.ndarray:
    """Axis-angle (J, 3) of one joint of a limit table with one anatomical angle set (plus extra (row, dof, deg))."""
    dofs = np.zeros((len(table.names), 3))
    dofs[row, dof] = degrees
    for r, d, v in extra:
        dofs[r, d] = v
    return syn.dofs_to_rotvec(dofs, table.axes, table.mirror)


# ---------------------------------------------------------------------------------------------------------------
# Sampler
# ---------------------------------------------------------------------------------------------------------------


def test_seeded_determinism():
    a, b = syn.sample_smpl_poses(600, 3), syn.sample_smpl_poses(600, 3)
    assert np.array_equal(a.pose, b.pose) and np.array_equal(a.betas, b.betas)
    assert np.array_equal(a.vid_name, b.vid_name)
    c = syn.sample_smpl_poses(600, 4)
    assert not np.allclose(a.pose, c.pose)
    x, y = syn.sample_smplx_poses(300, 3, kids=0.5), syn.sample_smplx_poses(300, 3, kids=0.5)
    assert np.array_equal(x.pose, y.pose) and np.array_equal(x.betas, y.betas)
    assert not np.allclose(syn.sample_smpl_poses(600, 3, salt=(0,)).pose, syn.sample_smpl_poses(600, 3, salt=(1,)).pose)


def test_shapes_and_sequences():
    s = syn.sample_smpl_poses(2000, 0)
    assert s.pose.shape == (2000, 24, 3) and s.betas.shape == (2000, 10) and s.vid_name.shape == (2000,)
    names, starts, counts = np.unique(s.vid_name, return_index=True, return_counts=True)
    order = np.argsort(starts)
    assert np.all(counts[order][:-1] >= 8) and np.all(counts <= 32)  # the last one may be truncated
    assert np.all(np.diff(starts[order]) == counts[order][:-1])  # contiguous
    for name in names[:20]:
        rows = s.vid_name == name
        assert np.all(s.betas[rows] == s.betas[rows][0])  # shape constant in a sequence
        assert np.array_equal(s.frame[rows], np.arange(rows.sum()))
    assert abs(s.betas[starts].mean()) < 0.15 and abs(s.betas[starts].std() - 1.0) < 0.1
    x = syn.sample_smplx_poses(500, 0, kids=0.3)
    assert x.pose.shape == (500, 55, 3) and x.betas.shape == (500, 11)
    assert np.all(x.pose[:, 22:25] == 0.0)  # jaw and eyes
    assert np.all((x.betas[:, 10] >= 0) & (x.betas[:, 10] <= 1)) and np.any(x.betas[:, 10] > 0)
    assert np.any(x.betas[:, 10] == 0)


def test_fast():
    import time

    start = time.time()
    syn.sample_smpl_poses(100_000, 0)
    assert time.time() - start < 20.0


def _within_limits(dofs: np.ndarray, ranges: np.ndarray):
    lo, hi = ranges[..., 0], ranges[..., 2]
    assert np.all(dofs >= lo - 1e-9) and np.all(dofs <= hi + 1e-9)
    lim = np.where(dofs[..., :2] >= 0, hi[..., :2], -lo[..., :2])
    norm = np.divide(dofs[..., :2], lim, out=np.zeros_like(dofs[..., :2]), where=lim > 0)
    assert np.all((norm**2).sum(-1) <= 1.0 + 1e-9)


def test_limit_rows_are_the_trees_body_slots():
    """The sampler indexes the SMPL limit table by the tree's body pose slots: its rows are SMPL's joints by name,
    and SMPL-X's body slots are the same joints (same parents) as SMPL's."""
    from lib.kinematics.tree import SMPL_JOINT_NAMES

    assert SMPL_TABLE.names == SMPL_JOINT_NAMES
    body = SMPLX_TREE.pose_slots("body_pose")
    assert [SMPLX_TREE.parents[j] for j in body] == [SMPL_TREE.parents[j] for j in body]


def test_angles_within_documented_limits():
    s = syn.sample_smplx_poses(5000, 1)
    body = s.dofs[:, 1:22]
    _within_limits(body, np.stack([lim.ranges() for lim in syn.SMPL_LIMITS[1:22]]))
    _within_limits(s.hand_dofs, np.stack([lim.ranges() for lim in syn.HAND_LIMITS]))
    # the samples use the ranges: each joint's main angle covers most of its range
    knee = s.dofs[:, SMPL["left_knee"], 0]
    assert knee.max() > 100 and knee.min() < 10
    # every axis-angle is a proper rotation vector (angle <= pi)
    assert np.all(np.linalg.norm(s.pose, axis=-1) <= np.pi + 1e-9)


def test_hand_coupling_and_opposition():
    s = syn.sample_smplx_poses(5000, 2)
    for finger in ("index", "middle", "pinky", "ring"):
        pip = s.hand_dofs[..., HAND[f"{finger}2"], 0]
        dip = s.hand_dofs[..., HAND[f"{finger}3"], 0]
        lo, hi = syn.DIP_RATIO
        assert np.all(dip >= lo * pip - syn.DIP_NOISE - 1e-9) and np.all(dip <= hi * pip + syn.DIP_NOISE + 1e-9)
        assert np.corrcoef(pip.ravel(), dip.ravel())[0, 1] > 0.9
    cmc = s.hand_dofs[..., HAND["thumb1"], :].reshape(-1, 3)
    assert np.corrcoef(cmc[:, 0], cmc[:, 2])[0, 1] > 0.5  # abduction with pronation
    assert cmc[:, 0].max() > 35.0 and cmc[:, 2].max() > 30.0  # reaches opposition
    hands = syn.sample_hand_poses(100, 0)
    assert hands.shape == (100, 2, 15, 3)


def _off_hinge_degrees(rotvec: np.ndarray, hinge: np.ndarray) -> np.ndarray:
    """How far a rotation moves its hinge axis (0 for a pure hinge rotation), degrees."""
    rot = roma.rotvec_to_rotmat(torch.as_tensor(rotvec)).numpy()
    moved = rot @ hinge
    return np.degrees(np.arccos(np.clip(moved @ hinge, -1.0, 1.0)))


def test_knee_and_elbow_are_hinges():
    """Knee and elbow SWING about a hinge; their twist about the bone (tibial rotation, forearm pronation) is a
    separate degree of freedom since format 2, so the hinge is checked on the swing part (twist removed)."""
    s = syn.sample_smpl_poses(5000, 5)
    for name, hinge, flex_sign, bone in (
        ("left_knee", (1, 0, 0), 1, (0, -1, 0)),
        ("right_knee", (1, 0, 0), 1, (0, -1, 0)),
        ("left_elbow", (0, 1, 0), -1, (1, 0, 0)),
        ("right_elbow", (0, 1, 0), 1, (-1, 0, 0)),
    ):
        rotmat = roma.rotvec_to_rotmat(torch.as_tensor(s.pose[:, SMPL[name]]))
        swung = swing(rotmat, torch.tensor(bone, dtype=rotmat.dtype).expand(len(rotmat), 3))
        rotvec = roma.rotmat_to_rotvec(swung).numpy()
        off = _off_hinge_degrees(rotvec, np.array(hinge, dtype=float))
        assert off.max() < 6.0 and off.mean() < 2.5, name
        flexion = flex_sign * rotvec @ np.array(hinge, dtype=float)
        assert flexion.min() > np.radians(-8) and flexion.max() > np.radians(100), name


def test_twists_follow_real_motion():
    """The real-motion issue's findings (docs/motion_data.md): forearm pronation lives in the ELBOW's twist, the
    wrist has no systematic twist, knees twist a little, hips and shoulders less than before (std 0.27 / 0.47 rad)."""
    s = syn.sample_smpl_poses(20000, 8)
    twist = {name: np.radians(s.dofs[:, SMPL[name], 2]) for name in SMPL}
    for side in ("left", "right"):
        assert twist[f"{side}_elbow"].std() > 0.15 and twist[f"{side}_elbow"].mean() > 0.0
        assert abs(twist[f"{side}_wrist"].mean()) < 0.05 and twist[f"{side}_wrist"].std() < 0.2
        assert 0.05 < twist[f"{side}_knee"].std() < 0.25
        assert twist[f"{side}_hip"].std() < 0.25 and twist[f"{side}_shoulder"].std() < 0.45


def test_smooth_within_sequences():
    s = syn.sample_smpl_poses(20000, 6)
    same = s.vid_name[1:] == s.vid_name[:-1]
    step = np.degrees(roma.rotvec_geodesic_distance(torch.as_tensor(s.pose[1:]), torch.as_tensor(s.pose[:-1])).numpy())
    within = step[same]
    assert within.max() < 35.0 and within.mean() < 2.5
    # far more than between unrelated frames
    shuffled = np.degrees(
        roma.rotvec_geodesic_distance(torch.as_tensor(s.pose[::7][1:]), torch.as_tensor(s.pose[::7][:-1])).numpy()
    )
    assert shuffled[:, 1:].mean() > 5 * within[:, 1:].mean()


# --- joint axes: directions of motion by forward kinematics on the toy body (left and right) ---------------------


def _move(model, table_row: int, dof: int, degrees: float, joint: int, extra: tuple = ()) -> np.ndarray:
    """Displacement of ``joint`` (toy SMPL body) when one anatomical angle of table row ``table_row`` is set."""
    pose = _single_dof(SMPL_TABLE, table_row, dof, degrees, extra)
    base = _single_dof(SMPL_TABLE, table_row, dof, 0.0, extra)
    return _posed_joints(model, pose)[0, joint] - _posed_joints(model, base)[0, joint]


@pytest.mark.parametrize("side", ["left", "right"])
def test_joint_axes_move_limbs_anatomically(any_smpl, side):
    smpl_model = any_smpl
    lat = 1.0 if side == "left" else -1.0  # +x is lateral for the left side
    j = {
        n: SMPL[f"{side}_{n}"] for n in ("hip", "knee", "ankle", "foot", "collar", "shoulder", "elbow", "wrist", "hand")
    }
    assert _move(smpl_model, j["knee"], 0, 60, j["ankle"])[2] < -0.1  # shin moves backwards
    assert _move(smpl_model, j["hip"], 0, 60, j["knee"])[2] > 0.2  # thigh forwards
    assert _move(smpl_model, j["hip"], 1, 30, j["knee"])[0] * lat > 0.1  # abduction: outwards
    # internal rotation of the hip with the knee flexed swings the foot outwards
    knee_bent = ((j["knee"], 0, 90.0),)
    assert _move(smpl_model, j["hip"], 2, 30, j["ankle"], knee_bent)[0] * lat > 0.1
    assert _move(smpl_model, j["ankle"], 0, 20, j["foot"])[1] > 0.01  # dorsiflexion: toes up
    assert _move(smpl_model, j["elbow"], 0, 90, j["wrist"])[2] > 0.2  # forearm forwards
    assert _move(smpl_model, j["shoulder"], 0, 45, j["elbow"])[1] > 0.1  # elevation: arm up
    assert _move(smpl_model, j["shoulder"], 1, 45, j["elbow"])[2] > 0.1  # horizontal flexion
    # internal rotation of the shoulder with the elbow flexed turns the forearm down
    elbow_bent = ((j["elbow"], 0, 90.0),)
    assert _move(smpl_model, j["shoulder"], 2, 45, j["wrist"], elbow_bent)[1] < -0.1
    assert _move(smpl_model, j["wrist"], 0, 45, j["hand"])[1] < -0.03  # flexion: palm side (down)
    assert _move(smpl_model, j["wrist"], 1, 20, j["hand"])[2] > 0.01  # radial deviation: thumb side
    assert _move(smpl_model, j["collar"], 0, 20, j["shoulder"])[1] > 0.02  # elevation
    assert _move(smpl_model, j["collar"], 1, 15, j["shoulder"])[2] > 0.02  # protraction: forwards


def test_spine_flexion_bends_forward(any_smpl):
    smpl_model = any_smpl
    for name in ("spine1", "spine2", "spine3", "neck"):
        assert _move(smpl_model, SMPL[name], 0, 20, 15)[2] > 0.01, name


def test_left_right_mirror_symmetry(any_smpl):
    """The same anatomical angles on both sides give mirror-image joints on a symmetric body."""
    smpl_model = any_smpl
    rng = np.random.default_rng(0)
    dofs = np.zeros((24, 3))
    for right, left in _MIRROR_OF.items():
        dofs[left] = dofs[right] = rng.uniform(-30, 30, 3)
    for j in (3, 6, 9, 12, 15):  # midline joints: only symmetric motions (flexion)
        dofs[j, 0] = rng.uniform(-10, 10)
    joints = _posed_joints(smpl_model, syn.dofs_to_rotvec(dofs, SMPL_TABLE.axes, SMPL_TABLE.mirror))[0]
    for right, left in _MIRROR_OF.items():
        np.testing.assert_allclose(joints[right], joints[left] * (-1.0, 1.0, 1.0), atol=1e-4)  # 0.1 mm


@pytest.mark.parametrize("hand", [0, 1])
@pytest.mark.parametrize("aligned", [False, True])
def test_finger_axes(any_smplx, hand, aligned):
    """Finger flexion curls towards the palm (-y), for both hands; opposition brings the thumb in front of the palm
    and towards the fingers (idealised axes, and axes aligned to the model's rest bones)."""
    smplx_model = any_smplx
    rest = smplx_model.rest_joints(torch.zeros(1, smplx_model.num_betas, dtype=torch.float64))[0].numpy()
    axes = syn_axes.axes_for("smplx", rest if aligned else None)

    def tip_move(row, dof, degrees, tip):
        dofs = np.zeros((2, 15, 3))
        dofs[hand, row, dof] = degrees
        pose = np.zeros((55, 3))
        pose[25:55] = syn_sampler.hand_rotvec(dofs, axes).reshape(30, 3)
        return _posed_joints(smplx_model, pose)[0, tip] - _posed_joints(smplx_model, np.zeros((55, 3)))[0, tip]

    tips = {"thumb": 66, "index": 67, "middle": 68, "ring": 69, "pinky": 70}
    tips = {k: v + 5 * hand for k, v in tips.items()}
    for finger in ("index", "middle", "ring", "pinky"):
        for k in (1, 2, 3):
            assert tip_move(HAND[f"{finger}{k}"], 0, 40, tips[finger])[1] < -0.005, (finger, k)
    assert tip_move(HAND["index1"], 1, 15, tips["index"])[2] > 0.005  # radial abduction: thumb side (+z)
    assert tip_move(HAND["thumb2"], 0, 40, tips["thumb"])[1] < -0.005  # thumb MCP flexion: towards palm
    assert tip_move(HAND["thumb3"], 0, 40, tips["thumb"])[1] < -0.005
    move = tip_move(HAND["thumb1"], 0, 40, tips["thumb"])  # palmar abduction
    assert move[1] < -0.02
    across = tip_move(HAND["thumb1"], 1, 25, tips["thumb"])  # flexion across the palm
    assert across[2] < -0.01


# ---------------------------------------------------------------------------------------------------------------
# Databases
# ---------------------------------------------------------------------------------------------------------------


def _smpl_db(n=100, seed=0):
    s = syn.sample_smpl_poses(n, seed)
    theta = s.pose.reshape(n, 72).astype(np.float32)
    return {
        "beta": s.betas.astype(np.float32),
        "theta": theta,
        "orig_theta": theta.copy(),
        "twist_angle": np.zeros((n, 23), np.float32),
        "vid_name": s.vid_name,
    }


def _smplx_db(n=60, seed=0):
    s = syn.sample_smplx_poses(n, seed)
    p = s.pose.astype(np.float32)
    return {
        "betas": s.betas.astype(np.float32),
        "global_orient": p[:, 0],
        "body_pose": p[:, 1:22].reshape(n, 63),
        "lhand_pose": p[:, 25:40].reshape(n, 45),
        "rhand_pose": p[:, 40:55].reshape(n, 45),
        "twist_angle": np.zeros((n, 54), np.float32),
        "vid_name": s.vid_name,
    }


def test_db_round_trip_and_dataset(tmp_path):
    db = _smpl_db(200)
    path = write_db(tmp_path / "amass_test_db.pt", db, "smpl")
    plain = joblib.load(path)  # the official reader sees the same layout
    assert set(plain) == {"beta", "theta", "orig_theta", "twist_angle", "vid_name"}
    back = load_db(path, "smpl")
    for key in db:
        np.testing.assert_array_equal(back[key], db[key])
    ds = PoseDataset(path, body="smpl")
    item = ds[3]
    assert len(ds) == 200 and item["pose"].shape == (24, 3) and item["betas"].shape == (10,)
    assert item["twist_angle"].shape == (23,) and all(v.dtype == torch.float32 for v in item.values())
    np.testing.assert_allclose(item["pose"].numpy().ravel(), db["theta"][3])

    x = _smplx_db(60)
    xpath = write_db(tmp_path / "motionx_test_db.pt", x, "smplx")
    xs = PoseDataset(xpath, body="smplx", num_betas=11)
    item = xs[5]
    assert item["pose"].shape == (55, 3) and item["twist_angle"].shape == (54,) and item["betas"].shape == (11,)
    np.testing.assert_allclose(item["pose"][1:22].numpy().ravel(), x["body_pose"][5])
    np.testing.assert_allclose(item["pose"][40:55].numpy().ravel(), x["rhand_pose"][5])
    assert torch.all(item["pose"][22:25] == 0)
    # (N, 1, 54) twist and (N, 21, 3) body pose are accepted as the same sizes
    x2 = dict(x, twist_angle=x["twist_angle"][:, None], body_pose=x["body_pose"].reshape(-1, 21, 3))
    assert validate_db(x2, "smplx")["twist_angle"].shape == (60, 54)


def test_sequence_windows_stay_in_one_video(tmp_path):
    db = _smpl_db(400, seed=1)
    for seqlen, overlap in ((4, 0.0), (8, 0.5), (16, 0.25)):
        ds = PoseDataset(db, body="smpl", seqlen=seqlen, overlap=overlap)
        item = ds[len(ds) // 2]
        assert item["pose"].shape == (seqlen, 24, 3) and item["betas"].shape == (seqlen, 10)
        starts = ds.starts.numpy()
        for s in starts:
            assert len(set(db["vid_name"][s : s + seqlen])) == 1
        stride = max(1, int(seqlen * (1 - overlap)))
        same_run = db["vid_name"][starts[1:]] == db["vid_name"][starts[:-1]]
        assert np.all(np.diff(starts)[same_run] == stride)
        batch = ds.batch([0, 1, 2])
        assert batch["pose"].shape == (3, seqlen, 24, 3)
    names = np.array(["a"] * 5 + ["b"] * 2 + ["c"] * 6)
    assert window_starts(names, 3).tolist() == [0, 7, 10]
    assert window_starts(names, 3, 0.7).tolist() == [0, 1, 2, 7, 8, 9, 10]
    assert window_starts(names, 1).tolist() == list(range(13))


def test_db_path_spellings_and_missing(tmp_path):
    write_db(tmp_path / "amss_test_db.pt", _smpl_db(10), "smpl")
    assert db_path(tmp_path, "AMASS", "test").name == "amss_test_db.pt"
    write_db(tmp_path / "amass_test_db.pt", _smpl_db(10), "smpl")
    assert db_path(tmp_path, "amass", "test").name == "amass_test_db.pt"
    with pytest.raises(FileNotFoundError) as err:
        db_path(tmp_path, "AGORA", "test")
    message = str(err.value)
    assert "agora_test_db.pt" in message and "DATA.DB_DIR" in message and "TRAIN.DATASET_EVAL" in message
    assert "project page" in message and "SYNTHETIC" in message
    with pytest.raises(ValueError):
        db_path(tmp_path, "NOPE", "test")
    alt = tmp_path / "smpxliks_db"
    write_db(alt / "agora_test_db.pt", _smplx_db(10), "smplx")
    assert db_path(tmp_path / "smplxiks_db", "AGORA", "test") == alt / "agora_test_db.pt"


def test_bad_databases_are_named(tmp_path):
    db = _smpl_db(20)
    missing = {k: v for k, v in db.items() if k != "twist_angle"}
    joblib.dump(missing, tmp_path / "m.pt")
    with pytest.raises(DatabaseFormatError, match=r"missing key\(s\) \['twist_angle'\]"):
        load_db(tmp_path / "m.pt", "smpl")
    nan = dict(db, theta=db["theta"].copy())
    nan["theta"][7, 3] = np.nan
    joblib.dump(nan, tmp_path / "n.pt")
    with pytest.raises(DatabaseFormatError, match=r"'theta'.*non-finite.*\[7\]"):
        load_db(tmp_path / "n.pt", "smpl")
    with pytest.raises(DatabaseFormatError, match=r"'beta' has shape \(20, 8\)"):
        validate_db(dict(db, beta=db["beta"][:, :8]), "smpl")
    with pytest.raises(DatabaseFormatError, match="disagree"):
        validate_db(dict(db, vid_name=db["vid_name"][:5]), "smpl")
    with pytest.raises(DatabaseFormatError, match="dict"):
        validate_db([1, 2], "smpl")
    with pytest.raises(DatabaseFormatError, match=r"missing key.*lhand_pose"):
        validate_db({k: v for k, v in _smplx_db(5).items() if k != "lhand_pose"}, "smplx")
    (tmp_path / "junk.pt").write_bytes(b"not a joblib file at all")
    with pytest.raises(ValueError, match="junk.pt"):
        load_db(tmp_path / "junk.pt", "smpl")
    with pytest.raises(FileNotFoundError):
        load_db(tmp_path / "absent.pt", "smpl")


class _Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_files_are_refused_without_running_code(tmp_path):
    db = _smpl_db(10)
    cases = {
        "plain_pickle.pt": lambda m, p: p.write_bytes(pickle.dumps(dict(db, evil=_Payload(m)))),
        "joblib_object.pt": lambda m, p: joblib.dump(dict(db, evil=_Payload(m)), p),
        "joblib_object_array.pt": lambda m, p: joblib.dump(
            dict(db, vid_name=np.array(["a", _Payload(m)] + ["b"] * 8, dtype=object)), p
        ),
        "joblib_compressed.pt": lambda m, p: joblib.dump(dict(db, evil=_Payload(m)), p, compress=3),
    }
    for name, write in cases.items():
        marker = tmp_path / f"{name}.marker"
        path = tmp_path / name
        write(marker, path)
        assert not marker.exists()
        with pytest.raises(UnsafeDatabaseError, match=r"system") as err:
            load_db(path, "smpl")
        assert name in str(err.value)
        assert not marker.exists(), f"{name}: code from the file ran"
    # the check is meaningful: the unrestricted reader does run it
    joblib.load(tmp_path / "joblib_object.pt")
    assert (tmp_path / "joblib_object.pt.marker").exists()


def test_safe_loader_reads_object_and_compressed_arrays(tmp_path):
    db = _smpl_db(30)
    db["vid_name"] = db["vid_name"].astype(object)
    joblib.dump(db, tmp_path / "o.pt", compress=3)
    back = load_db(tmp_path / "o.pt", "smpl")
    assert back["vid_name"].dtype.kind == "U"
    assert safe_joblib_load(tmp_path / "o.pt")["theta"].dtype == np.float32


# ---------------------------------------------------------------------------------------------------------------
# Synthetic db generation (twist angles from the project's twist function)
# ---------------------------------------------------------------------------------------------------------------


def test_make_synthetic_db_smpl(any_smpl):
    smpl_model = any_smpl
    db = syn.make_synthetic_db("smpl", 300, 5, smpl_model, split="test")
    checked = validate_db(db, "smpl")
    assert checked["theta"].dtype == np.float32 and checked["twist_angle"].shape == (300, 23)
    np.testing.assert_array_equal(db["theta"], db["orig_theta"])
    # leaves carry no twist
    for leaf in (10, 11, 15, 22, 23):
        assert np.all(db["twist_angle"][:, leaf - 1] == 0)
    # the stored twist is the twist the sampler put in: the hip's internal rotation (+ on the left, - on the right:
    # twist is measured about the rest bone, which mirroring does not flip)
    rest = smpl_model.rest_joints(torch.zeros(1, 10, dtype=torch.float64))[0].numpy()
    again = syn.sample_smpl_poses(300, 5, vid_prefix="synthetic_smpl_test_s5", salt=(1,), rest_joints=rest)
    assert np.array_equal(again.vid_name, db["vid_name"])
    mean_shape = np.degrees(syn.compute_twist_angles("smpl", again.pose, np.zeros((300, 10)), smpl_model))
    for joint, sign in (
        (1, 1),
        (2, -1),
        (3, 1),
        (4, 1),
        (5, -1),
        (12, 1),
        (16, 1),
        (17, -1),
        (18, 1),
        (20, 1),
        (21, -1),
    ):
        sampled = sign * again.dofs[:, joint, 2]
        np.testing.assert_allclose(mean_shape[:, joint - 1], sampled, atol=1e-6, err_msg=str(joint))
        if joint in (1, 2, 16, 17):  # other shapes tilt the bones a little (the toy's short bones a lot)
            stored = np.degrees(db["twist_angle"][:, joint - 1])
            assert np.corrcoef(stored, sampled)[0, 1] > 0.9, joint


def test_make_synthetic_db_smplx_and_twist_recomputed(any_smplx):
    smplx_model = any_smplx
    db = syn.make_synthetic_db("smplx", 120, 9, smplx_model, split="train")
    checked = validate_db(db, "smplx")
    pose = torch.as_tensor(
        np.concatenate(
            [
                db["global_orient"][:, None],
                db["body_pose"].reshape(-1, 21, 3),
                np.zeros((120, 3, 3), np.float32),
                db["lhand_pose"].reshape(-1, 15, 3),
                db["rhand_pose"].reshape(-1, 15, 3),
            ],
            1,
        ),
        dtype=torch.float64,
    )
    rest = smplx_model.rest_joints(torch.as_tensor(db["betas"], dtype=torch.float64))
    expect = twist_angles(SMPLX_TREE, rest, roma.rotvec_to_rotmat(pose)).numpy()
    np.testing.assert_allclose(checked["twist_angle"], expect, atol=1e-5)
    assert np.abs(db["twist_angle"][:, 24:54]).max() > 0.01  # finger twists are present
    # at the mean shape the finger twists are the sampled ones (right hand: opposite sign)
    rest0 = smplx_model.rest_joints(torch.zeros(1, smplx_model.num_betas, dtype=torch.float64))[0].numpy()
    again = syn.sample_smplx_poses(120, 9, vid_prefix="synthetic_smplx_train_s9", salt=(0,), rest_joints=rest0)
    np.testing.assert_allclose(again.pose, db_pose_of(db), atol=1e-6)
    mean_shape = np.degrees(syn.compute_twist_angles("smplx", again.pose, np.zeros((120, 10)), smplx_model))
    np.testing.assert_allclose(mean_shape[:, 24:39], again.hand_dofs[:, 0, :, 2], atol=1e-5)
    np.testing.assert_allclose(mean_shape[:, 39:54], -again.hand_dofs[:, 1, :, 2], atol=1e-5)


def db_pose_of(db):
    from lib.data.db import db_pose

    return db_pose(validate_db(db, "smplx"), "smplx")


def test_ensure_synthetic_db(tmp_path, smpl_model, capsys):
    path = syn.ensure_synthetic_db("smpl", "test", tmp_path, smpl_model, 150, progress=False)
    assert path == tmp_path / "synthetic_test_db.pt" and path.with_suffix(".json").is_file()
    stamp = path.stat().st_mtime_ns
    assert syn.ensure_synthetic_db("smpl", "test", tmp_path, smpl_model, 150, progress=False) == path
    assert path.stat().st_mtime_ns == stamp  # reused, not regenerated
    first = load_db(path, "smpl")
    other = syn.ensure_synthetic_db("smpl", "test", tmp_path / "again", smpl_model, 150, progress=False)
    second = load_db(other, "smpl")
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])  # deterministic
    train = load_db(syn.ensure_synthetic_db("smpl", "train", tmp_path, smpl_model, 150, progress=False), "smpl")
    assert not set(train["vid_name"]) & set(first["vid_name"])  # train / test never share videos
    assert not np.allclose(train["theta"][:50], first["theta"][:50])
    # a different size regenerates
    syn.ensure_synthetic_db("smpl", "test", tmp_path, smpl_model, 80, progress=False)
    assert len(load_db(path, "smpl")["theta"]) == 80
    # a user-supplied db (no sidecar) is used as it is
    path.with_suffix(".json").unlink()
    syn.ensure_synthetic_db("smpl", "test", tmp_path, smpl_model, 999, progress=False)
    assert len(load_db(path, "smpl")["theta"]) == 80


def test_make_synthetic_db_tool(tmp_path, smpl_model, monkeypatch):
    """The command line writes the official layout (the open model is replaced by the toy model here)."""
    sys.path.insert(0, str(ROOT / "tools"))
    import make_synthetic_db as tool

    monkeypatch.setattr(syn_writer, "_load_body_model", lambda body, model, kid: smpl_model)
    assert tool.main(["--body", "smpl", "--split", "test", "--n", "64", "--seed", "3", "--out", str(tmp_path)]) == 0
    db = load_db(tmp_path / "synthetic_test_db.pt", "smpl")
    assert db["theta"].shape == (64, 72)


def test_crafted_array_wrapper_is_refused(tmp_path):
    """A joblib array wrapper whose state carries anything but array metadata is refused."""
    from joblib.numpy_pickle import NumpyArrayWrapper

    wrapper = NumpyArrayWrapper(np.ndarray, (2,), "C", np.dtype("f8"))
    wrapper.read_array = dict  # an extra field in the pickled state
    (tmp_path / "w.pt").write_bytes(pickle.dumps({"theta": wrapper}, protocol=4))
    with pytest.raises(UnsafeDatabaseError, match="malformed"):
        safe_joblib_load(tmp_path / "w.pt")


def test_build_dataset_from_config(tmp_path):
    from lib.core.smpl.config import get_cfg
    from lib.engine.build import build_dataset

    cfg = get_cfg(opts=["DATA.DB_DIR", str(tmp_path), "DATA.SYNTHETIC_TEST_SIZE", 64, "DATASET.SEQLEN", 4])
    ds = build_dataset(cfg, "SYNTHETIC", "test", progress=False)
    assert (tmp_path / "synthetic_test_db.pt").is_file() and ds[0]["pose"].shape == (4, 24, 3)
    with pytest.raises(FileNotFoundError, match="DATA.DB_DIR"):
        build_dataset(cfg, "AGORA", "test")


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_pickles_of_arrays_load(tmp_path, protocol):
    db = _smpl_db(12)
    db["theta"] = np.asfortranarray(db["theta"])
    (tmp_path / "p.pt").write_bytes(pickle.dumps(db, protocol=protocol))
    back = load_db(tmp_path / "p.pt", "smpl")
    for key in db:
        np.testing.assert_array_equal(back[key], db[key])


def test_num_betas_pad_and_kid_warning():
    db = _smpl_db(20)
    padded = PoseDataset(db, body="smpl", num_betas=11)
    assert padded[0]["betas"].shape == (11,) and padded[0]["betas"][10] == 0
    kid = dict(db, beta=np.concatenate([db["beta"], np.full((20, 1), 0.5, np.float32)], 1))
    with pytest.warns(UserWarning, match="DATA.KID_TEMPLATE"):
        assert PoseDataset(kid, body="smpl", num_betas=10)[0]["betas"].shape == (10,)


def test_synthetic_test_seed_draws_another_test_db(tmp_path):
    """DATA.SYNTHETIC_TEST_SEED: its default is the project's test db; another seed writes another draw."""
    from lib.core.smpl.config import get_cfg
    from lib.data.synthetic import DEFAULT_SEEDS
    from lib.engine.build import resolve_db

    opts = ["DATA.SYNTHETIC_TEST_SIZE", 16]
    default = get_cfg(opts=opts + ["DATA.DB_DIR", str(tmp_path / "a")])
    assert default.DATA.SYNTHETIC_TEST_SEED == DEFAULT_SEEDS["test"]
    other = get_cfg(opts=opts + ["DATA.DB_DIR", str(tmp_path / "b"), "DATA.SYNTHETIC_TEST_SEED", 17])
    names_a = load_db(resolve_db(default, "SYNTHETIC", "test", progress=False), "smpl")["vid_name"]
    db_b = load_db(resolve_db(other, "SYNTHETIC", "test", progress=False), "smpl")
    assert all(str(n).startswith("synthetic_smpl_test_s2") for n in names_a)
    assert all(str(n).startswith("synthetic_smpl_test_s17") for n in db_b["vid_name"])
    assert json.loads((tmp_path / "b" / "synthetic_test_db.json").read_text())["seed"] == 17
    # the validation and train dbs keep their own seeds
    val = load_db(resolve_db(other, "SYNTHETIC", "val", progress=False), "smpl")["vid_name"]
    assert all(str(n).startswith("synthetic_smpl_val_s3") for n in val)
