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


def test_defaults_are_v1_and_three_moves(tree):
    rest = t_pose_skeleton(tree)[None].expand(2, -1, -1)
    target = posed_skeleton(tree, random_pose(tree, 2, seed=4), rest)
    target = target + 0.02 * torch.randn(target.shape, generator=torch.Generator().manual_seed(5), dtype=target.dtype)
    assert torch.equal(refine_bone_lengths(tree, rest, target), refine_bone_lengths(tree, rest, target, "v1"))
    v2 = refine_bone_lengths(tree, rest, target, "v2")
    assert torch.equal(v2, refine_bone_lengths(tree, rest, target, "v2", iterations=3))
    assert not torch.equal(v2, refine_bone_lengths(tree, rest, target, "v2", iterations=4))  # the count matters


def test_the_orientation_fit_reaches_every_two_direction_joint(tree):
    # a two-direction joint below the root (spine3; an SMPL-X wrist) places its children by the asked fit, against
    # the targets with itself at its placed spot
    from lib.kinematics.skeleton import two_direction_rotation

    rest = t_pose_skeleton(tree)[None].expand(3, -1, -1)
    target = posed_skeleton(tree, random_pose(tree, 3, seed=6), rest)
    target = target + 0.01 * torch.randn(target.shape, generator=torch.Generator().manual_seed(7), dtype=target.dtype)
    target = target - target[:, :1]
    for fit in ("rigid", "directions"):
        refined = refine_bone_lengths(tree, rest, target, "v1", orientation_fit=fit)
        for spec in tree.two_direction[1:]:
            j = spec.joint
            seen = target.clone()
            seen[:, j] = refined[:, j]
            rotation = two_direction_rotation(tree, j, rest, seen, fit=fit)
            children = list(tree.children[j])
            placed = refined[:, j, None] + ((rest[:, children] - rest[:, j, None]) @ rotation.transpose(-1, -2))
            torch.testing.assert_close(refined[:, children], placed, rtol=0, atol=1e-12)
