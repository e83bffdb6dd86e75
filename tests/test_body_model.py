"""BodyModel against plain smplx on tiny random models in the SMPL and SMPL-X file formats (and the open models)."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import smplx
import torch
from smplx.lbs import batch_rodrigues, vertices2joints
from smplx.utils import Struct
from smplx.vertex_joint_selector import VertexJointSelector

from lib.models.body_model import VERTEX_JOINT_NAMES, BodyModel, BodyOutput, load_body_model_data

REPO = Path(__file__).resolve().parents[1]
OPEN_SMPL = REPO / "data/open/smpl/OPEN_SMPL_NEUTRAL.npz"
OPEN_SMPL_KID = REPO / "data/open/smpl/open_smpl_kid_template.npy"
OPEN_SMPLX = REPO / "data/open/smplx/OPEN_SMPLX_NEUTRAL.npz"

SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]


def _hand_parents(wrist: int, first: int) -> list[int]:
    """Five 3-joint fingers starting at `first`, each hanging from `wrist`."""
    return [parent for base in range(first, first + 15, 3) for parent in (wrist, base, base + 1)]


SMPLX_PARENTS = SMPL_PARENTS[:22] + [15, 15, 15] + _hand_parents(20, 25) + _hand_parents(21, 40)
NUM_VERTS = 300
BATCH = 5
TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}


# ---------------------------------------------------------------------------------------------------------------
# Tiny random models. Values are float32-representable: smplx rounds its buffers through float32 even for float64.
# ---------------------------------------------------------------------------------------------------------------


def _f32(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, dtype=np.float32).astype(np.float64)


def _row_normalised(rng: np.random.Generator, rows: int, cols: int, per_row: int) -> np.ndarray:
    """(rows, cols) non-negative, `per_row` non-zeros a row, rows summing to 1 (up to float32 rounding)."""
    matrix = np.zeros((rows, cols))
    for row in range(rows):
        matrix[row, rng.choice(cols, per_row, replace=False)] = rng.uniform(0.1, 1.0, per_row)
    return _f32(matrix / matrix.sum(axis=1, keepdims=True))


def tiny_model(seed: int, parents: list[int], shape_columns: int = 10) -> dict[str, np.ndarray]:
    """SMPL-format arrays for a random mesh of NUM_VERTS vertices and len(parents) joints."""
    rng = np.random.default_rng(seed)
    num_joints = len(parents)
    shapedirs = np.zeros((NUM_VERTS, 3, shape_columns))
    shapedirs[:, :, :10] = rng.normal(size=(NUM_VERTS, 3, 10)) * 0.03
    data = {
        "v_template": _f32(rng.normal(size=(NUM_VERTS, 3)) * 0.3),
        "shapedirs": _f32(shapedirs),
        "posedirs": _f32(rng.normal(size=(NUM_VERTS, 3, 9 * (num_joints - 1))) * 0.01),
        "J_regressor": _row_normalised(rng, num_joints, NUM_VERTS, per_row=6),
        "weights": _row_normalised(rng, NUM_VERTS, num_joints, per_row=3),
        "kintree_table": np.array([[2**32 - 1] + parents[1:], list(range(num_joints))], dtype=np.int64),
        "f": rng.integers(0, NUM_VERTS, size=(2 * NUM_VERTS, 3)).astype(np.int64),
    }
    for name, vertex in zip(
        VERTEX_JOINT_NAMES, rng.choice(NUM_VERTS, len(VERTEX_JOINT_NAMES), replace=False), strict=True
    ):
        data[f"vid_{name}"] = np.array(vertex, dtype=np.int64)
    return data


def tiny_smplx(seed: int) -> dict[str, np.ndarray]:
    """SMPL-X-format arrays as smplx 0.1.28's SMPLX reads them (shapedirs padded to 400 columns)."""
    data = tiny_model(seed, SMPLX_PARENTS, shape_columns=400)
    rng = np.random.default_rng(seed + 1)
    # Expression directions (columns 300-309): ignored by BodyModel and, with zero expression, by smplx.
    data["shapedirs"][:, :, 300:310] = _f32(rng.normal(size=(NUM_VERTS, 3, 10)) * 0.03)
    for side in "lr":
        data[f"hands_components{side}"] = _f32(rng.normal(size=(45, 45)))
        data[f"hands_mean{side}"] = _f32(rng.normal(size=45) * 0.1)  # flat_hand_mean=True: not added
    data["lmk_faces_idx"] = rng.integers(0, len(data["f"]), size=51).astype(np.int64)
    bary = rng.uniform(size=(51, 3))
    data["lmk_bary_coords"] = _f32(bary / bary.sum(axis=1, keepdims=True))
    return data


