"""Fit SMPL / SMPL-X bodies to your own 3D joints in one call (the whole method: SI, PR-C, AnalyIK, PAN, MixIK).

    from lib.api import load_solver
    solver = load_solver("smpl")            # the open model and its shipped checkpoint; or model=, checkpoint=
    out = solver.fit(joints)                # (J, 3) or (frames, J, 3), numpy or torch, metres, NOT root-centred
    out.global_orient, out.body_pose, out.betas, out.transl     # smplx-convention parameters
    vertices = out.vertices()               # (frames, V, 3), translation included; out.faces (F, 3)

The parameters reproduce the input joints with plain ``smplx.SMPL`` / ``smplx.SMPLX`` built on the same model file
(SMPL-X: ``use_pca=False, flat_hand_mean=True``): ``smplx.SMPL(...)(**out.params)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import roma
import torch
from torch import Tensor
from tqdm import tqdm
from yacs.config import CfgNode

from lib.core.config import config_factory
from lib.data.user_joints import default_order, load_joint_order, skeleton_bones, to_slots
from lib.engine.build import build_body_model, build_inference_network, build_solver
from lib.engine.threads import apply_thread_policy, map_chunks
from lib.kinematics.skeleton import root_relative
from lib.kinematics.tree import KinematicTree
from lib.models.body_model import BodyModel
from lib.solver.low_latency import MAX_LOW_LATENCY_BATCH, LowLatencySolver
from lib.solver.pipeline import (
    MAX_MEDIAN_BONE_M,
    SkeletonSolver,
    Solution,
    TwistNetwork,
    check_skeleton,
    joints_at_origin,
    median_bone_length,
)

log = logging.getLogger(__name__)

BODY_ALIASES = {"smpl": "smpl", "smplx": "smplx", "smpl-x": "smplx", "smpl_x": "smplx"}
UNIT_SCALE = {"m": 1.0, "cm": 0.01, "mm": 0.001}
MM_PER_M = 1000.0


def _user_path(path: str | Path) -> str:
    """A path the user typed, taken from their working directory (config paths resolve from the repository)."""
    return str(Path(path).expanduser().absolute())


def load_solver(
    body: str = "smpl",
    *,
    model: str | Path | None = None,
    checkpoint: str | Path | None = "default",
    config: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    robust: bool = True,
    mirror_average: bool = True,
    suspicious: str = "warn",
    threads: int | None = None,
) -> BodySolver:
    """A ready solver for one body model.

    Args:
        body: 'smpl' or 'smplx'.
        model: body model file (e.g. the real ``SMPL_NEUTRAL.pkl`` / ``SMPLX_NEUTRAL.npz``); default: the config's
            (the open model).
        checkpoint: PAN weights: 'default' = the config's (the shipped open checkpoint), a path, or None for
            AnalyIK only. A checkpoint fits the body model it was trained on.
        config: a YAML config of this body (any key of ``lib/core/config.py``); default: the body's defaults.
        robust: the solver's robust mode for noisy skeletons (``MODEL.ROBUST``, docs/robust.md); False = the
            paper's pipeline exactly.
        mirror_average: average the network's twists with its reading of the mirrored skeleton
            (lib/solver/mirror.py; needs a left-right symmetric body model); sets ``MODEL.MIRROR_AVERAGE`` over the
            config's. False = the paper's MixIK (0.03-0.10 mm more MPVE, 1.6x the throughput at large batches).
        suspicious: robust mode, input joints at the origin or with implausible bones: 'warn' (reported) or 'fill'
            (reported and treated as missing: placed from the rest skeleton).
        threads: worker threads over batch chunks (0 = all cores); default: the config's ``THREADS``. Loading
            sets torch to one intra-op thread for the process (the thread policy, :mod:`lib.engine.threads`).
    """
    name = BODY_ALIASES.get(str(body).lower())
    if name is None:
        raise ValueError(f"unknown body {body!r}: use 'smpl' or 'smplx'")
    opts = []
    if model is not None:
        opts += ["DATA.BODY_MODEL", _user_path(model)]
    if checkpoint is None or checkpoint == "":
        opts += ["MODEL.PRETRAINED", ""]
    elif checkpoint != "default":
        opts += ["MODEL.PRETRAINED", _user_path(checkpoint)]
    opts += ["MODEL.ROBUST.ENABLED", bool(robust), "MODEL.ROBUST.SUSPICIOUS", suspicious]
    opts += ["MODEL.MIRROR_AVERAGE", bool(mirror_average)]
    if threads is not None:
        opts += ["THREADS", str(threads)]
    cfg = config_factory(name)(_user_path(config) if config else None, opts)
    workers = apply_thread_policy(cfg.THREADS)
    device = torch.device(device)
    body_model = build_body_model(cfg, device, dtype=dtype)
    solver = build_solver(cfg, body_model)
    network = build_inference_network(cfg, body_model)
    return BodySolver(cfg, body_model, solver, network, workers)


class BodySolver:
    """A body model, its skeleton solver and (optionally) its Part-aware Network; :meth:`fit` runs them."""

    def __init__(
        self,
        cfg: CfgNode,
        body_model: BodyModel,
        solver: SkeletonSolver,
        network: TwistNetwork | None = None,
        workers: int = 1,
    ):
        self.cfg = cfg
        self.workers = workers
        self.low_latency = LowLatencySolver(solver, network)  # few frames at a time (live capture)
        self.body_model = body_model
        self.solver = solver
        self.network = network

    @property
    def tree(self) -> KinematicTree:
        return self.solver.tree

    @property
    def method(self) -> str:
        return "mixik" if self.network is not None else "analyik"

    def prepare(self, joints, units: str = "auto", joint_order: str | tuple | dict = "auto") -> Tensor:
        """User joints -> (B, tree.num_joints, 3) slots in metres, on the body model's device and dtype."""
        array = joints.detach().cpu().numpy() if torch.is_tensor(joints) else np.asarray(joints)
        if not np.issubdtype(array.dtype, np.number):
            raise ValueError(f"joints must be numbers, got {array.dtype}")
        if array.ndim == 2:
            array = array[None]
        if array.ndim != 3 or array.shape[-1] != 3 or array.shape[0] == 0:
            raise ValueError(f"joints must have shape (J, 3) or (frames, J, 3), got {tuple(np.shape(joints))}")
        array = array.astype(np.float64)
        bad = ~np.isfinite(array).all(axis=(1, 2))
        if bad.any():
            frames = np.flatnonzero(bad)
            raise ValueError(
                f"{len(frames)} frame(s) contain NaN/inf (frames {_short_list(frames)}); drop or "
                "interpolate those frames first"
            )
        order = (
            default_order(self.tree, array.shape[1])
            if joint_order == "auto"
            else (load_joint_order(joint_order) if isinstance(joint_order, str) else joint_order)
        )
        slots = torch.as_tensor(to_slots(array, order, self.tree))
        slots = slots * _unit_scale(self.tree, slots, units)
        return slots.to(device=self.body_model.device, dtype=self.body_model.dtype)

    @torch.no_grad()
    def fit(
        self,
        joints,
        *,
        units: str = "auto",
        joint_order: str | tuple | dict = "auto",
        batch_size: int = 1024,
        progress: bool = False,
        same_person: bool = False,
    ) -> BodyFit:
        """Fit the body to skeletons.

        Args:
            joints: (J, 3) or (frames, J, 3) joints, numpy or torch (any float dtype, any device), in metres unless
                ``units`` says otherwise; NOT root-centred: the translation is fitted too.
            units: 'auto' (metres; millimetres or centimetres are detected and rejected with the fix), 'm', 'cm',
                'mm' (converted).
            joint_order: 'auto' (a built-in order chosen by the joint count), a name of
                :data:`lib.data.user_joints.JOINT_ORDERS`, a JSON mapping file, or a list / dict as that file holds.
            progress: a progress bar over frames.
            same_person: all frames show one person: one shape is solved from all of them (bone lengths do not
                change between frames), which also makes it far less sensitive to joint noise.
        Returns:
            :class:`BodyFit`, with arrays of the input's kind (numpy, or torch on the input's device).
        """
        target = self.prepare(joints, units, joint_order)
        shared = self.shared_betas(target) if same_person else None
        parts = {"solved_betas": [], "rotmats": [], "translation": []}
        with tqdm(total=len(target), unit="frame", desc="fit", disable=not progress, dynamic_ncols=True) as bar:
            for start in range(0, len(target), batch_size):
                chunk = target[start : start + batch_size]
                betas = None if shared is None else shared[start : start + len(chunk)]
                solution = self._solve(chunk, betas)
                parts["solved_betas"].append(solution.betas)
                parts["rotmats"].append(solution.rotmats)
                parts["translation"].append(solution.translation)
                bar.update(len(chunk))
        kind = _ArrayKind.of(joints)
        return BodyFit(self, target, **{k: torch.cat(v) for k, v in parts.items()}, kind=kind)

    def shared_betas(self, target: Tensor) -> Tensor:
        """One shape for all frames of (B, J, 3) skeletons (metres, slots), repeated per frame: (B, K)."""
        check_skeleton(self.tree, target)
        relative = root_relative(self.tree, target)
        one_person = torch.zeros(len(target), dtype=torch.long, device=target.device)
        missing = joints_at_origin(self.tree, target) if self.solver.robust is not None else None
        return self.solver.shape(relative, one_person, missing)

    def _solve(self, chunk: Tensor, betas: Tensor | None = None) -> Solution:
        """One chunk: the recorded low-latency path for a few frames (paper mode, per-frame shapes: the recording
        holds no data-dependent branch), chunk workers for large batches."""
        if betas is not None:
            return map_chunks(
                lambda part, shape: self.solver.solve(part, self.network, betas=shape), (chunk, betas), self.workers
            )
        if self.solver.robust is None and len(chunk) <= MAX_LOW_LATENCY_BATCH:
            return self.low_latency.solve(chunk)
        return map_chunks(lambda part: self.solver.solve(part, self.network), (chunk,), self.workers)


