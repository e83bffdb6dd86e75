"""Twist angles: the part of each joint rotation about its child bone that joint positions cannot show.

``twist_angle`` vectors hold one angle per non-root pose joint (entry k belongs to joint k + 1), as the official
databases store them (METHOD.md section 6). A twist parameter ``phi`` is the (cos, sin) pair of such an angle.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lib.kinematics.rotations import twist_angle
from lib.kinematics.tree import KinematicTree


def twist_axes(tree: KinematicTree, rest_joints: Tensor) -> tuple[list[int], Tensor]:
    """Rest bone of each twisting joint's twist child: (joints, (B, n, 3))."""
    joints = sorted(tree.twist_child)
    children = [tree.twist_child[j] for j in joints]
    return joints, rest_joints[:, children] - rest_joints[:, joints]


def twist_angles(tree: KinematicTree, rest_joints: Tensor, local_rotmats: Tensor) -> Tensor:
    """Ground-truth twist angles from a pose.

    Args:
        rest_joints: (B, J, 3) rest joints of the body (any origin).
        local_rotmats: (B, P, 3, 3) local joint rotations (root included).
    Returns:
        (B, P - 1) signed twist angles in radians; joints without a child (leaves) get 0.
    """
    batch = rest_joints.shape[0]
    angles = rest_joints.new_zeros(batch, tree.num_pose_joints)
    joints, axes = twist_axes(tree, rest_joints)
    angles[:, joints] = twist_angle(local_rotmats[:, joints], axes)
    return angles[:, 1:]


def angles_to_phi(angles: Tensor) -> Tensor:
    """(..., n) angles -> (..., n, 2) (cos, sin)."""
    return torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)


def part_phis(tree: KinematicTree, angles: Tensor) -> list[Tensor]:
    """Ground-truth twist parameters per part, in the network's output order: list of (B, n_part, 2)."""
    return [angles_to_phi(angles[:, list(part.twist_indices)]) for part in tree.parts]


def phi_per_joint(tree: KinematicTree, parts: list[Tensor], eps: float = 1e-8) -> Tensor:
    """Scatter per-part (cos, sin) into a (B, P, 2) table, identity (1, 0) for joints no part twists.

    Each pair is normalised to unit length first (eps guards a zero prediction).
    """
    if len(parts) != len(tree.parts):
        raise ValueError(
            f"expected {len(tree.parts)} part outputs for the {tree.name} tree "
            f"({', '.join(p.name for p in tree.parts)}), got {len(parts)}"
        )
    batch = parts[0].shape[0]
    for part, phi in zip(tree.parts, parts, strict=True):
        if phi.shape != (batch, len(part.twist_joints), 2):
            raise ValueError(
                f"part {part.name}: expected twists of shape ({batch}, {len(part.twist_joints)}, 2), "
                f"got {tuple(phi.shape)}"
            )
    table = parts[0].new_zeros(batch, tree.num_pose_joints, 2)
    table[..., 0] = 1.0
    for part, phi in zip(tree.parts, parts, strict=True):
        table[:, list(part.twist_joints)] = phi / phi.norm(dim=-1, keepdim=True).clamp_min(eps)
    return table
