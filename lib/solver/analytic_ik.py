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

from dataclasses import dataclass

import torch
from torch import Tensor

from lib.kinematics.rotations import minimal_rotation, rotation_about_axis
from lib.kinematics.skeleton import two_direction_rotation
from lib.kinematics.slots import take_slots
from lib.kinematics.tree import KinematicTree


@dataclass(frozen=True)
class _SwingPlan:
    """A tree's swing joints ordered by level, so each level's joints are one contiguous slice of all of them."""

    joints: tuple[int, ...]  # swing joints (one IK child each), level by level
    children: tuple[int, ...]  # their IK children
    parents: tuple[int, ...]  # their parents
    level_slices: tuple[slice, ...]  # per tree level: its swing joints' positions in ``joints``
    relative: tuple[int, ...]  # positions (in ``joints``) of relative joints (SMPL-X fingers)


_PLANS: dict[int, tuple[KinematicTree, _SwingPlan]] = {}


def _swing_plan(tree: KinematicTree) -> _SwingPlan:
    cached = _PLANS.get(id(tree))
    if cached is None or cached[0] is not tree:
        joints, slices = [], []
        for level in tree.levels:
            start = len(joints)
            joints += [j for j in level if j in tree.ik_child]
            slices.append(slice(start, len(joints)))
        plan = _SwingPlan(
            tuple(joints),
            tuple(tree.ik_child[j] for j in joints),
            tuple(tree.parents[j] for j in joints),
            tuple(slices),
            tuple(k for k, j in enumerate(joints) if j in tree.relative_joints),
        )
        cached = _PLANS[id(tree)] = (tree, plan)
    return cached[1]


def solve_rotations(
    tree: KinematicTree, rest: Tensor, target: Tensor, phi: Tensor | None = None, orientation_fit: str = "directions"
) -> Tensor:
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

    Everything that does not depend on the parents' rotations is computed once for all swing joints before the
    walk (rest and target bones, the twist rotations); the walk itself does one batched product and one minimal
    rotation per level.
    """
    batch, dtype, device = rest.shape[0], rest.dtype, rest.device
    eye = torch.eye(3, dtype=dtype, device=device).expand(batch, 3, 3)
    local: list[Tensor] = [eye] * tree.num_pose_joints
    glob: dict[int, Tensor] = {}
    plan = _swing_plan(tree)
    joints, children = list(plan.joints), list(plan.children)
    rest_bones = take_slots(rest, children) - take_slots(rest, joints)  # (B, S, 3)
    target_bones = (take_slots(target, children) - take_slots(target, joints))[..., None]  # (B, S, 3, 1)
    twists = None
    if phi is not None:
        cos, sin = take_slots(phi, joints).unbind(-1)
        twists = rotation_about_axis(rest_bones, cos, sin)  # (B, S, 3, 3)
    relative = list(plan.relative)
    if relative:
        rel_joints, rel_parents = [joints[k] for k in relative], [plan.parents[k] for k in relative]
        rest_parent_bones = take_slots(rest, rel_joints) - take_slots(rest, rel_parents)
        target_parent_bones = (take_slots(target, rel_joints) - take_slots(target, rel_parents))[..., None]

    root = tree.root
    local[root] = glob[root] = two_direction_rotation(tree, root, rest, target, fit=orientation_fit)
    for level, positions in zip(tree.levels, plan.level_slices, strict=True):
        start, stop = positions.start, positions.stop
        if stop > start:
            parent_glob = torch.stack([glob[p] for p in plan.parents[positions]], dim=1)  # (B, n, 3, 3)
            to_parent = parent_glob.transpose(-1, -2)
            rotation = minimal_rotation(rest_bones[:, positions], (to_parent @ target_bones[:, positions])[..., 0])
            here = [k - start for k in relative if start <= k < stop]
            if here:
                there = [relative.index(k + start) for k in here]
                posed_parent = (to_parent[:, here] @ target_parent_bones[:, there])[..., 0]
                correction = minimal_rotation(rest_parent_bones[:, there], posed_parent).transpose(-1, -2)
                rotation = rotation.clone()
                rotation[:, here] = correction @ rotation[:, here]
            if twists is not None:
                rotation = rotation @ twists[:, positions]
            level_glob = parent_glob @ rotation  # the level's global rotations in one product
            for k, j in enumerate(plan.joints[positions]):
                local[j], glob[j] = rotation[:, k], level_glob[:, k]
        for j in level:
            if j in glob or j >= tree.num_pose_joints:
                continue
            if j in tree.two_direction_by_joint:
                local[j] = two_direction_rotation(tree, j, rest, target, glob[tree.parents[j]], orientation_fit)
                glob[j] = glob[tree.parents[j]] @ local[j]
            else:  # identity: leaves, jaw, eyes
                glob[j] = glob[tree.parents[j]]
    return torch.stack(local, dim=1)
