"""The composed solver on the open SMPL model: skeleton in, betas and rotations out; bad skeletons rejected."""

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
