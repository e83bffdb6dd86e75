"""Shape Inverse on the open body model, and the skeleton_2_beta file (official layout, safe loading)."""

import os

import numpy as np
import pytest
import torch

from lib.core.config import REPO_ROOT
from lib.kinematics.skeleton import bone_lengths
from lib.kinematics.tree import SMPL_TREE
from lib.models.body_model import BodyModel
from lib.models.skeleton_2_beta import load_skeleton_2_beta, save_skeleton_2_beta
from lib.solver.shape_inverse import ShapeInverse, fit_bone_length_model

OPEN_SMPL = REPO_ROOT / "data/open/smpl/OPEN_SMPL_NEUTRAL.npz"


@pytest.fixture(scope="module")
def open_smpl():
    return BodyModel.from_file(OPEN_SMPL, dtype=torch.float64)


def test_bone_lengths_average_pairs():
    joints = torch.zeros(1, 24, 3, dtype=torch.float64)
    joints[0, 1] = torch.tensor([0.1, 0.0, 0.0])  # left hip offset 100 mm
    joints[0, 2] = torch.tensor([0.0, -0.3, 0.0])  # right hip offset 300 mm
    lengths = bone_lengths(SMPL_TREE, joints)
    assert lengths.shape == (1, 14)
    assert lengths[0, 0].item() == pytest.approx(200.0)  # (100 + 300) / 2, in mm


