"""The stages composed: skeleton -> betas -> rest joints -> PR-C -> AnalyIK -> [PAN twists -> MixIK] -> mesh.

Read in this order: :mod:`shape_inverse`, :mod:`refine`, :mod:`analytic_ik`, :mod:`twist`, then this file.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lib.kinematics.skeleton import root_relative
from lib.kinematics.tree import KinematicTree
from lib.solver.analytic_ik import solve_rotations
from lib.solver.refine import refine_bone_lengths
from lib.solver.shape_inverse import ShapeInverse
from lib.solver.twist import phi_per_joint

# Skeletons arrive in metres; a median bone this long means the input is in millimetres (or centimetres).
MAX_MEDIAN_BONE_M = 1.0


@dataclass
class Solution:
    """What the solver found for a batch of skeletons."""

    betas: Tensor      # (B, K) shape from Shape Inverse
    rest: Tensor       # (B, J, 3) root-relative rest joints of that shape
    refined: Tensor    # (B, J, 3) root-relative targets with the rest bone lengths (PR-C)
    rotmats: Tensor    # (B, P, 3, 3) local rotations (AnalyIK, or MixIK when twists were given)


def check_skeleton(tree: KinematicTree, joints: Tensor, name: str = "joints") -> None:
    """One clear error for the usual ways a skeleton goes wrong (shape, NaN, units)."""
    if joints.ndim != 3 or joints.shape[1:] != (tree.num_joints, 3):
        raise ValueError(f"{name} must have shape (B, {tree.num_joints}, 3) for the {tree.name} skeleton, "
                         f"got {tuple(joints.shape)}")
    if not torch.isfinite(joints).all():
        bad = (~torch.isfinite(joints)).any(dim=-1).any(dim=0).nonzero().flatten().tolist()
        raise ValueError(f"{name} contain NaN/inf at joints {bad}; remove or fill those frames first")
    ends = list(tree.ik_child.values())
    bones = (joints[:, ends] - joints[:, [tree.parents[j] for j in ends]]).norm(dim=-1)
    if bones.median() > MAX_MEDIAN_BONE_M:
        raise ValueError(f"{name}: median bone length is {bones.median().item():.1f}; the solver expects metres "
                         "(divide millimetres by 1000)")


class SkeletonSolver(torch.nn.Module):
    """Skeleton (B, J, 3) in metres -> betas and local rotations, for one body model and its tree.

    Args:
        tree: the body model's kinematic tree.
        rest_joints: callable betas (B, K) -> rest joints (B, J, 3) (``BodyModel.rest_joints``: a linear map).
        shape_inverse: bone lengths -> betas.
        pr_variant: 'v1', 'v2' or 'none' (METHOD.md section 3).
    """

    def __init__(self, tree: KinematicTree, rest_joints, shape_inverse: ShapeInverse, pr_variant: str = "v1"):
        super().__init__()
        self.tree = tree
        self.rest_joints = rest_joints
        self.shape_inverse = shape_inverse
        self.pr_variant = pr_variant

    def rest_skeleton(self, betas: Tensor) -> Tensor:
        return root_relative(self.tree, self.rest_joints(betas))

    def analytic(self, joints: Tensor) -> Solution:
        """Shape Inverse, PR-C and AnalyIK (twist removed)."""
        check_skeleton(self.tree, joints)
        joints = root_relative(self.tree, joints)
        betas = self.shape_inverse(joints)
        rest = self.rest_skeleton(betas)
        refined = refine_bone_lengths(self.tree, rest, joints, self.pr_variant)
        return Solution(betas, rest, refined, solve_rotations(self.tree, rest, refined))

    def twist_solve(self, solution: Solution, target: Tensor, part_phis: list[Tensor]) -> Solution:
        """MixIK on ``target`` (B, J, 3) with per-part (cos, sin) twists (list of (B, n_part, 2))."""
        target = root_relative(self.tree, target)
        phi = phi_per_joint(self.tree, part_phis)
        rotmats = solve_rotations(self.tree, solution.rest, target, phi)
        return Solution(solution.betas, solution.rest, solution.refined, rotmats)
