"""From anatomical angles to axis-angle: the limit tables' axes, optionally aligned to a body model's rest bones.

Given a body model's rest joints (``rest_joints=``, as ``make_synthetic_db`` does), each twist axis follows the
model's rest bone, so the sampled twist is exactly the stored twist at beta = 0. Right-side twists are stored with
the opposite sign of the anatomical angle (the twist is measured about +rest bone).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import roma
import torch

from lib.data.synthetic.limits import HAND_TABLE, SMPL_TABLE
from lib.kinematics.tree import TREES, KinematicTree

# Largest angle (degrees) between an idealised axis and the model's bone for the bone to be used.
_MAX_AXIS_DEVIATION = 60.0
_MIRROR = np.array([-1.0, 1.0, 1.0])


def _aligned_axes(axes: np.ndarray, bones: np.ndarray) -> np.ndarray:
    """axes (J, 3, 3) rows [e1, e2, u] (left-side convention); bones (J, 3) the model's rest bone vectors in the
    same convention (right-side bones mirrored), NaN rows kept idealised. Returns axes with u along the bone and
    e1, e2 the idealised swing axes made perpendicular to it (Gram-Schmidt, signs kept)."""
    out = axes.copy()
    for row, bone in enumerate(bones):
        length = np.linalg.norm(bone)
        if not np.isfinite(length) or length < 1e-9:
            continue
        u = bone / length
        if np.degrees(np.arccos(np.clip(u @ axes[row, 2], -1.0, 1.0))) > _MAX_AXIS_DEVIATION:
            continue
        e1 = axes[row, 0] - (axes[row, 0] @ u) * u
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(u, e1)
        out[row] = np.stack([e1, e2 if e2 @ axes[row, 1] >= 0 else -e2, u])
    return out


@dataclass(frozen=True)
class Axes:
    """Per-joint axes for one sampling run: rows of the tree's body pose slots, left hand, right hand (the hand
    table's rows each)."""

    body: np.ndarray
    left_hand: np.ndarray
    right_hand: np.ndarray


def _rest_bones(
    tree: KinematicTree, rest: np.ndarray, slots: Sequence[int], ideal: np.ndarray, mirror: np.ndarray
) -> np.ndarray:
    """Rest bone of each slot (to its child most aligned with the idealised axis: spine3 -> neck, an SMPL-X wrist ->
    a finger base), in the left-side convention (right-side bones mirrored); NaN for leaves."""
    bones = np.full((len(slots), 3), np.nan)
    for row, slot in enumerate(slots):
        kids = tree.children.get(slot, ())
        if not kids:
            continue
        candidates = (rest[list(kids)] - rest[slot]) * (_MIRROR if mirror[row] else 1.0)
        unit = candidates / np.maximum(np.linalg.norm(candidates, axis=1, keepdims=True), 1e-12)
        bones[row] = candidates[int(np.argmax(unit @ ideal[row]))]
    return bones


def axes_for(body: str, rest_joints: np.ndarray | None) -> Axes:
    """Axes of the body pose slots (joints after the root) and of both hands, idealised or aligned to
    ``rest_joints`` ((J, 3) in the tree's slots, METHOD.md section 1)."""
    tree = TREES[body]
    body_slots = tree.pose_slots("body_pose")
    body_axes = SMPL_TABLE.axes[body_slots]
    left, right = HAND_TABLE.axes, HAND_TABLE.axes
    if rest_joints is None:
        return Axes(body_axes, left, right)
    rest = np.asarray(rest_joints, dtype=np.float64)
    need = tree.num_joints
    if rest.ndim != 2 or rest.shape[1] != 3 or len(rest) < need:
        raise ValueError(f"rest_joints must be ({need}, 3) for {body}, got {rest.shape}")
    body_axes = _aligned_axes(
        body_axes, _rest_bones(tree, rest, body_slots, body_axes[:, 2], SMPL_TABLE.mirror[body_slots])
    )
    if tree.hands:  # each hand's pose slots, in the hand table's order
        (left_slots, right_slots), hand = tree.hand_pose_slots, len(HAND_TABLE)
        left = _aligned_axes(left, _rest_bones(tree, rest, left_slots, left[:, 2], np.zeros(hand, bool)))
        right = _aligned_axes(right, _rest_bones(tree, rest, right_slots, right[:, 2], np.ones(hand, bool)))
    return Axes(body_axes, left, right)


def mirror_rotvec(rotvec: np.ndarray | torch.Tensor):
    """Mirror rotation vectors through the sagittal plane (x -> -x): (x, y, z) -> (x, -y, -z)."""
    sign = np.array([1.0, -1.0, -1.0])
    if torch.is_tensor(rotvec):
        return rotvec * torch.as_tensor(sign, dtype=rotvec.dtype, device=rotvec.device)
    return rotvec * sign


def dofs_to_rotvec(dofs: np.ndarray, axes: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """Anatomical angles (..., J, 3) degrees -> axis-angle (..., J, 3): exp(a1 e1 + a2 e2) @ exp(t u), mirrored
    for the joints flagged in ``mirror`` (J,)."""
    rad = np.deg2rad(dofs)
    swing = rad[..., 0:1] * axes[:, 0] + rad[..., 1:2] * axes[:, 1]
    twist = rad[..., 2:3] * axes[:, 2]
    rotvec = compose_rotvecs(swing, twist)
    return np.where(mirror[:, None], mirror_rotvec(rotvec), rotvec)


def compose_rotvecs(*rotvecs: np.ndarray) -> np.ndarray:
    """Axis-angle (angle in [0, pi]) of the product R(r1) @ R(r2) @ ... of float64 arrays (..., 3) of one shape."""
    return roma.rotvec_composition([torch.as_tensor(r, dtype=torch.float64) for r in rotvecs]).numpy()