def test_fit_recovers_an_exactly_linear_model():
    # rest joints whose bone lengths change exactly linearly along one axis: lengths = base + A beta
    base = torch.zeros(24, 3, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    slope = torch.rand(24, generator=gen, dtype=torch.float64) * 0.01

    def rest_joints(betas):
        out = torch.zeros(betas.shape[0], 24, 3, dtype=torch.float64)
        for j in range(1, 24):
            p = SMPL_TREE.parents[j]
            out[:, j] = out[:, p] + torch.stack([0.1 + slope[j] * betas[:, 0], 0 * betas[:, 0], 0 * betas[:, 0]], 1)
        return out + base

    matrix, residual = fit_bone_length_model(SMPL_TREE, rest_joints, num_betas=2, num_samples=200, sigma=0.5)
    assert residual < 1e-9
    assert torch.allclose(matrix[:, 1], torch.zeros(14, dtype=torch.float64), atol=1e-9)
    assert matrix[0, 0].item() == pytest.approx(1000 * (slope[1] + slope[2]).item() / 2)


def test_shape_inverse_recovers_betas_on_the_open_model(open_smpl):
    matrix, residual = fit_bone_length_model(SMPL_TREE, open_smpl.rest_joints, open_smpl.num_betas)
    assert residual < 2.0  # mm: bone lengths are close to linear in beta on this model
    solver = ShapeInverse(SMPL_TREE, matrix, open_smpl.rest_joints(torch.zeros(1, 10, dtype=torch.float64))[0])
    betas = torch.randn(256, 10, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    pose = torch.randn(256, 24, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 0.4
    joints = open_smpl(pose, betas).joints  # posed: bone lengths do not depend on pose
    estimate = solver(joints)
    assert (estimate - betas).abs().mean() < 0.05
    # and a pure translation / rotation of the skeleton changes nothing
    assert torch.allclose(solver(joints + 1.0), estimate, atol=1e-9)


def test_skeleton_2_beta_round_trip_in_official_layout(tmp_path):
    matrix = np.random.default_rng(0).normal(size=(14, 10))
    path = save_skeleton_2_beta(tmp_path / "skeleton_2_beta.npz", matrix)
    # what the reference does with the file
    official = np.load(path, allow_pickle=True)["lr"].item()["A1"]
    assert torch.is_tensor(official) and tuple(official.shape) == (14, 10)
    assert np.array_equal(load_skeleton_2_beta(path), matrix)


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_skeleton_2_beta_loading_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    payload = np.empty((), dtype=object)
    payload[()] = {"A1": _Exploit(marker)}
    path = tmp_path / "evil.npz"
    np.savez(path, lr=payload)
    with pytest.raises(ValueError, match="refused global posix.system"):
        load_skeleton_2_beta(path)
    assert not marker.exists()


def test_skeleton_2_beta_missing_file_names_the_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="DATA.SKELETON_2_BETA"):
        load_skeleton_2_beta(tmp_path / "nope.npz")


def test_make_skeleton_2_beta_tool_writes_the_official_layout(tmp_path, open_smpl):
    import subprocess
    import sys

    out = tmp_path / "skeleton_2_beta.npz"
    result = subprocess.run(
        [
            sys.executable,
            "tools/make_skeleton_2_beta.py",
            "--body",
            "smpl",
            "--model",
            str(OPEN_SMPL),
            "--out",
            str(out),
            "--samples",
            "2000",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "RMS residual" in result.stdout
    matrix = load_skeleton_2_beta(out)
    expected, _ = fit_bone_length_model(SMPL_TREE, open_smpl.rest_joints, 10, num_samples=2000)
    assert np.allclose(matrix, expected.numpy(), atol=1e-9)


def test_config_uses_a_given_skeleton_2_beta_file(tmp_path):
    from lib.core.smpl.config import get_cfg
    from lib.engine.build import build_body_model, build_solver

    matrix = np.random.default_rng(1).normal(size=(14, 12))  # official files may carry more columns
    path = save_skeleton_2_beta(tmp_path / "s2b.npz", matrix)
    cfg = get_cfg("configs/smpl/open_eval.yaml", ["DATA.SKELETON_2_BETA", str(path)])
    solver = build_solver(cfg, build_body_model(cfg, torch.device("cpu")))
    assert np.allclose(solver.shape_inverse.matrix.numpy(), matrix[:, :10])


# ---------------------------------------------------------------- small exact cases (mutation-testing survivors)
def _t_pose_inverse():
    """A Shape Inverse of the SMPL tree on a T-pose rest skeleton (the matrix is not read by the noise helpers)."""
    from conftest import t_pose_skeleton

    rest = t_pose_skeleton(SMPL_TREE)
    return ShapeInverse(SMPL_TREE, torch.ones(len(SMPL_TREE.bone_groups), 3, dtype=torch.float64), rest), rest


def _lengthen_left_bones(rest, extra_mm):
    """(F, J, 3) copies of ``rest`` where frame f's first bone of every left/right pair is ``extra_mm[f]`` longer:
    the bone's end and everything below it slide along the bone, so no other bone changes."""
    frames = rest[None].repeat(len(extra_mm), 1, 1)
    for group in (g for g in SMPL_TREE.bone_groups if len(g) == 2):
        end = group[0]
        below = {end}
        for j in range(SMPL_TREE.num_joints):  # parents precede children in slot order
            if SMPL_TREE.parents[j] in below:
                below.add(j)
        direction = rest[end] - rest[SMPL_TREE.parents[end]]
        step = direction / direction.norm()
        for f, extra in enumerate(extra_mm):
            frames[f, sorted(below)] += extra / 1000.0 * step
    return frames


def test_a_wrong_size_matrix_is_refused_with_its_row_count():
    rows = len(SMPL_TREE.bone_groups) + 1
    with pytest.raises(ValueError, match=rf"has {rows} rows; the smpl tree has {rows - 1} bone lengths"):
        ShapeInverse(SMPL_TREE, torch.zeros(rows, 10, dtype=torch.float64), torch.zeros(24, 3, dtype=torch.float64))


def test_noise_pairs_are_every_left_right_bone_pair():
    inverse, _ = _t_pose_inverse()
    pairs = [(inverse.bone_ends[a], inverse.bone_ends[b]) for a, b in inverse.pairs]
    assert pairs == [tuple(g) for g in SMPL_TREE.bone_groups if len(g) == 2]  # the last group, (22, 23), included


def test_noise_estimate_of_an_exact_left_right_disagreement():
    # every left bone d mm longer than its right twin: each pair differs by exactly d, so the variance estimate is
    # d^2 / (4 * median of chi-square(1)) = d^2 / (4 * 0.45494)
    inverse, rest = _t_pose_inverse()
    frames = _lengthen_left_bones(rest, [2.0, 3.0, 4.0])
    expected = torch.tensor([2.0, 3.0, 4.0], dtype=torch.float64) / (4 * 0.45494) ** 0.5
    torch.testing.assert_close(inverse.estimate_noise_mm(frames), expected, rtol=1e-9, atol=0)
    # one sequence: every frame gets the sequence's median (none is over 4x its variance)
    pooled = inverse.estimate_noise_mm(frames, torch.tensor([7, 7, 7]))
    torch.testing.assert_close(pooled, expected[1].expand(3), rtol=1e-9, atol=0)


def test_noise_debiasing_at_most_halves_a_bone():
    inverse, rest = _t_pose_inverse()
    lengths = inverse.single_bone_lengths(rest[None])
    debiased = inverse.debiased_lengths(rest[None], torch.tensor([1e4], dtype=torch.float64))
    torch.testing.assert_close(debiased, 0.5 * lengths, rtol=1e-12, atol=0)


def test_regularised_shape_uses_the_pooled_noise_of_a_sequence():
    # with groups and no given noise, all frames of a sequence share the sequence's noise estimate (here 3 mm / 1.349)
    from lib.solver.shape_inverse import ShapePrior

    inverse, rest = _t_pose_inverse()
    frames = _lengthen_left_bones(rest, [2.0, 3.0, 4.0])
    one = torch.zeros(3, dtype=torch.long)
    estimated = inverse.regularised(frames, ShapePrior(), one)
    given = inverse.regularised(frames, ShapePrior(noise_mm=3.0 / (4 * 0.45494) ** 0.5), one)
    torch.testing.assert_close(estimated, given, rtol=0, atol=1e-12)


def test_bone_length_model_samples_betas_with_the_given_sigma():
    seen = []

    def rest_joints(betas):
        seen.append(betas)
        return torch.zeros(betas.shape[0], 24, 3, dtype=betas.dtype)

    fit_bone_length_model(SMPL_TREE, rest_joints, num_betas=4, num_samples=4000, sigma=1.5)
    assert seen[0].shape == (4000, 4)
    assert seen[0].std().item() == pytest.approx(1.5, rel=0.05)
