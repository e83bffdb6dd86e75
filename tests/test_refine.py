"""PR-C: refined skeletons have exactly the rest bone lengths and keep directions."""

import pytest
import torch
from conftest import posed_skeleton, random_pose, t_pose_skeleton

from lib.kinematics.skeleton import forward_kinematics
from lib.solver.analytic_ik import solve_rotations
from lib.solver.refine import refine_bone_lengths


def bone_lengths_of(tree, joints):
    bones = [j for j in tree.skeleton if j != tree.root]
    return (joints[:, bones] - joints[:, [tree.parents[j] for j in bones]]).norm(dim=-1)


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_refined_bones_have_rest_lengths(tree, variant):
    rest = t_pose_skeleton(tree)[None].expand(32, -1, -1)
    target = posed_skeleton(tree, random_pose(tree, 32), rest)
    gen = torch.Generator().manual_seed(1)
    noisy = target * 1.07 + 0.01 * torch.randn(target.shape, generator=gen, dtype=target.dtype) + 0.3
    refined = refine_bone_lengths(tree, rest, noisy, variant)
    assert torch.allclose(bone_lengths_of(tree, refined), bone_lengths_of(tree, rest), atol=1e-12)
    assert refined[:, tree.root].abs().max() == 0
    # refined joints stay close to the (root-relative) targets, and AnalyIK then hits them exactly
    assert (refined - (noisy - noisy[:, :1]))[:, list(tree.skeleton)].norm(dim=-1).mean() < 0.05
    solved = solve_rotations(tree, rest, refined)
    posed = forward_kinematics(tree, rest, solved)
    assert (posed - refined)[:, list(tree.skeleton)].norm(dim=-1).max() < 1e-9


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_consistent_skeleton_is_left_unchanged(tree, variant):
    rest = t_pose_skeleton(tree)[None].expand(16, -1, -1)
    target = posed_skeleton(tree, random_pose(tree, 16, seed=4), rest)
    refined = refine_bone_lengths(tree, rest, target, variant)
    assert (refined - target)[:, list(tree.skeleton)].abs().max() < 1e-9


def test_v2_brings_segment_ends_closer_than_v1(tree):
    rest = t_pose_skeleton(tree)[None].expand(64, -1, -1)
    target = posed_skeleton(tree, random_pose(tree, 64, seed=5), rest)
    noisy = target + 0.02 * torch.randn(target.shape, generator=torch.Generator().manual_seed(2), dtype=target.dtype)
    ends = [c for _, _, c in tree.refine_segments]
    err = {
        v: (refine_bone_lengths(tree, rest, noisy, v) - (noisy - noisy[:, :1]))[:, ends].norm(dim=-1).mean()
        for v in ("v1", "v2")
    }
    assert err["v2"] < err["v1"]


def test_none_variant_and_unknown_variant(tree):
    rest = t_pose_skeleton(tree)[None]
    target = rest + 1.0
    assert torch.equal(refine_bone_lengths(tree, rest, target, "none"), target - target[:, :1])
    with pytest.raises(ValueError, match="unknown PR-C variant"):
        refine_bone_lengths(tree, rest, target, "v3")
