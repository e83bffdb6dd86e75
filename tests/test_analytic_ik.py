"""AnalyIK and MixIK on both trees: round trips through skeleton forward kinematics, and degenerate targets."""

import math

import roma
import torch
from conftest import posed_skeleton, random_pose, t_pose_skeleton

from lib.kinematics.skeleton import forward_kinematics
from lib.solver.analytic_ik import solve_rotations
from lib.solver.twist import angles_to_phi, part_phis, phi_per_joint, twist_angles


def _determined_joints(tree):
    """Pose joints whose rotation the joints fully determine once twists are known."""
    return [j for j in tree.skeleton if j in tree.ik_child or j in tree.two_direction_by_joint]


def test_analyik_reproduces_joints_and_removes_twist(tree):
    rest = t_pose_skeleton(tree)[None]
    rot = random_pose(tree, 128)
    target = posed_skeleton(tree, rot, rest)
    solved = solve_rotations(tree, rest.expand(128, -1, -1), target)
    posed = forward_kinematics(tree, rest.expand(128, -1, -1), solved)
    skeleton = list(tree.skeleton)
    assert (posed - target)[:, skeleton].norm(dim=-1).max() < 1e-9
    # twist removed: every swing joint's twist about its child bone is zero
    twist = twist_angles(tree, rest.expand(128, -1, -1), solved)
    swing_joints = [j - 1 for j in tree.ik_child if j not in tree.relative_joints]
    assert twist[:, swing_joints].abs().max() < 1e-9
    # and the twist was really there in the ground truth
    assert twist_angles(tree, rest.expand(128, -1, -1), rot)[:, swing_joints].abs().mean() > 0.3


def test_oracle_twists_reproduce_ground_truth_rotations(tree):
    rest = t_pose_skeleton(tree)[None].expand(64, -1, -1)
    rot = random_pose(tree, 64, seed=3)
    target = posed_skeleton(tree, rot, rest)
    angles = twist_angles(tree, rest, rot)
    full = torch.cat([torch.zeros(64, 1, dtype=rot.dtype), angles], dim=1)
    solved = solve_rotations(tree, rest, target, angles_to_phi(full))
    determined = _determined_joints(tree)
    assert (solved - rot)[:, determined].abs().max() < 1e-8
    # through the part lists only the part joints get their twist; those must match too
    solved_parts = solve_rotations(tree, rest, target, phi_per_joint(tree, part_phis(tree, angles)))
    part_joints = sorted({j for part in tree.parts for j in part.twist_joints})
    assert (solved_parts - rot)[:, part_joints].abs().max() < 1e-8


def test_straight_limbs_and_reversed_bones_stay_finite(tree):
    rest = t_pose_skeleton(tree)[None]
    identity = roma.rotvec_to_rotmat(torch.zeros(3, tree.num_pose_joints, 3, dtype=torch.float64))
    rot = identity.clone()
    # sample 1: knee and elbow folded back by exactly pi (child bone anti-parallel to the rest bone)
    flip = roma.rotvec_to_rotmat(torch.tensor([math.pi, 0.0, 0.0], dtype=torch.float64))
    rot[1, [4, 5, 18, 19]] = flip
    # sample 2: tiny rotations (parallel bones up to 1e-9)
    rot[2] = roma.rotvec_to_rotmat(torch.full((tree.num_pose_joints, 3), 1e-9, dtype=torch.float64))
    target = posed_skeleton(tree, rot, rest)
    solved = solve_rotations(tree, rest.expand(3, -1, -1), target)
    assert torch.isfinite(solved).all()
    posed = forward_kinematics(tree, rest.expand(3, -1, -1), solved)
    assert (posed - target)[:, list(tree.skeleton)].norm(dim=-1).max() < 1e-8
    assert (solved[0] - identity[0]).abs().max() < 1e-12


def test_zero_length_target_bone_gives_finite_rotations(tree):
    rest = t_pose_skeleton(tree)[None]
    target = rest.clone()
    target[:, 7] = target[:, 4]  # collapsed shin
    solved = solve_rotations(tree, rest, target)
    assert torch.isfinite(solved).all()


def test_float32_and_gradients(tree):
    rest = t_pose_skeleton(tree, torch.float32)[None].expand(8, -1, -1)
    rot = random_pose(tree, 8, dtype=torch.float32)
    target = posed_skeleton(tree, rot, rest)
    phi = torch.randn(8, tree.num_pose_joints, 2, requires_grad=True)
    solved = solve_rotations(tree, rest, target, phi / phi.norm(dim=-1, keepdim=True))
    assert solved.dtype == torch.float32
    solved.sum().backward()
    assert torch.isfinite(phi.grad).all() and phi.grad.abs().sum() > 0
