"""The committed open SMPL-format model (data/open/smpl/OPEN_SMPL_NEUTRAL.npz): format, loading by plain smplx,
T-pose geometry, shape space, regressor / weights, landmarks, joints inside the body. None of these needs `anny`;
the last test regenerates a small version with tools/make_open_body_model.py and is skipped without `anny`."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import smplx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from make_open_body_model import inside_mesh  # noqa: E402  (pure numpy; anny is imported only when generating)

MODEL = ROOT / "data/open/smpl/OPEN_SMPL_NEUTRAL.npz"
KID = ROOT / "data/open/smpl/open_smpl_kid_template.npy"
SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
L_SHOULDER, L_ELBOW, L_WRIST, L_HAND = 16, 18, 20, 22


@pytest.fixture(scope="module")
def data():
    with np.load(MODEL, allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


def make_smpl(path=MODEL):
    d = np.load(path, allow_pickle=False)  # the exact call the README / issue give
    return smplx.SMPL(
        model_path="",
        data_struct=smplx.utils.Struct(**d),
        vertex_ids={k[4:]: int(d[k]) for k in d if k.startswith("vid_")},
    )


@pytest.fixture(scope="module")
def smpl():
    return make_smpl()


def height(v):
    return float(v[..., 1].max() - v[..., 1].min())


def shaped(data, betas):
    K = len(betas)
    return data["v_template"] + data["shapedirs"][:, :, :K] @ np.asarray(betas, dtype=np.float64)


def test_format(data):
    V = len(data["v_template"])
    K = data["shapedirs"].shape[-1]
    assert data["v_template"].shape == (V, 3) and K >= 10
    assert data["shapedirs"].shape == (V, 3, K)
    assert data["posedirs"].shape == (V, 3, 207) and not data["posedirs"].any()
    assert data["J_regressor"].shape == (24, V) and data["weights"].shape == (V, 24)
    assert data["f"].ndim == 2 and data["f"].shape[1] == 3 and data["f"].min() == 0 and data["f"].max() == V - 1
    kt = data["kintree_table"]
    assert kt.shape == (2, 24) and kt[0, 0] == 4294967295
    assert kt[0, 1:].tolist() == SMPL_PARENTS[1:] and kt[1].tolist() == list(range(24))
    for k, a in data.items():
        assert a.dtype.kind in "fiu", f"{k} is not a plain numeric array ({a.dtype})"
        assert np.isfinite(a).all() if a.dtype.kind == "f" else True
    vids = {k[4:]: int(v) for k, v in data.items() if k.startswith("vid_")}
    assert set(vids) == set(smplx.vertex_ids.vertex_ids["smplh"])
    assert all(0 <= i < V for i in vids.values()) and len(set(vids.values())) == 21


def test_smplx_forward_random(smpl):
    gen = torch.Generator().manual_seed(0)
    B = 8
    out = smpl(
        betas=torch.randn(B, smpl.num_betas, generator=gen),
        body_pose=0.6 * torch.randn(B, 69, generator=gen),
        global_orient=0.6 * torch.randn(B, 3, generator=gen),
        transl=torch.randn(B, 3, generator=gen),
    )
    assert out.vertices.shape == (B, smpl.v_template.shape[0], 3)
    assert out.joints.shape == (B, 24 + 21, 3)
    assert torch.isfinite(out.vertices).all() and torch.isfinite(out.joints).all()
    # zero pose, zero betas: the template itself, joints = J_regressor @ template
    out0 = smpl(betas=torch.zeros(1, smpl.num_betas), body_pose=torch.zeros(1, 69), global_orient=torch.zeros(1, 3))
    assert torch.allclose(out0.vertices[0], smpl.v_template, atol=1e-6)
    assert torch.allclose(out0.joints[0, :24], smpl.J_regressor @ smpl.v_template, atol=1e-6)


def test_smplx_matches_plain_lbs(data, smpl):
    """smplx's output equals linear blend skinning written out here (shape blend, regressed joints, forward
    kinematics along kintree_table, zero pose blend shapes)."""
    gen = np.random.default_rng(1)
    betas = gen.normal(size=10)
    pose = 0.5 * gen.normal(size=(24, 3))
    out = smpl(
        betas=torch.tensor(betas[None], dtype=torch.float32),
        body_pose=torch.tensor(pose[None, 1:].reshape(1, 69), dtype=torch.float32),
        global_orient=torch.tensor(pose[None, 0], dtype=torch.float32),
    )

    def rodrigues(r):
        a = np.linalg.norm(r)
        k = r / a
        K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K

    v = shaped(data, betas)
    J = data["J_regressor"] @ v
    G = np.zeros((24, 4, 4))
    for j in range(24):
        local = np.eye(4)
        local[:3, :3] = rodrigues(pose[j])
        p = SMPL_PARENTS[j]
        local[:3, 3] = J[j] - (J[p] if p >= 0 else 0)
        G[j] = local if p < 0 else G[p] @ local
    joints = G[:, :3, 3].copy()
    G[:, :3, 3] -= np.einsum("jab,jb->ja", G[:, :3, :3], J)
    T = np.einsum("vj,jab->vab", data["weights"], G)
    verts = np.einsum("vab,vb->va", T[:, :3, :3], v) + T[:, :3, 3]
    assert np.abs(out.vertices[0].detach().numpy() - verts).max() < 1e-4
    assert np.abs(out.joints[0, :24].detach().numpy() - joints).max() < 1e-4


def test_t_pose_geometry(data):
    J = data["J_regressor"] @ data["v_template"]
    for s in (1, -1):  # left (+x), then right (-x): SMPL's right joint is left + 1
        o = 0 if s == 1 else 1
        sh, el, wr, ha = (J[i + o] for i in (L_SHOULDER, L_ELBOW, L_WRIST, L_HAND))
        assert abs(wr[1] - sh[1]) < 0.03 and abs(el[1] - sh[1]) < 0.03  # wrists at shoulder height
        for a, b in ((sh, el), (el, wr), (sh, wr)):
            d = (b - a) / np.linalg.norm(b - a)
            assert d[0] * s > np.cos(np.radians(5))  # arms along +-x
        assert s * ha[0] > s * wr[0] + 0.05
    for hip, knee, ankle in ((1, 4, 7), (2, 5, 8)):  # legs straight down
        d = (J[ankle] - J[hip]) / np.linalg.norm(J[ankle] - J[hip])
        assert d[1] < -np.cos(np.radians(10))
        assert J[hip][1] > J[knee][1] > J[ankle][1]
    assert J[0, 0] == pytest.approx(0, abs=1e-3) and J[15, 1] > J[12, 1] > J[9, 1] > J[0, 1]
    v = data["v_template"]
    assert v[data["vid_nose"], 2] > J[15, 2] + 0.05  # facing +z
    assert v[data["vid_LBigToe"], 2] > v[data["vid_LHeel"], 2] + 0.15
    assert v[data["vid_leye"], 0] > 0 > v[data["vid_reye"], 0]  # +x is the body's left
    assert np.abs(v.mean(axis=0)).max() < 1e-6  # centred on its vertex mean, like SMPL


def test_shape_sanity(data):
    h0 = height(data["v_template"])
    assert 1.6 <= h0 <= 1.85
    up, down = height(shaped(data, [2.0])), height(shaped(data, [-2.0]))
    assert up - h0 > 0.05 and h0 - down > 0.05  # beta_1: taller with +beta
    var = (data["shapedirs"] ** 2).sum(axis=(0, 1))
    assert np.all(np.diff(var) <= 1e-9)  # components by decreasing variance
    assert var[9] > 1e-3 * var[0]  # ten meaningful components


def test_regressor_and_weights(data):
    Jr, W = data["J_regressor"], data["weights"]
    assert Jr.min() >= 0 and np.allclose(Jr.sum(axis=1), 1, atol=1e-9)
    assert ((Jr > 0).sum(axis=1) < 600).all()  # sparse rows
    assert W.min() >= 0 and np.allclose(W.sum(axis=1), 1, atol=1e-9)
    assert (W.max(axis=0) > 0.4).all()  # every joint drives some vertices (collars: at most 0.48)


def test_fingertips_at_hand_ends(data):
    v = data["v_template"]
    J = data["J_regressor"] @ v
    for s, side in ((1, "l"), (-1, "r")):
        o = 0 if s == 1 else 1
        hand, wrist = J[L_HAND + o], J[L_WRIST + o]
        tips = {n: v[data[f"vid_{side}{n}"]] for n in ("thumb", "index", "middle", "ring", "pinky")}
        assert s * tips["middle"][0] > (s * v[:, 0]).max() - 0.01  # the middle tip ends the arm span
        for n in ("index", "middle", "ring", "pinky"):
            assert s * (tips[n][0] - hand[0]) > 0.03, n  # beyond the knuckles
        assert s * (tips["thumb"][0] - wrist[0]) > 0.05 and tips["thumb"][2] > hand[2]  # thumb forward (palm down)
        assert tips["index"][2] > tips["middle"][2] > tips["ring"][2] > tips["pinky"][2]


def test_joints_inside_body_random_betas(data):
    gen = np.random.default_rng(2)
    K = data["shapedirs"].shape[-1]
    betas = np.clip(gen.normal(size=(12, K)), -2, 2)
    betas[:4, :2] = [[2, 2], [-2, -2], [2, -2], [-2, 2]]  # the corners of the first two
    verts = np.stack([shaped(data, b) for b in betas])
    joints = np.einsum("jv,bvc->bjc", data["J_regressor"], verts)
    lo, hi = verts.min(axis=1, keepdims=True), verts.max(axis=1, keepdims=True)
    assert ((joints > lo) & (joints < hi)).all()
    assert inside_mesh(verts, data["f"], joints).all()
    outside = joints + np.array([0.0, 0.0, 0.5])  # sanity of the test itself
    assert not inside_mesh(verts[:2], data["f"], outside[:2]).any()


def test_kid_template(data):
    kid = np.load(KID, allow_pickle=False)
    assert kid.shape == data["v_template"].shape and np.isfinite(kid).all()
    assert 1.0 < height(kid) < height(data["v_template"]) - 0.2
    kid_smpl = smplx.SMPL(
        model_path="",
        data_struct=smplx.utils.Struct(**np.load(MODEL)),
        age="kid",
        kid_template_path=str(KID),
        vertex_ids={k[4:]: int(data[k]) for k in data if k.startswith("vid_")},
    )
    assert kid_smpl.num_betas == 11
    b = torch.zeros(1, 11)
    b[0, 10] = 1.0
    out = kid_smpl(betas=b, body_pose=torch.zeros(1, 69), global_orient=torch.zeros(1, 3))
    assert height(out.vertices[0].detach().numpy()) == pytest.approx(height(kid), abs=1e-3)


def test_regenerate_small(tmp_path, data):
    """Regenerates a small model (64 bodies) with the generator. Needs `anny` (requirements-tools.txt); the first
    run on a machine also builds anny's cache (~100 s, in $ANNY_CACHE_DIR or ~/.cache/anny)."""
    pytest.importorskip("anny")
    env = dict(os.environ)
    run = subprocess.run(
        [sys.executable, str(ROOT / "tools/make_open_body_model.py"), "--small", "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "0 joints outside the mesh" in run.stdout
    small = dict(np.load(tmp_path / "OPEN_SMPL_NEUTRAL.npz", allow_pickle=False))
    assert set(small) == set(data)
    np.testing.assert_array_equal(small["f"], data["f"])
    np.testing.assert_allclose(small["weights"], data["weights"], atol=1e-12)  # from anny's rig, not the sample
    assert np.allclose(small["J_regressor"].sum(axis=1), 1) and small["J_regressor"].min() >= 0
    J = small["J_regressor"] @ small["v_template"]
    assert abs(J[L_WRIST, 1] - J[L_SHOULDER, 1]) < 0.03
    assert 1.6 <= height(small["v_template"]) <= 1.85
    smpl = make_smpl(tmp_path / "OPEN_SMPL_NEUTRAL.npz")
    out = smpl(betas=torch.ones(1, smpl.num_betas), body_pose=0.3 * torch.ones(1, 69))
    assert torch.isfinite(out.vertices).all()
    assert (tmp_path / "open_smpl_kid_template.npy").exists()
