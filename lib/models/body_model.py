"""SMPL / SMPL-X body models: safe file loading, a forward pass over smplx's functional core, the rest-joint map.

    data = load_body_model_data('data/open/smpl/OPEN_SMPL_NEUTRAL.npz')     # dict of plain numpy arrays
    body = BodyModel(data, model_type='smpl')                                # or BodyModel.from_file(path, ...)
    out = body(pose, betas)              # pose (B, P, 3) axis-angle or (B, P, 3, 3); betas (B, num_betas)
    out.vertices, out.joints, out.joints_t
    body.rest_joints(betas)              # == out.joints_t from a precomputed linear map (no mesh)

The math is smplx's (`blend_shapes`, `vertices2joints`, `batch_rodrigues`, `batch_rigid_transform`, its linear
blend skinning; the joint regressor as a precomputed linear map of betas, the skinning over the non-zero weights
only), so results match `smplx.SMPL` / `smplx.SMPLX` to float rounding; the module here validates inputs,
holds buffers and also returns the rest joints of the shaped template. Nothing is unpickled by numpy or smplx:
`.pkl` files go through `safe_pickle`, `.npz` files are read with `allow_pickle=False`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from smplx.lbs import batch_rigid_transform, batch_rodrigues
from smplx.vertex_ids import vertex_ids as SMPLX_PACKAGE_VERTEX_IDS
from smplx.vertex_joint_selector import VertexJointSelector

from lib.kinematics.tree import TREES
from lib.models.safe_pickle import load_pickle

__all__ = ["BodyOutput", "BodyModel", "ShapedBody", "load_body_model_data", "VERTEX_JOINT_NAMES", "DEFAULT_BODY_MODEL"]

DEFAULT_BODY_MODEL = "data/open/smpl/OPEN_SMPL_NEUTRAL.npz"
_MODEL_SOURCES = (
    "real SMPL files come from https://smpl.is.tue.mpg.de and SMPL-X files from "
    f"https://smpl-x.is.tue.mpg.de (registration, own licence); the open model {DEFAULT_BODY_MODEL} "
    "is the default"
)
_KID_SOURCES = (
    "the kid templates smpl_kid_template.npy / smplx_kid_template.npy come with AGORA "
    "(https://agora.is.tue.mpg.de); the open ones are data/open/smpl/open_smpl_kid_template.npy and "
    "data/open/smplx/open_smplx_kid_template.npy"
)

# Keys every body-model file must provide as plain numeric arrays.
REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")

# smplx's vertex joints, in the order its VertexJointSelector appends them (face 5, feet 6, fingertips 10).
VERTEX_JOINT_NAMES = (
    "nose",
    "reye",
    "leye",
    "rear",
    "lear",
    "LBigToe",
    "LSmallToe",
    "LHeel",
    "RBigToe",
    "RSmallToe",
    "RHeel",
    "lthumb",
    "lindex",
    "lmiddle",
    "lring",
    "lpinky",
    "rthumb",
    "rindex",
    "rmiddle",
    "rring",
    "rpinky",
)


@dataclass(frozen=True)
class _ModelSpec:
    num_pose_joints: int  # rotations in a pose (root included)
    vertex_joints: bool  # append smplx's 21 vertex joints (face, feet, fingertips) to the skeleton


# The tree's slots past its pose joints (SMPL-X: face, feet, fingertips) are filled with smplx's vertex joints.
_SPECS = {
    name: _ModelSpec(num_pose_joints=tree.num_pose_joints, vertex_joints=tree.num_joints > tree.num_pose_joints)
    for name, tree in TREES.items()
}
SKIN_CHUNK = 8  # samples skinned at once (measured: 4-32 about equal, whole batches of 256 ~2x slower)
_MAX_BETAS = 300  # smplx's SHAPE_SPACE_DIM: in SMPL-X files the expression directions follow column 300
_SMPLX_PACKAGE_NUM_VERTICES = 10475  # the licensed SMPL-X topology that smplx's own vertex ids belong to


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------


def _missing_file_message(path: Path, config_key: str, what: str, sources: str) -> str:
    return f"{what} not found: {path} (set by the config key {config_key}); {sources}"


def load_body_model_data(path: str | Path, config_key: str = "DATA.BODY_MODEL") -> dict[str, np.ndarray]:
    """Reads an SMPL / SMPL-X model file (`.pkl` as published, or `.npz`) into plain numeric numpy arrays.

    No code from the file runs: `.pkl` goes through the allow-listed unpickler (chumpy `Ch` -> its array, scipy
    sparse -> dense), `.npz` is read with `allow_pickle=False`. Non-numeric entries (strings such as `bs_type`,
    nested dicts) are dropped. Raises FileNotFoundError naming `config_key` when the file is missing and
    ValueError when the file asks for anything outside the allow-list.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(_missing_file_message(path, config_key, "body model file", _MODEL_SOURCES))
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        raw = load_pickle(path)
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a body-model pickle holds a dict, got {type(raw).__name__}")
    elif suffix == ".npz":
        raw = _load_npz(path)
    else:
        raise ValueError(f"{path}: unsupported body-model file type {suffix!r} (expected .pkl or .npz)")
    return {
        key: array
        for key, array in ((k, _numeric_array(v)) for k, v in raw.items() if isinstance(k, str))
        if array is not None
    }


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """Entries stored as pickles are never unpickled: refused when the model needs them (REQUIRED_KEYS), dropped
    with a warning otherwise (the official SMPLX_NEUTRAL.npz keeps metadata dicts such as `joint2num` that way)."""
    arrays, pickled = {}, []
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                try:
                    arrays[key] = npz[key]
                except ValueError as error:
                    if "allow_pickle" not in str(error):
                        raise
                    pickled.append(key)
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"{path}: not a readable .npz body-model file ({error})") from None
    needed = sorted(set(pickled) & set(REQUIRED_KEYS))
    if needed:
        raise ValueError(
            f"{path}: entries {needed} are stored as pickles (object arrays); they are refused "
            "because loading them could run code from the file"
        )
    if pickled:
        warnings.warn(
            f"{path}: skipped entries stored as pickles (not used by the body model): {sorted(pickled)}", stacklevel=2
        )
    return arrays


