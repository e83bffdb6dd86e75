"""Pose Refinement "PR-C" (METHOD.md section 3): move target joints so every bone has the body's rest length.

Walking the tree from the root outwards, each joint is re-placed from its already-placed parent:
- children of a two-direction joint (pelvis, spine3, SMPL-X wrists) are placed rigidly by that joint's
  orientation, solved between the rest skeleton and the targets (with the joint itself moved to its placed spot);
- every other joint is aimed from its placed parent at its target, at the rest bone length (V1);
- V2 additionally re-solves each two-bone segment (A, B, C) with a few "move" iterations that turn A->B so that
  A->C points at C's target, then aim C from B.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lib.kinematics.rotations import minimal_rotation, normalize
from lib.kinematics.skeleton import root_relative, two_direction_rotation
from lib.kinematics.slots import take_slots
from lib.kinematics.tree import KinematicTree

VARIANTS = ("v1", "v2", "none")


def refine_bone_lengths(
    tree: KinematicTree,
    rest: Tensor,
    target: Tensor,
    variant: str = "v1",
    iterations: int = 3,
    orientation_fit: str = "directions",
) -> Tensor:
    """Target joints with the rest skeleton's bone lengths.

    Args:
        rest: (B, J, 3) rest joints of the body whose bone lengths are wanted.
        target: (B, J, 3) target joints (any origin).
        variant: 'v1' (aim), 'v2' (aim plus two-bone moves) or 'none' (only root-relative).
        iterations: move iterations per segment for 'v2'.
        orientation_fit: how two-direction joints are oriented, 'directions' (the paper) or 'rigid' (robust).
    Returns:
        (B, J, 3) root-relative refined joints; slots outside the tree's skeleton are copied from the target.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown PR-C variant {variant!r}; use one of {VARIANTS}")
    root = tree.root
    rest, target = root_relative(tree, rest), root_relative(tree, target)
    if variant == "none":
        return target

    placed: list[Tensor] = list(target.unbind(dim=1))
    placed[root] = torch.zeros_like(placed[root])
    effective_target = target  # two-direction joints see themselves at their placed spot
    orientation = {root: two_direction_rotation(tree, root, rest, target, fit=orientation_fit)}
    segments_by_end = {c: (a, b, c) for a, b, c in tree.refine_segments} if variant == "v2" else {}

    for level in tree.levels:
        rigid = [j for j in level if tree.parents[j] in orientation]
        aimed = [j for j in level if tree.parents[j] not in orientation]
        for j in rigid:
            p = tree.parents[j]
            placed[j] = placed[p] + (orientation[p] @ (rest[:, j] - rest[:, p])[..., None])[..., 0]
        if aimed:
            parents = [tree.parents[j] for j in aimed]
            from_parent = torch.stack([placed[p] for p in parents], dim=1)
            length = (take_slots(rest, aimed) - take_slots(rest, parents)).norm(dim=-1, keepdim=True)
            new = from_parent + length * normalize(take_slots(target, aimed) - from_parent)
            for k, j in enumerate(aimed):
                placed[j] = new[:, k]
        for j in level:
            if j in segments_by_end:
                a, b, c = segments_by_end[j]
                placed[b], placed[c] = _two_bone_move(placed[a], placed[b], target[:, c], rest, (a, b, c), iterations)
        for j in level:
            if j in tree.two_direction_by_joint:
                effective_target = effective_target.clone()
                effective_target[:, j] = placed[j]
                orientation[j] = two_direction_rotation(tree, j, rest, effective_target, fit=orientation_fit)
    return torch.stack(placed, dim=1)


def _two_bone_move(
    a: Tensor, b: Tensor, c_target: Tensor, rest: Tensor, segment: tuple[int, int, int], iterations: int
) -> tuple[Tensor, Tensor]:
    """Re-place B and C of segment (A, B, C) at rest lengths so that C approaches its target: (B, 3) each."""
    ia, ib, ic = segment
    len_ab = (rest[:, ib] - rest[:, ia]).norm(dim=-1, keepdim=True)
    len_bc = (rest[:, ic] - rest[:, ib]).norm(dim=-1, keepdim=True)
    c = b + len_bc * normalize(c_target - b)
    for _ in range(iterations):
        turn = minimal_rotation(c - a, c_target - a)
        b = a + len_ab * normalize((turn @ (b - a)[..., None])[..., 0])
        c = b + len_bc * normalize(c_target - b)
    return b, c
