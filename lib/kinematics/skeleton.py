"""Forward kinematics of a bare skeleton (no mesh): rest joints and local rotations -> posed joints."""
from __future__ import annotations

import torch
from torch import Tensor

from lib.kinematics.tree import KinematicTree


def root_relative(tree: KinematicTree, joints: Tensor) -> Tensor:
    """(B, J, 3) joints with the tree's root moved to the origin."""
    return joints - joints[:, tree.root:tree.root + 1]


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