def _numeric_array(value: object) -> np.ndarray | None:
    """A plain numeric ndarray for numbers / numeric arrays; None for anything else (dropped)."""
    if isinstance(value, (bool, int, float)):
        return np.asarray(value)
    if type(value) is np.ndarray and value.dtype.kind in "biuf":
        return value
    return None


def _load_kid_template(path: str | Path, config_key: str = "DATA.KID_TEMPLATE") -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(_missing_file_message(path, config_key, "kid template file", _KID_SOURCES))
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} (config key {config_key}): not a readable .npy kid template ({error})") from None


# ---------------------------------------------------------------------------------------------------------------
# Model arrays
# ---------------------------------------------------------------------------------------------------------------


def _check_model_arrays(data: Mapping[str, np.ndarray], spec: _ModelSpec, model_type: str) -> None:
    """Shapes: v_template (V, 3), shapedirs (V, 3, K), posedirs (V, 3, 9 (J - 1)), J_regressor (J, V),
    weights (V, J), kintree_table (2, J), f (F, 3), with J = 24 (SMPL) or 55 (SMPL-X)."""
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise ValueError(f"{model_type} model data lacks {missing} (needs {list(REQUIRED_KEYS)})")
    num_verts, num_joints = (np.shape(data["v_template"]) or (0,))[0], spec.num_pose_joints
    expected = {
        "v_template": (num_verts, 3),
        "J_regressor": (num_joints, num_verts),
        "kintree_table": (2, num_joints),
        "weights": (num_verts, num_joints),
        "shapedirs": (num_verts, 3, None),
        "posedirs": (num_verts, 3, 9 * (num_joints - 1)),
        "f": (None, 3),
    }
    for key, shape in expected.items():
        actual = np.shape(data[key])
        if len(actual) != len(shape) or any(e is not None and a != e for a, e in zip(actual, shape, strict=True)):
            shown = tuple("*" if e is None else e for e in shape)
            raise ValueError(f"{model_type} model: {key} has shape {actual}, expected {shown}")
    faces = np.asarray(data["f"])
    if faces.dtype.kind not in "iu" or faces.size and (faces.min() < 0 or faces.max() >= num_verts):
        raise ValueError(f"{model_type} model: faces must be vertex indices in [0, {num_verts})")


