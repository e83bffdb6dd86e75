"""SkeletonSolver.solve, the method composed once: what the network sees, what MixIK uses, where the body goes."""

import numpy as np
import pytest
import roma
import smplx
import torch

from lib.core.config import resolve_path
from lib.core.smpl.config import get_cfg
from lib.data.synthetic import sample_smpl_poses
from lib.engine.build import build_body_model, build_solver
from lib.kinematics.tree import SMPL_TREE
from lib.solver.analytic_ik import solve_rotations
from lib.solver.twist import angles_to_phi, phi_per_joint


@pytest.fixture(scope="module")
def setup():
    cfg = get_cfg("configs/smpl/open_eval.yaml")
    body = build_body_model(cfg, torch.device("cpu"), dtype=torch.float64)
    data = np.load(resolve_path(cfg.DATA.BODY_MODEL), allow_pickle=False)
    plain = smplx.SMPL(
        model_path="",
        data_struct=smplx.utils.Struct(**data),
        dtype=torch.float64,
        vertex_ids={k[4:]: int(data[k]) for k in data.files if k.startswith("vid_")},
    )
    sample = sample_smpl_poses(8, seed=31)
    pose = torch.as_tensor(sample.pose)
    pose[:, 0] = torch.tensor([0.3, 1.2, -0.4])  # a clearly rotated root: the raw target is not canonical
    betas = torch.as_tensor(sample.betas[:, :10])
    joints = body.posed_joints(pose, betas) + torch.tensor([1.0, 0.2, 4.0])
    return body, build_solver(cfg, body), plain, joints


class Spy:
    """A recording network: keeps what it was given, answers fixed twists."""

    def __init__(self, angle=0.4):
        self.calls = []
        self.angle = angle

    def __call__(self, joints, betas):
        self.calls.append((joints.clone(), betas.clone()))
        return [
            angles_to_phi(torch.full((len(joints), len(p.twist_joints)), self.angle, dtype=joints.dtype))
            for p in SMPL_TREE.parts
        ]


def test_the_network_sees_the_canonical_skeleton(setup):
    _, solver, plain, joints = setup
    spy = Spy()
    solution = solver.solve(joints, spy)
    assert len(spy.calls) == 1 and solution.method == "mixik"
    seen, betas_seen = spy.calls[0]
    # independently: plain smplx with AnalyIK's pose, root rotation zero, joints root-relative
    rotvec = roma.rotmat_to_rotvec(solution.analytic_rotmats)
    with torch.no_grad():
        expected = plain(
            global_orient=torch.zeros(len(joints), 3, dtype=torch.float64),
            body_pose=rotvec[:, 1:].reshape(len(joints), 69),
            betas=solution.betas,
        ).joints[:, :24]
    expected = expected - expected[:, :1]
    assert (seen - expected).norm(dim=-1).max() < 1e-6  # 1 micrometre (axis-angle round trip)
    assert torch.equal(betas_seen, solution.betas)
    raw = joints - joints[:, :1]
    assert (seen - raw).norm(dim=-1).mean() > 0.05  # not the raw (root-rotated) target
    # MixIK = the IK with the spy's twists on the refined targets
    twists = phi_per_joint(SMPL_TREE, spy(seen, betas_seen))
    assert torch.allclose(solution.rotmats, solve_rotations(SMPL_TREE, solution.rest, solution.refined, twists))


def test_training_mode_feeds_the_target_and_keeps_the_betas(setup):
    _, solver, _, joints = setup
    spy = Spy()
    betas = torch.zeros(len(joints), 10, dtype=torch.float64)
    solution = solver.solve(joints, spy, betas=betas, refine=False, network_input="target", rotations=False)
    assert torch.equal(spy.calls[0][0], joints - joints[:, :1]) and torch.equal(solution.betas, betas)
    assert solution.rotmats is None and solution.analytic_rotmats is None and len(solution.phis) == 3


def test_translation_puts_the_body_where_the_joints_were(setup):
    body, solver, _, joints = setup
    solution = solver.solve(joints)
    assert solution.method == "analyik" and torch.equal(solution.rotmats, solution.analytic_rotmats)
    placed = body.posed_joints(solution.rotmats, solution.betas) + solution.translation[:, None]
    assert (placed - joints).norm(dim=-1).max() < 1e-3


def test_options_are_checked(setup):
    _, solver, _, joints = setup
    with pytest.raises(ValueError, match="network_input"):
        solver.solve(joints, Spy(), network_input="raw")
    with pytest.raises(ValueError, match="must be a torch.Tensor.*got ndarray"):
        solver.solve(joints.numpy())
