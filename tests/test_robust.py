"""The robust mode for noisy skeletons (docs/robust.md): rigid-group orientation, the regularised Shape Inverse shared
per sequence, suspicious joints reported and filled; at zero noise it matches the paper's pipeline."""

import dataclasses
import warnings

import numpy as np
import pytest
import roma
import torch

from lib.core.smpl.config import get_cfg
from lib.data.synthetic import sample_smpl_poses
from lib.engine.build import build_body_model, build_network, build_solver
from lib.engine.metrics import mpve
from lib.kinematics.skeleton import rigid_group_rotation, root_relative, two_direction_rotation
from lib.kinematics.tree import SMPL_TREE, SMPLX_TREE
from lib.solver.analytic_ik import solve_rotations
from lib.solver.pipeline import SkeletonSolver, implausible_bones
from lib.solver.refine import refine_bone_lengths
from lib.solver.shape_inverse import ShapePrior
from tests.conftest import t_pose_skeleton


@pytest.fixture(scope="module")
def smpl():
    """Body model, paper solver, robust solver and the shipped network (float64 body, CPU)."""
    paper_cfg = get_cfg(None, [])
    body = build_body_model(paper_cfg, torch.device("cpu"), dtype=torch.float64)
    robust = build_solver(get_cfg(None, ["MODEL.ROBUST.ENABLED", "True"]), body)
    network = build_network(paper_cfg, torch.device("cpu"), "MODEL.PRETRAINED").double().eval()
    return body, build_solver(paper_cfg, body), robust, network


def _skeletons(body, n, seed, same_person=False):
    """(betas (n, 10), root-relative joints (n, J, 3), vertices) of sampled poses, float64."""
    sample = sample_smpl_poses(n, seed=seed)
    betas = torch.as_tensor(sample.betas[:, :10])
    if same_person:
        betas = betas[:1].expand(n, -1).clone()
    with torch.no_grad():
        out = body(torch.as_tensor(sample.pose), betas)
    return betas, root_relative(SMPL_TREE, out.joints), out.vertices