def _parents(kintree_table: np.ndarray) -> np.ndarray:
    """(J,) parent indices, root -1; files store the root's parent as -1 or 2**32 - 1."""
    parents = np.asarray(kintree_table[0], dtype=np.int64).copy()
    parents[0] = -1
    if np.any(parents[1:] < 0) or np.any(parents[1:] >= np.arange(1, len(parents))):
        raise ValueError("kintree_table: every joint must come after its parent (parents[j] < j)")
    return parents


def _shape_basis(data: Mapping[str, np.ndarray], num_betas: int, kid_template: np.ndarray | None) -> np.ndarray:
    """(V, 3, num_betas [+1]) float64: the first num_betas shape directions, then the kid direction if given.

    The kid direction is smplx's `age='kid'` one: (kid template - its vertex mean) - v_template.
    """
    shapedirs = np.asarray(data["shapedirs"], dtype=np.float64)
    available = min(shapedirs.shape[2], _MAX_BETAS)
    if not 1 <= num_betas <= available:
        raise ValueError(f"num_betas must be in [1, {available}] for this model file, got {num_betas}")
    basis = shapedirs[:, :, :num_betas]
    if kid_template is None:
        return basis
    v_template = np.asarray(data["v_template"], dtype=np.float64)
    kid_template = np.asarray(kid_template, dtype=np.float64)
    if kid_template.shape != v_template.shape:
        raise ValueError(f"kid template has shape {kid_template.shape}, the model template {v_template.shape}")
    kid_direction = (kid_template - kid_template.mean(axis=0)) - v_template
    return np.concatenate([basis, kid_direction[:, :, None]], axis=2)


def _vertex_ids(data: Mapping[str, np.ndarray], model_type: str) -> dict[str, int]:
    """smplx landmark vertex ids from the `vid_<name>` keys; the licensed SMPL-X file (no such keys) uses smplx's."""
    num_verts = len(data["v_template"])
    ids = {key[4:]: int(value) for key, value in data.items() if key.startswith("vid_")}
    if not ids and model_type == "smplx" and num_verts == _SMPLX_PACKAGE_NUM_VERTICES:
        ids = dict(SMPLX_PACKAGE_VERTEX_IDS["smplx"])
    missing = [name for name in VERTEX_JOINT_NAMES if name not in ids]
    if missing:
        raise ValueError(f"{model_type} model data lacks the vertex-joint keys {['vid_' + n for n in missing]}")
    out_of_range = {name: ids[name] for name in VERTEX_JOINT_NAMES if not 0 <= ids[name] < num_verts}
    if out_of_range:
        raise ValueError(f"vertex-joint ids out of range [0, {num_verts}): {out_of_range}")
    return {name: ids[name] for name in VERTEX_JOINT_NAMES}


# ---------------------------------------------------------------------------------------------------------------
# Forward pass
# ---------------------------------------------------------------------------------------------------------------