def vertex_ids(data: dict) -> dict[str, int]:
    return {key[4:]: int(value) for key, value in data.items() if key.startswith("vid_")}


def write_chumpy_pickle(path: Path, data: dict) -> None:
    """The published SMPL layout: chumpy Ch arrays, a scipy csc J_regressor, protocol 2, plus strings."""
    import scipy.sparse

    with warnings.catch_warnings():  # chumpy imports a deprecated scipy path
        warnings.simplefilter("ignore", DeprecationWarning)
        import chumpy

    published = dict(data)
    for key in ("v_template", "shapedirs", "posedirs"):
        published[key] = chumpy.array(data[key])
    published["J_regressor"] = scipy.sparse.csc_matrix(data["J_regressor"])
    published.update(bs_type="lrotmin", bs_style="lbs")
    path.write_bytes(pickle.dumps(published, protocol=2))


def random_inputs(seed: int, num_pose_joints: int, num_betas: int, dtype: torch.dtype):
    generator = torch.Generator().manual_seed(seed)
    pose = (torch.randn(BATCH, num_pose_joints, 3, generator=generator, dtype=torch.float64) * 0.5).to(dtype)
    betas = (torch.randn(BATCH, num_betas, generator=generator, dtype=torch.float64) * 1.5).to(dtype)
    return pose, betas


# ---------------------------------------------------------------------------------------------------------------
# smplx references
# ---------------------------------------------------------------------------------------------------------------


def smplx_smpl_reference(data: dict, pose, betas, dtype, kid_template_path=None) -> BodyOutput:
    kid = {} if kid_template_path is None else dict(age="kid", kid_template_path=str(kid_template_path))
    model = smplx.SMPL(
        model_path="",
        data_struct=Struct(**data),
        vertex_ids=vertex_ids(data),
        dtype=dtype,
        batch_size=len(pose),
        num_betas=10,
        **kid,
    )
    out = model(
        betas=betas,
        global_orient=pose[:, 0],
        body_pose=pose[:, 1:].reshape(len(pose), -1),
        transl=torch.zeros(len(pose), 3, dtype=dtype),
    )
    v_shaped = model.forward_shape(betas).v_shaped
    return BodyOutput(out.vertices, out.joints[:, :24], vertices2joints(model.J_regressor, v_shaped))


def smplx_smplx_reference(path: Path, data: dict, pose, betas, dtype, kid_template_path=None) -> BodyOutput:
    kid = {} if kid_template_path is None else dict(age="kid", kid_template_path=str(kid_template_path))
    model = smplx.SMPLX(
        model_path=str(path),
        ext="npz",
        use_pca=False,
        flat_hand_mean=True,
        num_betas=10,
        dtype=dtype,
        batch_size=len(pose),
        **kid,
    )
    model.vertex_joint_selector = VertexJointSelector(vertex_ids=vertex_ids(data))
    batch = len(pose)
    out = model(
        betas=betas,
        global_orient=pose[:, 0],
        body_pose=pose[:, 1:22].reshape(batch, -1),
        jaw_pose=pose[:, 22],
        leye_pose=pose[:, 23],
        reye_pose=pose[:, 24],
        left_hand_pose=pose[:, 25:40].reshape(batch, -1),
        right_hand_pose=pose[:, 40:55].reshape(batch, -1),
        expression=torch.zeros(batch, 10, dtype=dtype),
        transl=torch.zeros(batch, 3, dtype=dtype),
    )
    joints_t = model.vertex_joint_selector(out.v_shaped, vertices2joints(model.J_regressor, out.v_shaped))
    return BodyOutput(out.vertices, out.joints[:, :76], joints_t)


