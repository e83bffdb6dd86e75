"""The oracle (MixIK with ground-truth twists) against the open body model's own meshes.

On poses whose leaf joints (feet, head, hands: rotations no joint position shows) are zero and with the
ground-truth betas, AnalyIK + ground-truth twists must give back the ground-truth mesh.
"""

import torch

from lib.core.config import REPO_ROOT
from lib.data.synthetic import sample_smpl_poses
from lib.kinematics.rotations import axis_angle_to_rotmat
from lib.kinematics.tree import SMPL_TREE
from lib.models.body_model import BodyModel
from lib.solver.analytic_ik import solve_rotations
from lib.solver.twist import angles_to_phi, part_phis, phi_per_joint, twist_angles


def oracle_and_analyik(body: BodyModel, tree, pose: torch.Tensor, betas: torch.Tensor):
    """Ground truth with zero leaf rotations, then the oracle's and AnalyIK's meshes on its joints (true betas)."""
    pose = pose.clone()
    pose[:, [j for j in tree.skeleton if j < tree.num_pose_joints and not tree.children[j]]] = 0.0
    truth = body(pose, betas)
    rest, target = truth.joints_t - truth.joints_t[:, :1], truth.joints - truth.joints[:, :1]
    angles = twist_angles(tree, rest, axis_angle_to_rotmat(pose))
    oracle = solve_rotations(tree, rest, target, phi_per_joint(tree, part_phis(tree, angles)))
    analytic = solve_rotations(tree, rest, target)
    return truth, body(oracle, betas), body(analytic, betas)


def test_oracle_reproduces_the_mesh_analyik_does_not():
    body = BodyModel.from_file(REPO_ROOT / "data/open/smpl/OPEN_SMPL_NEUTRAL.npz", dtype=torch.float64)
    sample = sample_smpl_poses(256, seed=21)
    pose = torch.as_tensor(sample.pose, dtype=torch.float64)
    betas = torch.as_tensor(sample.betas[:, :10], dtype=torch.float64)
    truth, oracle, analytic = oracle_and_analyik(body, SMPL_TREE, pose, betas)

    assert (oracle.vertices - truth.vertices).norm(dim=-1).mean() < 1e-3  # metres: below 1 mm
    assert (analytic.vertices - truth.vertices).norm(dim=-1).mean() > 5e-3  # twist matters on this body
    assert (oracle.joints - truth.joints).norm(dim=-1).max() < 1e-6  # the oracle's joints are the targets


def test_twist_angles_round_trip_through_phi():
    angles = torch.linspace(-3.1, 3.1, 23, dtype=torch.float64)[None]
    phi = angles_to_phi(angles)
    assert torch.allclose(torch.atan2(phi[..., 1], phi[..., 0]), angles)
