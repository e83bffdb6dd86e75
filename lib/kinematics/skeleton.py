"""A bare skeleton (no mesh) read through its tree: root-relative joints, bone lengths, two-direction orientation of
a joint, and forward kinematics (rest joints and local rotations -> posed joints)."""

from __future__ import annotations

import torch
from torch import Tensor

from lib.kinematics.rotations import rigid_rotation, two_direction_orientation
from lib.kinematics.tree import KinematicTree

MM_PER_M = 1000.0

# How a two-direction joint's orientation is solved: 'directions' = the paper's primary / secondary rule (METHOD.md
# section 4); 'rigid' = a least-squares rotation over the joint and all its children (robust to joint noise).
ORIENTATION_FITS = ("directions", "rigid")


def root_relative(tree: KinematicTree, joints: Tensor) -> Tensor:
    """(B, J, 3) joints with the tree's root moved to the origin."""
    return joints - joints[:, tree.root : tree.root + 1]


def bone_lengths(tree: KinematicTree, joints: Tensor) -> Tensor:
    """(B, J, 3) joints in metres -> (B, G) bone lengths in millimetres, one per ``tree.bone_groups`` entry.

    Each entry is the mean length of the bones ending at the group's joints (left/right pairs averaged).
    """
    ends = [j for group in tree.bone_groups for j in group]
    starts = [tree.parents[j] for j in ends]
    lengths = (joints[:, ends] - joints[:, starts]).norm(dim=-1) * MM_PER_M
    out, k = [], 0
    for group in tree.bone_groups:
        out.append(lengths[:, k : k + len(group)].mean(dim=1))
        k += len(group)
    return torch.stack(out, dim=1)


def _mean_offset(joints: Tensor, origin: int, targets: tuple[int, ...]) -> Tensor:
    """Mean of ``joints[:, c] - joints[:, origin]`` over ``targets``: (B, 3)."""
    return (joints[:, list(targets)] - joints[:, origin : origin + 1]).mean(dim=1)


def two_direction_rotation(
    tree: KinematicTree,
    joint: int,
    rest: Tensor,
    target: Tensor,
    parent_rotation: Tensor | None = None,
    fit: str = "directions",
) -> Tensor:
    """Local orientation of a two-direction joint from rest joints and target joints (B, J, 3) -> (B, 3, 3).

    Target offsets are brought into the parent's frame with ``parent_rotation`` (B, 3, 3) when given. ``fit``:
    'directions' (the paper's rule) or 'rigid' (:func:`rigid_group_rotation`).
    """
    if fit == "rigid":
        return rigid_group_rotation(tree, joint, rest, target, parent_rotation)
    if fit != "directions":
        raise ValueError(f"unknown orientation fit {fit!r}; use one of {ORIENTATION_FITS}")
    spec = tree.two_direction_by_joint[joint]
    a_rest, c_rest = _mean_offset(rest, joint, spec.primary), _mean_offset(rest, joint, spec.secondary)
    a_posed, c_posed = _mean_offset(target, joint, spec.primary), _mean_offset(target, joint, spec.secondary)
    if parent_rotation is not None:
        to_parent = parent_rotation.transpose(-1, -2)
        a_posed, c_posed = (to_parent @ a_posed[..., None])[..., 0], (to_parent @ c_posed[..., None])[..., 0]
    return two_direction_orientation(a_rest, a_posed, c_rest, c_posed)


def rigid_group_rotation(
    tree: KinematicTree, joint: int, rest: Tensor, target: Tensor, parent_rotation: Tensor | None = None
) -> Tensor:
    """Local orientation of ``joint`` as the least-squares rotation of its rigid group: (B, 3, 3).

    The group is the joint and all its children, which its rotation alone places (pelvis: both hips and spine1;
    spine3: neck and both collars; an SMPL-X wrist: the five finger bases). Every point counts equally, so the turn
    about a short primary bone is fixed by the wide pair of children (the hips, 20 cm apart) rather than by a small
    offset, and one joint's noise is averaged with the others'. Rest and target joints (B, J, 3); target offsets are
    brought into the parent's frame with ``parent_rotation`` (B, 3, 3) when given.
    """
    group = [joint, *tree.children[joint]]
    rest_points = rest[:, group] - rest[:, joint : joint + 1]
    target_points = target[:, group] - target[:, joint : joint + 1]
    if parent_rotation is not None:
        target_points = target_points @ parent_rotation  # rows p -> (P^T p)^T
    return rigid_rotation(rest_points, target_points)


def global_rotations(tree: KinematicTree, local_rotmats: Tensor) -> dict[int, Tensor]:
    """Global rotation of every skeleton slot (slots past the pose joints inherit their parent's): {slot: (B,3,3)}."""
    glob = {tree.root: local_rotmats[:, tree.root]}
    for level in tree.levels:
        for j in level:
            parent = glob[tree.parents[j]]
            glob[j] = parent @ local_rotmats[:, j] if j < tree.num_pose_joints else parent
    return glob


def forward_kinematics(tree: KinematicTree, rest: Tensor, local_rotmats: Tensor) -> Tensor:
    """Posed skeleton joints, root-relative, rotating each rest bone rigidly with its parent.

    Args:
        rest: (B, J, 3) rest joints.
        local_rotmats: (B, P, 3, 3) local rotations, root first.
    Returns:
        (B, J, 3) posed joints with the root at the origin; slots outside the skeleton are zero. For joints the body
        model regresses from the skeleton this equals the model's posed joints; vertex-based joints (SMPL-X
        fingertips) are approximated as rigid with their parent.
    """
    glob = global_rotations(tree, local_rotmats)
    posed = [torch.zeros_like(rest[:, 0])] * tree.num_joints
    for level in tree.levels:
        for j in level:
            p = tree.parents[j]
            posed[j] = posed[p] + (glob[p] @ (rest[:, j] - rest[:, p])[..., None])[..., 0]
    return torch.stack(posed, dim=1)
