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

LEAVES = [j for j in SMPL_TREE.skeleton if not SMPL_TREE.children[j]]


def test_oracle_reproduces_the_mesh_analyik_does_not():
    body = BodyModel.from_file(REPO_ROOT / "data/open/smpl/OPEN_SMPL_NEUTRAL.npz", dtype=torch.float64)
    sample = sample_smpl_poses(256, seed=21)
    pose = torch.as_tensor(sample.pose, dtype=torch.float64)
    pose[:, LEAVES] = 0.0
    betas = torch.as_tensor(sample.betas[:, :10], dtype=torch.float64)
    truth = body(pose, betas)
    rest, target = truth.joints_t - truth.joints_t[:, :1], truth.joints - truth.joints[:, :1]

    angles = twist_angles(SMPL_TREE, rest, axis_angle_to_rotmat(pose))
    oracle = solve_rotations(SMPL_TREE, rest, target, phi_per_joint(SMPL_TREE, part_phis(SMPL_TREE, angles)))
    analytic = solve_rotations(SMPL_TREE, rest, target)

    def mean_vertex_error_mm(rotmats):
        return (body(rotmats, betas).vertices - truth.vertices).norm(dim=-1).mean().item() * 1000

    oracle_error, analytic_error = mean_vertex_error_mm(oracle), mean_vertex_error_mm(analytic)
    assert oracle_error < 1.0
    assert analytic_error > 5.0  # twist matters on this body: the network has something to learn
    # the oracle's joints are the targets
    assert (body(oracle, betas).joints - truth.joints).norm(dim=-1).max() < 1e-6


def test_twist_angles_round_trip_through_phi():
    angles = torch.linspace(-3.1, 3.1, 23, dtype=torch.float64)[None]
    phi = angles_to_phi(angles)
    assert torch.allclose(torch.atan2(phi[..., 1], phi[..., 0]), angles)