@pytest.mark.parametrize("tree", [SMPL_TREE, SMPLX_TREE], ids=["smpl", "smplx"])
def test_rigid_group_rotation_recovers_a_known_rotation(tree):
    rest = t_pose_skeleton(tree)[None].expand(64, -1, -1)
    truth = roma.rotvec_to_rotmat(torch.randn(64, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    posed = rest @ truth.transpose(-1, -2)  # every joint turned rigidly about the origin
    for joint in (spec.joint for spec in tree.two_direction):
        found = rigid_group_rotation(tree, joint, rest, posed)
        assert torch.allclose(found, truth, atol=1e-9)
        parent = tree.parents[joint]
        if parent >= 0:  # in the parent's frame: the parent's rotation is taken out
            local = rigid_group_rotation(tree, joint, rest, posed, parent_rotation=truth)
            assert torch.allclose(local, torch.eye(3, dtype=torch.float64).expand(64, 3, 3), atol=1e-9)


def test_rigid_pelvis_orientation_beats_the_two_direction_rule_under_noise():
    rest = t_pose_skeleton(SMPL_TREE)[None].expand(2000, -1, -1)
    gen = torch.Generator().manual_seed(2)
    truth = roma.rotvec_to_rotmat(torch.randn(2000, 3, generator=gen, dtype=torch.float64))
    noisy = rest @ truth.transpose(-1, -2) + 0.01 * torch.randn(rest.shape, generator=gen, dtype=torch.float64)
    errors = {
        fit: roma.rotmat_geodesic_distance(two_direction_rotation(SMPL_TREE, 0, rest, noisy, fit=fit), truth)
        for fit in ("directions", "rigid")
    }
    assert errors["rigid"].median() < 0.5 * errors["directions"].median()


def test_robust_mode_matches_the_paper_at_zero_noise(smpl):
    body, paper, robust, network = smpl
    betas, joints, vertices = _skeletons(body, 32, seed=41)
    mpves = []
    with torch.no_grad():
        for solver in (paper, robust):
            solution = solver.solve(joints, network)
            mpves.append(mpve(body(solution.rotmats, solution.betas).vertices, vertices).mean())
    assert abs(mpves[0] - mpves[1]) < 0.5  # mm


def test_robust_shape_is_bounded_and_ignores_a_missing_joint(smpl):
    body, paper, robust, _ = smpl
    betas, joints, _ = _skeletons(body, 8, seed=42)
    broken = joints.clone()
    broken[:, 20] = 0.0  # left wrist 'missing' at the origin
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        robust_betas = robust.solve(broken).betas
    assert paper.solve(broken).betas.abs().max() > 10  # the paper's least squares believes the bone
    assert robust_betas.abs().max() <= 5.0
    assert (robust_betas - betas).abs().max() < 0.3


@pytest.mark.parametrize("frames, sigma", [(24, 0.0), (32, 0.005)])
def test_shared_betas_barely_move_for_one_corrupted_frame(smpl, frames, sigma):
    body, _, robust, _ = smpl
    betas, joints, _ = _skeletons(body, frames, seed=43, same_person=True)
    gen = torch.Generator().manual_seed(3)
    noisy = joints + sigma * torch.randn(joints.shape, generator=gen, dtype=torch.float64)
    one = torch.zeros(frames, dtype=torch.long)
    shared = robust.shape(noisy, one)
    assert torch.equal(shared, shared[:1].expand(frames, -1))  # one shape for the sequence
    assert (shared[0] - betas[0]).abs().max() < 0.5  # a few betas barely change any bone length
    corrupted = noisy.clone()
    corrupted[5] += 0.1 * torch.randn(corrupted[5].shape, generator=gen, dtype=torch.float64)  # 100 mm noise
    corrupted[9, 7] = 0.0  # and an ankle at the origin in another frame
    assert (robust.shape(corrupted, one)[0] - shared[0]).abs().max() < 0.05


def test_a_joint_at_the_origin_is_reported_and_can_be_filled(smpl):
    body, _, robust, _ = smpl
    _, joints, _ = _skeletons(body, 4, seed=44)
    broken = joints.clone()
    broken[2, 18] = 0.0  # left elbow of frame 2
    with pytest.warns(UserWarning, match=r"frame 2: left_elbow \(at the origin\)"):
        solution = robust.solve(broken)
    assert solution.suspicious[2, 18] and solution.suspicious.sum() <= 3  # the elbow, maybe its child's bone
    fill = build_solver(get_cfg(None, ["MODEL.ROBUST.ENABLED", "True", "MODEL.ROBUST.SUSPICIOUS", "fill"]), body)
    with pytest.warns(UserWarning, match="treated as missing"):
        filled = fill.solve(broken)
    # the elbow hangs from the shoulder at its rest offset: within an upper arm's reach of the truth, not at 0
    elbow_error = (filled.refined[2, 18] - joints[2, 18]).norm()
    assert elbow_error < (joints[2, 18] - joints[2, 16]).norm() * 2
    others = [j for j in range(24) if j not in (18, 20, 22)]
    assert (filled.refined[:, others] - joints[:, others]).norm(dim=-1).max() < 0.01


def test_ordinary_noise_is_not_reported(smpl):
    body, _, robust, _ = smpl
    _, joints, _ = _skeletons(body, 32, seed=48)
    noisy = joints + 0.02 * torch.randn(joints.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert robust.solve(noisy).suspicious.sum() <= 2  # 20 mm per axis: hands and feet stay unreported


def test_paper_mode_reports_nothing(smpl):
    body, paper, _, _ = smpl
    _, joints, _ = _skeletons(body, 2, seed=45)
    joints[0, 18] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert paper.solve(joints).suspicious is None


def test_noise_estimate_follows_the_noise(smpl):
    body, _, robust, _ = smpl
    _, joints, _ = _skeletons(body, 200, seed=46)
    gen = torch.Generator().manual_seed(4)
    for sigma_mm in (5.0, 20.0):
        noisy = joints + sigma_mm / 1000 * torch.randn(joints.shape, generator=gen, dtype=torch.float64)
        estimate = robust.shape_inverse.estimate_noise_mm(noisy, torch.zeros(200, dtype=torch.long))
        assert 0.6 * sigma_mm < estimate[0] < 1.5 * sigma_mm


def test_api_fit_is_robust_by_default_and_shares_one_shape(smpl):
    from lib.api import load_solver

    solver = load_solver("smpl", checkpoint=None)
    assert solver.solver.robust is not None and load_solver("smpl", checkpoint=None, robust=False).solver.robust is None
    _, joints, _ = _skeletons(smpl[0], 6, seed=47, same_person=True)
    noisy = joints.float() + 0.01 * torch.randn(joints.shape, generator=torch.Generator().manual_seed(5))
    fit = solver.fit(noisy.numpy(), same_person=True)
    assert np.allclose(fit.betas, fit.betas[:1])


def test_regularised_shape_is_bounded_and_follows_the_given_noise_level(smpl):
    body, paper, robust, _ = smpl
    betas, joints, _ = _skeletons(body, 6, seed=21)
    inverse = robust.shape_inverse
    # grossly wrong proportions: betas stop at the bound, on both sides
    for scale in (1.8, 0.5):
        out = inverse.regularised(joints * scale, ShapePrior(noise_mm=1.0))
        assert out.abs().max().item() == pytest.approx(ShapePrior().max_abs_beta)
    # noise-free input, a small given noise: close to the truth; a large given noise: the prior pulls toward 0
    exact = inverse.regularised(joints, ShapePrior(noise_mm=0.5))
    assert (exact - betas).abs().mean() < 0.1
    vague = inverse.regularised(joints, ShapePrior(noise_mm=60.0))
    assert vague.norm(dim=1).mean() < 0.7 * exact.norm(dim=1).mean()


def test_twist_solve_keeps_the_solution_and_uses_the_solvers_orientation_fit(smpl):
    _, paper, robust, _ = smpl
    body = smpl[0]
    _, joints, _ = _skeletons(body, 4, seed=22)
    noisy = joints + 0.01 * torch.randn(joints.shape, generator=torch.Generator().manual_seed(1), dtype=joints.dtype)
    for solver in (paper, robust):
        base = solver.solve(noisy)
        identity = [
            torch.tensor([1.0, 0.0], dtype=joints.dtype).expand(4, len(p.twist_joints), 2) for p in SMPL_TREE.parts
        ]
        mixed = solver.twist_solve(base, base.refined, identity)
        assert mixed.method == "mixik" and mixed.phis is identity
        for field in ("betas", "rest", "refined", "translation", "analytic_rotmats"):
            assert getattr(mixed, field) is getattr(base, field)
        # zero twists on the refined joints reproduce the solver's own AnalyIK (same two-direction rule)
        torch.testing.assert_close(mixed.rotmats, base.rotmats, rtol=0, atol=1e-9)


def _map_betas(matrix, bone_lengths_mm, zero_lengths_mm, sigma_mm, floor_mm):
    """The documented robust Shape Inverse without Huber reweighting, in numpy: the MAP betas of one shape for all
    given frames, betas ~ N(0, I), bone-length noise variance 2 sigma^2 + floor^2, lengths debiased for noise."""
    debiased = np.sqrt(np.maximum(bone_lengths_mm**2 - 4 * sigma_mm**2, (0.5 * bone_lengths_mm) ** 2))
    delta = debiased - zero_lengths_mm  # (F, n)
    weight = 1.0 / (2 * sigma_mm**2 + floor_mm**2)
    normal = len(delta) * weight * matrix.T @ matrix + np.eye(matrix.shape[1])
    return np.linalg.solve(normal, weight * matrix.T @ delta.sum(axis=0))


@pytest.mark.parametrize(
    "huber_k, iterations", [(1e9, 5), (0.5, 1)], ids=["no-huber", "one-iteration"]
)  # one iteration is the plain MAP estimate, before any Huber reweighting
def test_regularised_shape_is_the_map_estimate_of_the_documented_model(smpl, huber_k, iterations):
    body, _, robust, _ = smpl
    inverse = robust.shape_inverse
    _, joints, _ = _skeletons(body, 5, seed=23, same_person=True)
    noisy = joints + 0.004 * torch.randn(joints.shape, generator=torch.Generator().manual_seed(2), dtype=joints.dtype)
    tree = SMPL_TREE
    ends = [j for group in tree.bone_groups for j in group]
    rows = [g for g, group in enumerate(tree.bone_groups) for _ in group]
    starts = [tree.parents[j] for j in ends]
    zero = body.rest_joints(torch.zeros(1, 10, dtype=torch.float64))[0].numpy()
    zero_mm = np.linalg.norm(zero[ends] - zero[starts], axis=-1) * 1000
    lengths_mm = np.linalg.norm(noisy.numpy()[:, ends] - noisy.numpy()[:, starts], axis=-1) * 1000
    matrix = inverse.matrix.numpy()[rows]  # (bones, K): each bone follows its group's row of A
    prior = ShapePrior(noise_mm=4.0, floor_mm=1.5, huber_k=huber_k, max_abs_beta=1e9, iterations=iterations)
    one_person = torch.zeros(5, dtype=torch.long)
    got = inverse.regularised(noisy, prior, groups=one_person).numpy()
    expected = _map_betas(matrix, lengths_mm, zero_mm, 4.0, 1.5)
    np.testing.assert_allclose(got, np.broadcast_to(expected, got.shape), rtol=0, atol=1e-8)
    # per frame (no groups) each frame is its own MAP estimate
    single = inverse.regularised(noisy[:1], prior).numpy()[0]
    np.testing.assert_allclose(single, _map_betas(matrix, lengths_mm[:1], zero_mm, 4.0, 1.5), rtol=0, atol=1e-8)


def test_rigid_orientation_fit_reaches_the_root_in_ik_and_pr_c(smpl):
    """orientation_fit='rigid' orients the root by its rigid group in AnalyIK and places the pelvis children by it in
    PR-C; the paper's rule ('directions') gives a different root on noisy joints."""
    body = smpl[0]
    _, joints, _ = _skeletons(body, 4, seed=24)
    rest = root_relative(SMPL_TREE, body.rest_joints(torch.zeros(4, 10, dtype=torch.float64)))
    noisy = joints + 0.01 * torch.randn(joints.shape, generator=torch.Generator().manual_seed(3), dtype=joints.dtype)
    rigid = rigid_group_rotation(SMPL_TREE, 0, rest, noisy)
    rotations = solve_rotations(SMPL_TREE, rest, noisy, orientation_fit="rigid")
    torch.testing.assert_close(rotations[:, 0], rigid, rtol=0, atol=1e-12)
    paper = solve_rotations(SMPL_TREE, rest, noisy)
    assert (paper[:, 0] - rigid).abs().amax() > 1e-3
    refined = refine_bone_lengths(SMPL_TREE, rest, noisy, "v1", orientation_fit="rigid")
    # the pelvis children at their rest offsets, turned by the fit
    placed = (rigid[:, None] @ rest[:, [1, 2, 3], :, None])[..., 0]
    torch.testing.assert_close(refined[:, [1, 2, 3]], placed, rtol=0, atol=1e-12)


def _solver_like(robust, **options):
    """The robust solver with other :class:`RobustOptions`."""
    return SkeletonSolver(
        robust.tree,
        robust.rest_joints,
        robust.shape_inverse,
        robust.pr_variant,
        robust.posed_joints,
        dataclasses.replace(robust.robust, **options),
    )


def test_the_suspicious_warning_points_at_the_callers_line(smpl):
    body, _, robust, _ = smpl
    _, joints, _ = _skeletons(body, 2, seed=44)
    joints[1, 18] = 0.0
    with pytest.warns(UserWarning, match="frame 1: left_elbow") as record:
        robust.solve(joints)
    assert record[0].filename == __file__


@pytest.mark.parametrize("given", [None, 40.0], ids=["estimated", "given"])
def test_bones_within_the_joint_noise_are_not_reported(smpl, given):
    # 40 mm per axis: short bones (hands, feet) often fall outside half to twice their length, yet within 5 sigma
    body, _, robust, _ = smpl
    _, joints, _ = _skeletons(body, 32, seed=49)
    noisy = joints + 0.04 * torch.randn(joints.shape, generator=torch.Generator().manual_seed(8), dtype=joints.dtype)
    solver = _solver_like(robust, prior=ShapePrior(noise_mm=given))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        solution = solver.solve(noisy)
    assert solution.suspicious.sum() <= 2  # of 736 joints (a per-frame noise estimate can come out low)
    assert implausible_bones(SMPL_TREE, solution.rest, root_relative(SMPL_TREE, noisy)).sum() > 20  # by ratio alone


def test_a_displaced_root_is_placed_by_its_rigid_group(smpl):
    # exact joints away from the origin, the root alone moved by 5 cm: the rigid fit of the root and its children puts
    # the body's root back near the truth, and the solution's joints where the input's (exact) other joints are
    body, _, robust, _ = smpl
    sample = sample_smpl_poses(4, seed=30)
    with torch.no_grad():
        out = body(torch.as_tensor(sample.pose), torch.as_tensor(sample.betas[:, :10]))
    joints = out.joints + torch.tensor([0.3, -0.2, 1.0], dtype=torch.float64)
    moved = joints.clone()
    moved[:, 0] += torch.tensor([0.05, 0.0, 0.0], dtype=torch.float64)
    solution = robust.solve(moved)
    root = solution.translation + body.rest_joints(solution.betas)[:, 0]
    assert (root - joints[:, 0]).norm(dim=-1).max() < 0.025
    placed = solution.refined + root[:, None]
    assert (placed - joints)[:, 1:].norm(dim=-1).mean() < 0.01


def test_the_orientation_fit_reaches_pr_c_ik_without_pr_c_and_twist_solve(smpl):
    body, _, robust, _ = smpl
    _, joints, _ = _skeletons(body, 4, seed=25)
    noisy = joints + 0.01 * torch.randn(joints.shape, generator=torch.Generator().manual_seed(4), dtype=joints.dtype)
    rigid = robust.solve(noisy)
    directions = _solver_like(robust, orientation_fit="directions").solve(noisy)
    assert (rigid.refined - directions.refined).abs().amax() > 1e-4  # PR-C orients the pelvis by the asked fit
    unrefined = robust.solve(noisy, refine=False)
    root = rigid_group_rotation(SMPL_TREE, 0, unrefined.rest, unrefined.refined)
    torch.testing.assert_close(unrefined.rotmats[:, 0], root, rtol=0, atol=1e-12)
    identity = [torch.tensor([1.0, 0.0], dtype=joints.dtype).expand(4, len(p.twist_joints), 2) for p in SMPL_TREE.parts]
    mixed = robust.twist_solve(rigid, noisy, identity)
    root = rigid_group_rotation(SMPL_TREE, 0, rigid.rest, root_relative(SMPL_TREE, noisy))
    torch.testing.assert_close(mixed.rotmats[:, 0], root, rtol=0, atol=1e-12)


def test_solve_shares_one_shape_per_sequence(smpl):
    body, paper, robust, _ = smpl
    _, joints, _ = _skeletons(body, 4, seed=26)
    noisy = joints + 0.01 * torch.randn(joints.shape, generator=torch.Generator().manual_seed(6), dtype=joints.dtype)
    for solver in (paper, robust):
        betas = solver.solve(noisy, groups=torch.tensor([3, 3, 8, 8])).betas
        assert torch.equal(betas[0], betas[1]) and torch.equal(betas[2], betas[3])
        assert (betas[0] - betas[2]).abs().amax() > 1e-3


def test_every_two_direction_joint_uses_the_rigid_fit_in_analyik_and_mixik(smpl):
    """Robust mode: spine3 (not only the root) is oriented by its rigid group, in AnalyIK and in the MixIK pass, and
    the MixIK solution still reports the suspicious joints. Without PR-C: on PR-C's output spine3's children sit
    rigidly where its fit put them, so both fits agree there."""
    from lib.kinematics.skeleton import global_rotations

    body, _, robust, _ = smpl
    _, joints, _ = _skeletons(body, 4, seed=27)
    noisy = joints + 0.01 * torch.randn(joints.shape, generator=torch.Generator().manual_seed(7), dtype=joints.dtype)

    def identity_twists(seen, betas):  # MixIK with zero twists: the same rotations as AnalyIK, from the second pass
        return [
            torch.tensor([1.0, 0.0], dtype=seen.dtype).expand(len(seen), len(p.twist_joints), 2)
            for p in SMPL_TREE.parts
        ]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        solution = robust.solve(noisy, identity_twists, refine=False)
    spine3 = next(j for j in SMPL_TREE.two_direction_by_joint if j != SMPL_TREE.root)
    for rotmats in (solution.analytic_rotmats, solution.rotmats):
        parent = global_rotations(SMPL_TREE, rotmats)[SMPL_TREE.parents[spine3]]
        expected = rigid_group_rotation(SMPL_TREE, spine3, solution.rest, solution.refined, parent)
        torch.testing.assert_close(rotmats[:, spine3], expected, rtol=0, atol=1e-10)
        directions = two_direction_rotation(SMPL_TREE, spine3, solution.rest, solution.refined, parent)
        assert (rotmats[:, spine3] - directions).abs().amax() > 1e-4  # the two fits differ on noisy joints
    assert solution.suspicious is not None and solution.suspicious.shape == (4, SMPL_TREE.num_joints)


def test_an_unknown_orientation_fit_is_named():
    rest = t_pose_skeleton(SMPL_TREE)[None]
    with pytest.raises(ValueError, match="unknown orientation fit 'procrustes'; use one of"):
        two_direction_rotation(SMPL_TREE, SMPL_TREE.root, rest, rest, fit="procrustes")
