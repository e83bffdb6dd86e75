"""Analytical IK (METHOD.md section 5): local joint rotations that place a skeleton's bones on target joints.

One walk down the tree, level by level (all joints of one depth at once). Each joint's rotation is chosen by what
the tree says about it:
- two-direction joints (root, spine3, SMPL-X wrists): the full orientation from two directions (section 4);
- joints with one child: the minimal rotation ("swing") taking the rest child bone onto the target child bone,
  optionally followed by a twist about the rest child bone (MixIK); relative joints (SMPL-X fingers) first undo
  the misalignment of their own parent bone;
- everything else (leaves, jaw, eyes): identity.
Without twists this is AnalyIK with twist removal; with the twists of :mod:`lib.solver.twist` it is MixIK. The
parts of the reference's MixIK are independent here because every part boundary is a two-direction joint, whose
global orientation the targets fix whatever its parent's twist: walking the whole tree once with the twist table
gives the same rotations as the reference's part-by-part refinement.
"""
from __future__ import annotations

import torch
from torch import Tensor

from lib.kinematics.rotations import minimal_rotation, rotation_about_axis
from lib.kinematics.skeleton import two_direction_rotation
from lib.kinematics.tree import KinematicTree


def solve_rotations(tree: KinematicTree, rest: Tensor, target: Tensor, phi: Tensor | None = None,
                    orientation_fit: str = "directions") -> Tensor:
    """Local rotations placing the rest skeleton's bones along the target skeleton.

    Args:
        rest: (B, J, 3) rest joints of the body (root-relative or not: only differences are used).
        target: (B, J, 3) target joints (for exact placement their bone lengths should equal the rest ones).
        phi: optional (B, P, 2) twist (cos, sin) per pose joint, applied about each swing joint's rest child bone;
            None = no twist (AnalyIK).
        orientation_fit: how two-direction joints are solved, 'directions' (the paper) or 'rigid'
            (:func:`lib.kinematics.skeleton.rigid_group_rotation`, the robust mode).
    Returns:
        (B, P, 3, 3) local rotation matrices, P = ``tree.num_pose_joints``, root first.
    """
    batch, dtype, device = rest.shape[0], rest.dtype, rest.device
    eye = torch.eye(3, dtype=dtype, device=device).expand(batch, 3, 3)
    local: list[Tensor] = [eye] * tree.num_pose_joints
    glob: dict[int, Tensor] = {}

    root = tree.root
    local[root] = glob[root] = two_direction_rotation(tree, root, rest, target, fit=orientation_fit)
    for level in tree.levels:
        swing_joints = [j for j in level if j in tree.ik_child]
        if swing_joints:
            rotations = _swing_rotations(tree, swing_joints, rest, target, glob, phi)
            for k, j in enumerate(swing_joints):
                local[j] = rotations[:, k]
        for j in level:
            if j in tree.two_direction_by_joint:
                local[j] = two_direction_rotation(tree, j, rest, target, glob[tree.parents[j]], orientation_fit)
            if j < tree.num_pose_joints:
                glob[j] = glob[tree.parents[j]] @ local[j]
    return torch.stack(local, dim=1)


def _swing_rotations(tree: KinematicTree, joints: list[int], rest: Tensor, target: Tensor,
                     glob: dict[int, Tensor], phi: Tensor | None) -> Tensor:
    """Swing (and optional twist) rotations of same-depth joints with one child each: (B, n, 3, 3)."""
    parents = [tree.parents[j] for j in joints]
    children = [tree.ik_child[j] for j in joints]
    to_parent = torch.stack([glob[p] for p in parents], dim=1).transpose(-1, -2)  # (B, n, 3, 3)

    rest_bone = rest[:, children] - rest[:, joints]
    posed_bone = (to_parent @ (target[:, children] - target[:, joints])[..., None])[..., 0]
    rotation = minimal_rotation(rest_bone, posed_bone)

    relative = [k for k, j in enumerate(joints) if j in tree.relative_joints]
    if relative:
        j_rel = [joints[k] for k in relative]
        p_rel = [parents[k] for k in relative]
        rest_parent_bone = rest[:, j_rel] - rest[:, p_rel]
        posed_parent_bone = (to_parent[:, relative] @ (target[:, j_rel] - target[:, p_rel])[..., None])[..., 0]
        correction = minimal_rotation(rest_parent_bone, posed_parent_bone).transpose(-1, -2)
        rotation = rotation.clone()
        rotation[:, relative] = correction @ rotation[:, relative]

    if phi is not None:
        cos, sin = phi[:, joints].unbind(-1)
        rotation = rotation @ rotation_about_axis(rest_bone, cos, sin)
    return rotation