def _skin(v_posed: torch.Tensor, lbs_weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Linear blend skinning: each vertex moved by its weighted blend of the joint transforms (smplx's `lbs`
    without the constant last row of the 4x4 matrices and the homogeneous coordinate).

    v_posed (B, V, 3), lbs_weights (V, J), transforms (B, J, 4, 4) relative to the rest pose -> (B, V, 3).
    """
    batch, num_joints = transforms.shape[:2]
    blended = torch.matmul(lbs_weights, transforms[:, :, :3, :].reshape(batch, num_joints, 12))  # (B, V, 12)
    blended = blended.reshape(batch, -1, 3, 4)
    # Three fused multiply-adds over whole tensors (an einsum here runs B*V tiny matrix products, ~1.5x slower).
    vertices = torch.addcmul(blended[..., 3], blended[..., 0], v_posed[..., None, 0])
    vertices = torch.addcmul(vertices, blended[..., 1], v_posed[..., None, 1])
    return torch.addcmul(vertices, blended[..., 2], v_posed[..., None, 2])


def _skin_in_chunks(
    v_posed: torch.Tensor, lbs_weights: torch.Tensor, transforms: torch.Tensor, chunk: int = SKIN_CHUNK
) -> torch.Tensor:
    """:func:`_skin` over batch chunks of ``chunk`` samples, concatenated: the same numbers, but the
    intermediate (chunk, V, 12) blend stays small enough to be reused from the allocator instead of freshly
    mapped (and page-faulted) memory, which dominated the skinning time of a batch of 256."""
    if v_posed.shape[0] <= chunk:
        return _skin(v_posed, lbs_weights, transforms)
    pieces = [_skin(v, lbs_weights, t) for v, t in zip(v_posed.split(chunk), transforms.split(chunk), strict=True)]
    return torch.cat(pieces)


class ShapedBody(NamedTuple):
    """A body's shaped, unposed template: what every pose of the same betas shares."""

    vertices: torch.Tensor  # (B, V, 3) template with the shape blend shapes
    joints: torch.Tensor  # (B, J, 3) its joints (vertex joints included), == BodyOutput.joints_t


class BodyOutput(NamedTuple):
    vertices: torch.Tensor  # (B, V, 3) posed mesh
    joints: torch.Tensor  # (B, J, 3) posed joints: 24 (SMPL) or 76 (SMPL-X: 55 skeleton + 21 vertex joints)
    joints_t: torch.Tensor  # (B, J, 3) the same joints on the shaped, unposed template


class BodyModel(torch.nn.Module):
    """SMPL or SMPL-X as a module: buffers from a model-data dict, forward(pose, betas) -> BodyOutput.

    SMPL: 24 pose rotations, 24 joints. SMPL-X: 55 pose rotations (root, 21 body, jaw, left eye, right eye,
    left hand 15, right hand 15, i.e. smplx's full_pose order), 76 joints (smplx's 127-joint output without its 51
    face landmarks; 66-70 / 71-75 are the left / right fingertips thumb, index, middle, ring, pinky). Hand poses
    are full rotations (smplx with use_pca=False, flat_hand_mean=True); expression is zero. No translation.
    Vertex joints use the `vid_<name>` ids of the data (smplx's own SMPL-X ids belong to the licensed topology).
    """

    def __init__(
        self,
        data: Mapping[str, np.ndarray],
        model_type: str = "smpl",
        kid_template: np.ndarray | None = None,
        num_betas: int = 10,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        if model_type not in _SPECS:
            raise ValueError(f"model_type must be one of {sorted(_SPECS)}, got {model_type!r}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating point type, got {dtype}")
        spec = _SPECS[model_type]
        _check_model_arrays(data, spec, model_type)
        shapedirs = _shape_basis(data, num_betas, kid_template)

        self.model_type = model_type
        self.num_betas = shapedirs.shape[2]
        self.num_pose_joints = spec.num_pose_joints

        def buffer(name: str, array: np.ndarray, buffer_dtype: torch.dtype = dtype) -> None:
            # Not persistent: the arrays come from the model file, so checkpoints of modules holding a BodyModel
            # neither carry them (tens of MB) nor need them to load.
            tensor = torch.as_tensor(np.ascontiguousarray(array)).to(buffer_dtype)
            self.register_buffer(name, tensor, persistent=False)

        num_verts = len(data["v_template"])
        buffer("v_template", np.asarray(data["v_template"], dtype=np.float64))  # (V, 3)
        buffer("shapedirs", shapedirs)  # (V, 3, K)
        buffer("shapedirs_flat", shapedirs.transpose(2, 0, 1).reshape(shapedirs.shape[2], -1))  # (K, 3V)
        buffer("posedirs", np.reshape(data["posedirs"], (num_verts * 3, -1)).T.astype(np.float64))  # (9(J-1), 3V)
        buffer("J_regressor", np.asarray(data["J_regressor"], dtype=np.float64))  # (J, V)
        buffer("lbs_weights", np.asarray(data["weights"], dtype=np.float64))  # (V, J)
        buffer("parents", _parents(data["kintree_table"]), torch.long)  # (J,)
        buffer("faces", np.asarray(data["f"], dtype=np.int64), torch.long)  # (F, 3)
        self.pose_blend_shapes = bool(np.any(data["posedirs"]))

        vertex_joint_ids = np.zeros(0, dtype=np.int64)
        self.vertex_joint_selector = None
        if spec.vertex_joints:
            selector = VertexJointSelector(vertex_ids=_vertex_ids(data, model_type))
            vertex_joint_ids = selector.extra_joints_idxs.numpy()
            selector.register_buffer("extra_joints_idxs", selector.extra_joints_idxs, persistent=False)
            self.vertex_joint_selector = selector
        self.num_joints = spec.num_pose_joints + len(vertex_joint_ids)

        template, directions = _rest_joint_map(data, shapedirs, vertex_joint_ids)
        buffer("rest_joints_template", template.reshape(-1))  # (3J,)
        buffer("rest_joints_shapedirs", directions.reshape(-1, self.num_betas).T)  # (K, 3J)

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        model_type: str = "smpl",
        kid_template_path: str | Path | None = None,
        num_betas: int = 10,
        dtype: torch.dtype = torch.float32,
        config_key: str = "DATA.BODY_MODEL",
    ) -> BodyModel:
        """Builds the model from a `.pkl` / `.npz` file; the kid template (`.npy`, set by DATA.KID_TEMPLATE)
        adds one beta."""
        data = load_body_model_data(path, config_key=config_key)
        kid_template = None if kid_template_path is None else _load_kid_template(kid_template_path)
        return cls(data, model_type=model_type, kid_template=kid_template, num_betas=num_betas, dtype=dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.v_template.dtype

    @property
    def device(self) -> torch.device:
        return self.v_template.device

    def extra_repr(self) -> str:
        return (
            f"model_type={self.model_type}, num_betas={self.num_betas}, num_pose_joints={self.num_pose_joints}, "
            f"num_joints={self.num_joints}, num_vertices={self.v_template.shape[0]}"
        )

    # -- input checks ---------------------------------------------------------------------------------------------

    def _check_tensor(self, name: str, tensor: torch.Tensor) -> None:
        if not torch.is_tensor(tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.dtype != self.dtype:
            raise ValueError(
                f"{name} has dtype {tensor.dtype} but the body model is {self.dtype}; convert one of them (.to(dtype))"
            )
        if tensor.device != self.device:
            raise ValueError(f"{name} is on {tensor.device} but the body model is on {self.device}")

    def _rotation_matrices(self, pose: torch.Tensor) -> torch.Tensor:
        """pose (B, P, 3) axis-angle or (B, P, 3, 3) rotation matrices -> (B, P, 3, 3)."""
        self._check_tensor("pose", pose)
        num = self.num_pose_joints
        if pose.dim() == 3 and pose.shape[1:] == (num, 3):
            return batch_rodrigues(pose.reshape(-1, 3)).reshape(pose.shape[0], num, 3, 3)
        if pose.dim() == 4 and pose.shape[1:] == (num, 3, 3):
            return pose
        raise ValueError(
            f"pose must have shape (B, {num}, 3) (axis-angle) or (B, {num}, 3, 3) (rotation "
            f"matrices) for {self.model_type}, root included; got {tuple(pose.shape)}"
        )

    def _check_betas(self, betas: torch.Tensor, batch: int | None = None) -> torch.Tensor:
        """betas (B, num_betas) -> the same; a (1, num_betas) row is expanded to `batch`."""
        self._check_tensor("betas", betas)
        if betas.dim() != 2 or betas.shape[1] != self.num_betas:
            raise ValueError(
                f"betas must have shape (B, {self.num_betas}) for this model "
                f"({self.num_betas} shape coefficients), got {tuple(betas.shape)}"
            )
        if batch is not None and betas.shape[0] != batch:
            if betas.shape[0] != 1:
                raise ValueError(f"betas has batch size {betas.shape[0]}, pose has {batch}")
            betas = betas.expand(batch, -1)
        return betas

    # -- evaluation -----------------------------------------------------------------------------------------------

    def forward(self, pose: torch.Tensor, betas: torch.Tensor) -> BodyOutput:
        """pose (B, P, 3) or (B, P, 3, 3), betas (B, num_betas) -> vertices (B, V, 3), joints, joints_t (B, J, 3)."""
        rot_mats = self._rotation_matrices(pose)
        return self.pose_shaped(rot_mats, self.shaped(self._check_betas(betas, rot_mats.shape[0])))

    def shaped(self, betas: torch.Tensor) -> ShapedBody:
        """betas (B, num_betas) -> the shaped template (B, V, 3) and its rest joints (B, J, 3), to pose once or
        several times with :meth:`pose_shaped` (e.g. several methods' poses of one estimated shape)."""
        betas = self._check_betas(betas)
        v_shaped = torch.addmm(self.v_template.reshape(-1), betas, self.shapedirs_flat)  # (B, 3V)
        return ShapedBody(v_shaped.reshape(betas.shape[0], -1, 3), self.rest_joints(betas))

    def pose_shaped(self, pose: torch.Tensor, shaped: ShapedBody) -> BodyOutput:
        """pose (B, P, 3) or (B, P, 3, 3) of a :meth:`shaped` body (same B) -> :class:`BodyOutput`.

        smplx's forward with the joint regressor replaced by the precomputed rest-joint map and the skinning done
        in batch chunks (:func:`_skin_in_chunks`); equal to it to float rounding.
        """
        rot_mats = self._rotation_matrices(pose)
        batch = rot_mats.shape[0]
        v_shaped, rest = shaped
        if v_shaped.shape[0] != batch:
            raise ValueError(f"the shaped body has batch size {v_shaped.shape[0]}, the pose {batch}")
        num = self.num_pose_joints
        v_posed = v_shaped
        if self.pose_blend_shapes:  # False for all-zero posedirs (the open models): skips a (B, 9(P-1), 3V) product
            identity = torch.eye(3, dtype=self.dtype, device=self.device)
            pose_feature = (rot_mats[:, 1:] - identity).reshape(batch, -1)  # (B, 9(P-1))
            v_posed = torch.matmul(pose_feature, self.posedirs).reshape(batch, -1, 3) + v_shaped
        joints, transforms = batch_rigid_transform(rot_mats, rest[:, :num].contiguous(), self.parents, dtype=self.dtype)
        vertices = _skin_in_chunks(v_posed, self.lbs_weights, transforms)
        if self.vertex_joint_selector is not None:
            joints = self.vertex_joint_selector(vertices, joints)
        return BodyOutput(vertices=vertices, joints=joints, joints_t=rest)

    def posed_joints(self, pose: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
        """pose, betas as `forward` -> (B, J, 3) posed joints (== forward(...).joints) without skinning the mesh.

        Skeleton joints come from the rest-joint map and the kinematic chain; vertex joints (SMPL-X) skin only their
        own vertices. Used where only joints are needed (e.g. training on the twist loss alone).
        """
        rot_mats = self._rotation_matrices(pose)
        batch = rot_mats.shape[0]
        rest = self.rest_joints(self._check_betas(betas, batch)).expand(batch, -1, -1)
        num = self.num_pose_joints
        joints, transforms = batch_rigid_transform(rot_mats, rest[:, :num].contiguous(), self.parents, dtype=self.dtype)
        if self.vertex_joint_selector is None:
            return joints
        ids = self.vertex_joint_selector.extra_joints_idxs
        v_posed = rest[:, num:]
        if self.pose_blend_shapes:
            identity = torch.eye(3, dtype=self.dtype, device=self.device)
            pose_feature = (rot_mats[:, 1:] - identity).reshape(batch, -1)
            columns = (3 * ids[:, None] + torch.arange(3, device=ids.device)).reshape(-1)
            v_posed = v_posed + torch.matmul(pose_feature, self.posedirs[:, columns]).reshape(batch, -1, 3)
        return torch.cat([joints, _skin(v_posed, self.lbs_weights[ids], transforms)], dim=1)

    def rest_joints(self, betas: torch.Tensor) -> torch.Tensor:
        """betas (B, num_betas) -> (B, J, 3) rest joints of the shaped template (== forward(...).joints_t),
        from the precomputed linear map: template joints + betas @ joint shape directions."""
        betas = self._check_betas(betas)
        flat = torch.addmm(self.rest_joints_template, betas, self.rest_joints_shapedirs)
        return flat.reshape(betas.shape[0], self.num_joints, 3)


def _rest_joint_map(
    data: Mapping[str, np.ndarray], shapedirs: np.ndarray, vertex_joint_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rest joints as a linear function of betas, in float64.

    shapedirs (V, 3, K), vertex_joint_ids (N,) -> template joints (J, 3) and joint shape directions (J, 3, K), with
    J = skeleton joints + N: J_regressor applied to v_template / shapedirs, then the vertex joints' own rows.
    """
    regressor = np.asarray(data["J_regressor"], dtype=np.float64)
    v_template = np.asarray(data["v_template"], dtype=np.float64)
    template = np.concatenate([regressor @ v_template, v_template[vertex_joint_ids]], axis=0)
    directions = np.concatenate([np.einsum("jv,vck->jck", regressor, shapedirs), shapedirs[vertex_joint_ids]], axis=0)
    return template, directions
