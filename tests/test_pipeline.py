"""The composed solver on the open SMPL model: skeleton in, betas and rotations out; bad skeletons rejected."""

import numpy as np
import pytest
import torch

from lib.core.smpl.config import get_cfg
from lib.data.synthetic import sample_smpl_poses
from lib.engine.build import build_body_model, build_solver


@pytest.fixture(scope="module")
def setup():
    cfg = get_cfg("configs/smpl/open_eval.yaml", ["MODEL.PR_VARIANT", "v2"])
    body = build_body_model(cfg, torch.device("cpu"), dtype=torch.float64)
    return body, build_solver(cfg, body)


def test_noisy_skeleton_to_mesh(setup):
    body, solver = setup
    sample = sample_smpl_poses(64, seed=9)
    pose = torch.as_tensor(sample.pose, dtype=torch.float64)
    betas = torch.as_tensor(sample.betas[:, :10], dtype=torch.float64)
    joints = body.posed_joints(pose, betas)
    noisy = joints + 0.005 * torch.randn(joints.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    solution = solver.analytic(noisy + 2.0)  # any global position
    fitted = body.posed_joints(solution.rotmats, solution.betas)
    fitted = fitted - fitted[:, :1]
    # the fitted skeleton is the refined one exactly, and the refined one is close to the noisy input
    assert (fitted - solution.refined).norm(dim=-1).max() < 1e-6
    noise = (noisy - noisy[:, :1] - (joints - joints[:, :1])).norm(dim=-1).mean()  # about 11 mm
    # PR-C moves joints by about the noise level, and no further from the truth than twice that
    assert (solution.refined - (noisy - noisy[:, :1])).norm(dim=-1).mean() < 1.2 * noise
    assert (solution.refined - (joints - joints[:, :1])).norm(dim=-1).mean() < 2.0 * noise
    # bone lengths change by only millimetres per unit beta, so 5 mm of noise costs about half a unit of beta
    assert (solution.betas - betas).abs().mean() < 1.0


@pytest.mark.parametrize(
    "make_bad, message",
    [
        (lambda j: j[:, :20], r"shape \(B, 24, 3\)"),
        (lambda j: torch.where(torch.arange(24)[None, :, None] == 7, torch.nan, j), r"NaN/inf at joints \[7\]"),
        (lambda j: j * 1000.0, "millimetres"),
        (lambda j: j.repeat(700, 1, 1) * 1000.0, "millimetres"),  # a large batch: the check reads 256 frames of it
    ],
)
def test_bad_skeletons_get_one_clear_error(setup, make_bad, message):
    body, solver = setup
    joints = body.rest_joints(torch.zeros(2, 10, dtype=torch.float64))
    with pytest.raises(ValueError, match=message):
        solver.analytic(make_bad(joints))


def test_unit_check_reads_frames_spread_over_the_batch(setup):
    from lib.solver.pipeline import UNIT_CHECK_FRAMES, median_bone_length

    body, solver = setup
    joints = body.rest_joints(torch.zeros(1, 10, dtype=torch.float64)).repeat(1000, 1, 1)
    metres = median_bone_length(solver.tree, joints)
    joints[UNIT_CHECK_FRAMES:] *= 1000.0  # only the first 256 frames in metres: a prefix would miss the rest
    assert median_bone_length(solver.tree, joints) > 100 * metres


def test_a_non_tensor_skeleton_gets_the_conversion_hint():
    from lib.kinematics.tree import SMPL_TREE
    from lib.solver.pipeline import check_skeleton

    expected = (
        r"^joints must be a torch.Tensor \(B, 24, 3\), got list; convert with torch.as_tensor, "
        r"or use lib.api.load_solver, whose fit\(\) takes numpy too$"
    )
    with pytest.raises(ValueError, match=expected):
        check_skeleton(SMPL_TREE, [[0.0, 0.0, 0.0]])


def test_solver_options_and_missing_parts_are_named(setup):
    from lib.solver.pipeline import RobustOptions, SkeletonSolver

    body, solver = setup
    with pytest.raises(ValueError, match=r"^suspicious='drop': use one of \('warn', 'fill'\)$"):
        SkeletonSolver(solver.tree, body.rest_joints, None, robust=RobustOptions(suspicious="drop"))
    no_inverse = SkeletonSolver(solver.tree, body.rest_joints, None)
    joints = body.rest_joints(torch.zeros(2, 10, dtype=torch.float64))
    with pytest.raises(ValueError, match="^this solver has no Shape Inverse: pass the betas$"):
        no_inverse.shape(joints)
    no_posed = SkeletonSolver(solver.tree, body.rest_joints, solver.shape_inverse)  # no posed_joints
    message = "^the canonical network input needs the solver's posed_joints and rotations=True$"
    with pytest.raises(ValueError, match=message):
        no_posed.solve(joints, network=lambda seen, betas: [])


def test_paper_shape_is_averaged_per_sequence(setup):
    body, solver = setup
    sample = sample_smpl_poses(4, seed=12)
    joints = body.posed_joints(torch.as_tensor(sample.pose), torch.as_tensor(sample.betas[:, :10]))
    target = joints - joints[:, :1]
    per_frame = solver.shape(target).numpy()
    shared = solver.shape(target, torch.tensor([5, 5, 2, 5])).numpy()
    mean = per_frame[[0, 1, 3]].mean(axis=0)
    np.testing.assert_allclose(shared, np.stack([mean, mean, per_frame[2], mean]), rtol=0, atol=1e-12)


def test_the_solver_refines_with_its_pr_c_variant(setup):
    from lib.solver.refine import refine_bone_lengths

    body, solver = setup  # PR-C v2
    sample = sample_smpl_poses(3, seed=13)
    joints = body.posed_joints(torch.as_tensor(sample.pose), torch.as_tensor(sample.betas[:, :10]))
    noisy = joints + 0.01 * torch.randn(joints.shape, generator=torch.Generator().manual_seed(1), dtype=joints.dtype)
    solution = solver.analytic(noisy)
    target = noisy - noisy[:, :1]
    torch.testing.assert_close(solution.refined, refine_bone_lengths(solver.tree, solution.rest, target, "v2"))
    assert (solution.refined - refine_bone_lengths(solver.tree, solution.rest, target, "v1")).abs().amax() > 1e-4


def test_rest_skeleton_is_the_rest_joints_about_the_root(setup):
    body, solver = setup  # (the solver bench's 'ik only' row reads it)
    betas = torch.randn(2, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    rest = body.rest_joints(betas)
    torch.testing.assert_close(solver.rest_skeleton(betas), rest - rest[:, :1], rtol=0, atol=0)
    assert not torch.equal(rest[:, 0], torch.zeros_like(rest[:, 0]))  # the root really is moved