@dataclass
class _ArrayKind:
    """How to hand arrays back: numpy with a float dtype, or torch with a dtype and device."""

    torch: bool
    dtype: object
    device: torch.device | None = None

    @classmethod
    def of(cls, joints) -> _ArrayKind:
        if torch.is_tensor(joints):
            dtype = joints.dtype if joints.dtype.is_floating_point else torch.float32
            return cls(True, dtype, joints.device)
        dtype = np.asarray(joints).dtype
        return cls(False, dtype if np.issubdtype(dtype, np.floating) else np.float32)

    def __call__(self, tensor: Tensor):
        if self.torch:
            return tensor.to(device=self.device, dtype=self.dtype)
        return tensor.detach().cpu().numpy().astype(self.dtype)


# Frames converted at once when a fit's parameters and joints are made (bounded temporaries: a 100,000-frame fit at
# once took ~1 GB more peak memory)
OUTPUT_CHUNK = 4096


@dataclass(repr=False)
class BodyFit:
    """The fitted bodies of B frames: smplx-convention parameters, joints and meshes.

    ``params`` (also readable as attributes, e.g. ``fit.body_pose``): global_orient (B, 3), body_pose (B, 69) for
    SMPL / (B, 63) for SMPL-X, SMPL-X's jaw_pose, leye_pose, reye_pose (B, 3), left_hand_pose and right_hand_pose
    (B, 45, full axis-angle: ``use_pca=False, flat_hand_mean=True``) and expression (B, 10, zero), betas (B, K),
    transl (B, 3); all axis-angle, in metres.
    """

    owner: BodySolver
    input_joints: Tensor  # (B, J, 3) the input in the tree's slots, metres
    solved_betas: Tensor  # (B, K) (the parameter ``betas``, as a tensor on the body model's device)
    rotmats: Tensor  # (B, P, 3, 3) local rotations
    translation: Tensor  # (B, 3)
    kind: _ArrayKind = field(repr=False, default=None)

    def __post_init__(self):
        self.params = {name: self.kind(value) for name, value in self._param_tensors().items()}
        posed = torch.cat(
            [
                self.owner.body_model.posed_joints(rotmats, betas)
                for rotmats, betas in zip(
                    self.rotmats.split(OUTPUT_CHUNK), self.solved_betas.split(OUTPUT_CHUNK), strict=True
                )
            ]
        )
        self.fitted_joints = posed + self.translation[:, None]

    def __getattr__(self, name: str):
        params = self.__dict__.get("params", {})
        if name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __len__(self) -> int:
        return len(self.solved_betas)

    def __repr__(self) -> str:
        return f"BodyFit({self.body}, {len(self)} frames, {self.method}, params: {', '.join(self.params)})"

    @property
    def method(self) -> str:
        return self.owner.method

    @property
    def body(self) -> str:
        return self.owner.tree.name

    @property
    def joints(self):
        """(B, J, 3) the fitted body's joints in the tree's slots, translation included."""
        return self.kind(self.fitted_joints)

    @property
    def faces(self) -> np.ndarray:
        """(F, 3) triangle vertex indices."""
        return self.owner.body_model.faces.cpu().numpy()

    def _param_tensors(self) -> dict[str, Tensor]:
        # (B, P, 3); roma is exact near pi
        rotvecs = torch.cat([roma.rotmat_to_rotvec(rotmats) for rotmats in self.rotmats.split(OUTPUT_CHUNK)])
        batch = len(rotvecs)
        out = {
            group.name: rotvecs[:, group.slots].reshape(batch, 3 * group.size) for group in self.owner.tree.pose_groups
        }
        if self.owner.tree.name == "smplx":
            out["expression"] = rotvecs.new_zeros(batch, 10)
        out["betas"] = self.solved_betas
        out["transl"] = self.translation
        return out

    @torch.no_grad()
    def vertex_tensor(self, frames=None, batch_size: int = 256) -> Tensor:
        """(B', V, 3) meshes of ``frames`` (all by default) as a tensor on the body model's device."""
        index = torch.arange(len(self)) if frames is None else torch.as_tensor(frames).reshape(-1)
        chunks = []
        for part in index.split(batch_size):
            mesh = self.owner.body_model(self.rotmats[part], self.solved_betas[part]).vertices
            chunks.append(mesh + self.translation[part, None])
        return torch.cat(chunks)

    def to_numpy(self) -> dict[str, np.ndarray]:
        """The parameters as numpy arrays (the input's float dtype for numpy input, float32 for torch input)."""
        return {k: v.detach().cpu().numpy() if torch.is_tensor(v) else v for k, v in self.params.items()}

    def to_torch(self) -> dict[str, Tensor]:
        """The parameters as CPU tensors, e.g. for ``smplx.SMPL(...)(**fit.to_torch())`` (float32 there)."""
        return {k: torch.as_tensor(v).float().cpu() for k, v in self.params.items()}

    def vertices(self, frames=None):
        """(B', V, 3) meshes of ``frames`` (all by default), translation included, in the input's array kind."""
        return self.kind(self.vertex_tensor(frames))

    # -- how well the fit matches the input ----------------------------------------------------------------------

    def mpjpe_mm(self) -> np.ndarray:
        """(B,) per-frame mean distance (mm) between the fitted and the input skeleton joints."""
        skeleton = list(self.owner.tree.skeleton)
        distance = (self.fitted_joints[:, skeleton] - self.input_joints[:, skeleton]).norm(dim=-1)
        return (distance.mean(dim=1) * MM_PER_M).cpu().numpy()

    def bone_residuals_mm(self) -> np.ndarray:
        """(B, n_bones) input bone length minus the fitted body's (mm), bones in ``skeleton_bones`` order."""
        bones = skeleton_bones(self.owner.tree)
        parents, children = [p for p, _ in bones], [c for _, c in bones]

        def lengths(joints: Tensor) -> Tensor:
            return (joints[:, children] - joints[:, parents]).norm(dim=-1)

        return ((lengths(self.input_joints) - lengths(self.fitted_joints)) * MM_PER_M).cpu().numpy()


def _unit_scale(tree: KinematicTree, joints: Tensor, units: str) -> float:
    """The factor to metres; 'auto' accepts metres only and names the units it sees otherwise."""
    if units not in ("auto", *UNIT_SCALE):
        raise ValueError(f"units={units!r}: use 'auto', 'm', 'cm' or 'mm'")
    if units != "auto":
        return UNIT_SCALE[units]
    median = median_bone_length(tree, joints)
    if median > MAX_MEDIAN_BONE_M:
        guess = "mm" if median > 30.0 else "cm"
        raise ValueError(
            f"the median bone is {median:.1f} long: the joints look like {guess}, the solver expects "
            f"metres; pass units='{guess}' (fit.py: --units {guess})"
        )
    return 1.0


def _short_list(values, limit: int = 10) -> str:
    values = [int(v) for v in values]
    return ", ".join(map(str, values[:limit])) + (", ..." if len(values) > limit else "")