def assert_outputs_close(ours: BodyOutput, reference: BodyOutput, dtype) -> None:
    for name in BodyOutput._fields:
        actual, expected = getattr(ours, name), getattr(reference, name)
        assert actual.dtype == dtype and actual.shape == expected.shape, name
        torch.testing.assert_close(actual, expected, **TOLERANCE[dtype], msg=lambda m, name=name: f"{name}: {m}")


# ---------------------------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smpl_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("smpl")
    data = tiny_model(0, SMPL_PARENTS)
    np.savez(folder / "tiny_smpl.npz", **data)
    write_chumpy_pickle(folder / "tiny_smpl.pkl", data)
    kid = _f32(data["v_template"] * 0.6 + np.random.default_rng(7).normal(size=data["v_template"].shape) * 0.01 + 2)
    np.save(folder / "kid_template.npy", kid)
    return data, folder


@pytest.fixture(scope="module")
def smplx_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("smplx")
    data = tiny_smplx(1)
    np.savez(folder / "tiny_smplx.npz", **data)
    kid = _f32(data["v_template"] * 0.6 + 1.0)
    np.save(folder / "kid_template.npy", kid)
    return data, folder


# ---------------------------------------------------------------------------------------------------------------
# Equality with smplx
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rotmat", [False, True], ids=["axis_angle", "rotmat"])
@pytest.mark.parametrize("suffix", ["npz", "pkl"])
def test_smpl_matches_smplx(smpl_files, dtype, rotmat, suffix):
    data, folder = smpl_files
    body = BodyModel.from_file(folder / f"tiny_smpl.{suffix}", dtype=dtype)
    assert (body.model_type, body.num_betas, body.num_pose_joints, body.num_joints) == ("smpl", 10, 24, 24)
    assert body.faces.dtype == torch.long and torch.equal(body.faces, torch.as_tensor(data["f"]))
    pose, betas = random_inputs(0, 24, 10, dtype)
    ours = body(batch_rodrigues(pose.reshape(-1, 3)).reshape(BATCH, 24, 3, 3) if rotmat else pose, betas)
    assert_outputs_close(ours, smplx_smpl_reference(data, pose, betas, dtype), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rotmat", [False, True], ids=["axis_angle", "rotmat"])
def test_smplx_matches_smplx(smplx_files, dtype, rotmat):
    data, folder = smplx_files
    body = BodyModel.from_file(folder / "tiny_smplx.npz", model_type="smplx", dtype=dtype)
    assert (body.model_type, body.num_betas, body.num_pose_joints, body.num_joints) == ("smplx", 10, 55, 76)
    pose, betas = random_inputs(1, 55, 10, dtype)
    ours = body(batch_rodrigues(pose.reshape(-1, 3)).reshape(BATCH, 55, 3, 3) if rotmat else pose, betas)
    assert_outputs_close(ours, smplx_smplx_reference(folder / "tiny_smplx.npz", data, pose, betas, dtype), dtype)


@pytest.mark.parametrize("model_type", ["smpl", "smplx"])
def test_zero_posedirs_match_smplx(smpl_files, smplx_files, tmp_path, model_type):
    """The open models have all-zero posedirs; the pose blend-shape product is then skipped."""
    data = dict(smpl_files[0] if model_type == "smpl" else smplx_files[0])
    data["posedirs"] = np.zeros_like(data["posedirs"])
    body = BodyModel(data, model_type=model_type)
    assert not body.pose_blend_shapes
    pose, betas = random_inputs(10, body.num_pose_joints, 10, torch.float32)
    if model_type == "smpl":
        reference = smplx_smpl_reference(data, pose, betas, torch.float32)
    else:
        np.savez(tmp_path / "zero_posedirs.npz", **data)
        reference = smplx_smplx_reference(tmp_path / "zero_posedirs.npz", data, pose, betas, torch.float32)
    assert_outputs_close(body(pose, betas), reference, torch.float32)


def test_smplx_vertex_joints_use_the_files_ids(smplx_files):
    """Joints 55-75 are the vid_ vertices (66-75 the fingertips), not smplx's licensed-topology ids."""
    data, folder = smplx_files
    body = BodyModel.from_file(folder / "tiny_smplx.npz", model_type="smplx")
    pose, betas = random_inputs(2, 55, 10, torch.float32)
    out = body(pose, betas)
    ids = [int(data[f"vid_{name}"]) for name in VERTEX_JOINT_NAMES]
    assert torch.equal(out.joints[:, 55:], out.vertices[:, ids])
    tips = [
        int(data[f"vid_{side}{finger}"]) for side in "lr" for finger in ("thumb", "index", "middle", "ring", "pinky")
    ]
    assert torch.equal(out.joints[:, 66:76], out.vertices[:, tips])


@pytest.mark.parametrize("model_type", ["smpl", "smplx"])
def test_kid_beta_matches_smplx(smpl_files, smplx_files, model_type):
    data, folder = smpl_files if model_type == "smpl" else smplx_files
    path = folder / ("tiny_smpl.npz" if model_type == "smpl" else "tiny_smplx.npz")
    kid_path = folder / "kid_template.npy"
    body = BodyModel.from_file(path, model_type=model_type, kid_template_path=kid_path)
    assert body.num_betas == 11
    pose, betas = random_inputs(3, body.num_pose_joints, 11, torch.float32)
    betas[:, 10] = torch.linspace(-1.0, 1.0, BATCH)
    if model_type == "smpl":
        reference = smplx_smpl_reference(data, pose, betas, torch.float32, kid_template_path=kid_path)
    else:
        reference = smplx_smplx_reference(path, data, pose, betas, torch.float32, kid_template_path=kid_path)
    assert_outputs_close(body(pose, betas), reference, torch.float32)
    torch.testing.assert_close(body.rest_joints(betas), reference.joints_t, rtol=1e-5, atol=1e-5)


def test_kid_beta_one_gives_the_centred_kid_template(smpl_files):
    data, folder = smpl_files
    body = BodyModel.from_file(
        folder / "tiny_smpl.npz", kid_template_path=folder / "kid_template.npy", dtype=torch.float64
    )
    betas = torch.zeros(1, 11, dtype=torch.float64)
    betas[0, 10] = 1.0
    out = body(torch.zeros(1, 24, 3, dtype=torch.float64), betas)
    kid = np.load(folder / "kid_template.npy")
    np.testing.assert_allclose(out.vertices[0].numpy(), kid - kid.mean(axis=0), atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# Rest joints, dtype and device
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["smpl", "smplx"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rest_joints_equal_joints_t(smpl_files, smplx_files, model_type, dtype):
    data = smpl_files[0] if model_type == "smpl" else smplx_files[0]
    body = BodyModel(data, model_type=model_type, dtype=dtype)
    pose, betas = random_inputs(4, body.num_pose_joints, 10, dtype)
    rest = body.rest_joints(betas)
    assert rest.shape == (BATCH, body.num_joints, 3) and rest.dtype == dtype
    torch.testing.assert_close(rest, body(pose, betas).joints_t, **TOLERANCE[dtype])


@pytest.mark.parametrize("model_type", ["smpl", "smplx"])
def test_posed_joints_equal_forward_joints(smpl_files, smplx_files, model_type):
    """The mesh-free joints path, including SMPL-X's skinned fingertip / landmark joints (with pose correctives)."""
    data = smpl_files[0] if model_type == "smpl" else smplx_files[0]
    body = BodyModel(data, model_type=model_type, dtype=torch.float64)
    assert body.pose_blend_shapes  # the tiny models have random posedirs: the corrective path is exercised
    pose, betas = random_inputs(6, body.num_pose_joints, 10, torch.float64)
    torch.testing.assert_close(body.posed_joints(pose, betas), body(pose, betas).joints, **TOLERANCE[torch.float64])


def test_zero_pose_joints_equal_rest_joints(smpl_files):
    body = BodyModel(smpl_files[0], dtype=torch.float64)
    _, betas = random_inputs(5, 24, 10, torch.float64)
    out = body(torch.zeros(BATCH, 24, 3, dtype=torch.float64), betas)
    torch.testing.assert_close(out.joints, out.joints_t)


def test_to_moves_buffers_and_changes_dtype(smplx_files):
    body = BodyModel(smplx_files[0], model_type="smplx").to(torch.float64)
    assert body.dtype == torch.float64 and body.faces.dtype == torch.long
    reference = BodyModel(smplx_files[0], model_type="smplx", dtype=torch.float64)
    pose, betas = random_inputs(6, 55, 10, torch.float64)
    torch.testing.assert_close(body(pose, betas).vertices, reference(pose, betas).vertices, rtol=1e-6, atol=1e-7)
    if torch.cuda.is_available():
        on_gpu = body.to("cuda")
        assert on_gpu.device.type == "cuda" and on_gpu.vertex_joint_selector.extra_joints_idxs.is_cuda
        out = on_gpu(pose.cuda(), betas.cuda())
        torch.testing.assert_close(out.joints.cpu(), reference(pose, betas).joints, rtol=1e-6, atol=1e-7)


def test_state_dict_carries_no_model_arrays(smplx_files):
    """Buffers come from the model file: a checkpoint of a module holding a BodyModel stays small."""
    body = BodyModel(smplx_files[0], model_type="smplx")
    assert body.state_dict() == {}
    holder = torch.nn.Sequential(torch.nn.Linear(2, 2), body)
    assert set(holder.state_dict()) == {"0.weight", "0.bias"}


def test_betas_row_broadcasts(smpl_files):
    body = BodyModel(smpl_files[0])
    pose, betas = random_inputs(7, 24, 10, torch.float32)
    torch.testing.assert_close(body(pose, betas[:1]).vertices, body(pose, betas[:1].expand(BATCH, -1)).vertices)


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pose_shape, betas_shape, message",
    [
        ((BATCH, 23, 3), (BATCH, 10), r"\(B, 24, 3\)"),
        ((BATCH, 72), (BATCH, 10), r"\(B, 24, 3, 3\)"),
        ((BATCH, 24, 3, 4), (BATCH, 10), r"pose must have shape"),
        ((BATCH, 24, 3), (BATCH, 9), r"betas must have shape \(B, 10\)"),
        ((BATCH, 24, 3), (BATCH, 11), r"10 shape coefficients"),
        ((BATCH, 24, 3), (10,), r"betas must have shape \(B, 10\)"),
        ((BATCH, 24, 3), (BATCH - 2, 10), r"batch size 3, pose has 5"),
    ],
)
def test_bad_shapes_raise_clear_errors(smpl_files, pose_shape, betas_shape, message):
    body = BodyModel(smpl_files[0])
    with pytest.raises(ValueError, match=message):
        body(torch.zeros(pose_shape), torch.zeros(betas_shape))


def test_bad_rest_joints_betas_and_dtype_raise(smpl_files):
    body = BodyModel(smpl_files[0])
    with pytest.raises(ValueError, match=r"\(B, 10\)"):
        body.rest_joints(torch.zeros(2, 11))
    with pytest.raises(ValueError, match="dtype torch.float64 but the body model is torch.float32"):
        body(torch.zeros(2, 24, 3, dtype=torch.float64), torch.zeros(2, 10, dtype=torch.float64))


def test_bad_model_arguments_raise(smpl_files, smplx_files):
    data = smpl_files[0]
    with pytest.raises(ValueError, match="model_type"):
        BodyModel(data, model_type="mano")
    with pytest.raises(ValueError, match=r"J_regressor has shape \(24, 300\), expected \(55, 300\)"):
        BodyModel(data, model_type="smplx")
    with pytest.raises(ValueError, match=r"num_betas must be in \[1, 10\]"):
        BodyModel(data, num_betas=12)
    with pytest.raises(ValueError, match="kid template has shape"):
        BodyModel(data, kid_template=np.zeros((10, 3)))
    with pytest.raises(ValueError, match="lacks"):
        BodyModel({k: v for k, v in data.items() if k != "weights"})
    no_tips = {k: v for k, v in smplx_files[0].items() if k != "vid_lthumb"}
    with pytest.raises(ValueError, match="vid_lthumb"):
        BodyModel(no_tips, model_type="smplx")


def test_missing_files_name_their_config_keys(tmp_path, smpl_files):
    with pytest.raises(FileNotFoundError) as error:
        BodyModel.from_file(tmp_path / "SMPL_NEUTRAL.pkl")
    message = str(error.value)
    assert "DATA.BODY_MODEL" in message and "SMPL_NEUTRAL.pkl" in message
    assert "https://smpl.is.tue.mpg.de" in message and "https://smpl-x.is.tue.mpg.de" in message
    assert "data/open/smpl/OPEN_SMPL_NEUTRAL.npz" in message
    with pytest.raises(FileNotFoundError, match="DATA.KID_TEMPLATE"):
        BodyModel.from_file(smpl_files[1] / "tiny_smpl.npz", kid_template_path=tmp_path / "smpl_kid_template.npy")
    with pytest.raises(FileNotFoundError, match="DATA.SMPLX_MODEL"):
        load_body_model_data(tmp_path / "SMPLX_NEUTRAL.npz", config_key="DATA.SMPLX_MODEL")


# ---------------------------------------------------------------------------------------------------------------
# The open models (generated by tools/make_open_body_model.py)
# ---------------------------------------------------------------------------------------------------------------


def test_open_smpl_matches_smplx():
    data = dict(np.load(OPEN_SMPL))
    body = BodyModel.from_file(OPEN_SMPL)
    pose, betas = random_inputs(8, 24, 10, torch.float32)
    assert_outputs_close(body(pose, betas), smplx_smpl_reference(data, pose, betas, torch.float32), torch.float32)
    torch.testing.assert_close(body.rest_joints(betas), body(pose, betas).joints_t, rtol=1e-5, atol=1e-5)


def test_open_smpl_kid_matches_smplx():
    data = dict(np.load(OPEN_SMPL))
    body = BodyModel.from_file(OPEN_SMPL, kid_template_path=OPEN_SMPL_KID)
    pose, betas = random_inputs(11, 24, 11, torch.float32)
    reference = smplx_smpl_reference(data, pose, betas, torch.float32, kid_template_path=OPEN_SMPL_KID)
    assert_outputs_close(body(pose, betas), reference, torch.float32)


def test_open_smplx_matches_smplx():
    data = dict(np.load(OPEN_SMPLX))
    body = BodyModel.from_file(OPEN_SMPLX, model_type="smplx")
    pose, betas = random_inputs(9, 55, 10, torch.float32)
    reference = smplx_smplx_reference(OPEN_SMPLX, data, pose, betas, torch.float32)
    assert_outputs_close(body(pose, betas), reference, torch.float32)
