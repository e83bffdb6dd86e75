"""The robust mode's small helpers on exact cases: per-sequence means, filling missing joints from the rest skeleton,
and the one-line report of suspicious joints. Expected values are written out or computed by forward kinematics."""

import numpy as np
import torch
from conftest import posed_skeleton, random_pose

from lib.kinematics.skeleton import root_relative
from lib.kinematics.tree import SMPL_TREE
from lib.solver.pipeline import SUSPICIOUS_LONG, SUSPICIOUS_SHORT, fill_missing, implausible_bones, suspicious_message
from lib.solver.shape_inverse import sequence_mean


def test_sequence_mean_replaces_rows_by_their_sequence_mean():
    values = torch.tensor([[1.0, 10.0], [3.0, 20.0], [5.0, 0.0], [7.0, 30.0]], dtype=torch.float64)
    groups = torch.tensor([4, 9, 4, 4])  # ids need not be consecutive or sorted
    expected = np.array([[13 / 3, 40 / 3], [3.0, 20.0], [13 / 3, 40 / 3], [13 / 3, 40 / 3]])
    np.testing.assert_allclose(sequence_mean(values, groups).numpy(), expected, rtol=0, atol=1e-12)


def _exact_skeleton(batch=4, seed=3):
    gen = torch.Generator().manual_seed(seed)
    rest = torch.randn(1, SMPL_TREE.num_joints, 3, generator=gen, dtype=torch.float64) * 0.2
    rest = root_relative(SMPL_TREE, rest).expand(batch, -1, -1).clone()
    rotmats = random_pose(SMPL_TREE, batch, scale=0.6, seed=seed)
    return rest, rotmats


def test_a_missing_joint_below_a_swing_joint_hangs_under_the_grandparent_rotation():
    rest, rotmats = _exact_skeleton()
    # spine1, spine2, left collar and shoulder do not turn: AnalyIK (twist removed) recovers the chain above the
    # elbow exactly, and the shoulder's global rotation is the collar's
    rotmats[:, [3, 6, 13, 16]] = torch.eye(3, dtype=torch.float64)
    truth = posed_skeleton(SMPL_TREE, rotmats, rest)
    missing = torch.zeros(truth.shape[:2], dtype=torch.bool)
    missing[:, 18] = True  # the left elbow
    broken = truth.clone()
    broken[:, 18] = 0.0
    filled = fill_missing(SMPL_TREE, rest, broken, missing, "rigid")
    torch.testing.assert_close(filled, truth, rtol=0, atol=1e-9)


def test_a_missing_child_of_a_two_direction_joint_follows_the_rigid_group():
    rest, rotmats = _exact_skeleton(seed=5)
    truth = posed_skeleton(SMPL_TREE, rotmats, rest)
    missing = torch.zeros(truth.shape[:2], dtype=torch.bool)
    missing[1:3, 1] = True  # the left hip in two frames: the pelvis group (pelvis, right hip, spine1) places it
    broken = truth.clone()
    broken[1:3, 1] = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)
    filled = fill_missing(SMPL_TREE, rest, broken, missing, "rigid")
    torch.testing.assert_close(filled, truth, rtol=0, atol=1e-9)
    assert (broken[1:3, 1] - truth[1:3, 1]).norm(dim=-1).min() > 0.05  # it really was moved


def test_suspicious_report_names_frames_joints_and_the_remedy():
    mask = torch.zeros(12, SMPL_TREE.num_joints, dtype=torch.bool)
    at_origin = torch.zeros_like(mask)
    mask[1, 18] = at_origin[1, 18] = True
    mask[1, 20] = True
    mask[3:12, 4] = True  # 9 more frames: 10 in all, 8 listed
    warned = suspicious_message(SMPL_TREE, mask, at_origin, filled=False)
    assert "in 10 frame(s)" in warned
    assert "frame 1: left_elbow (at the origin), left_wrist" in warned
    assert "frame 3: left_knee" in warned and "frame 9: left_knee" in warned and "frame 10:" not in warned
    assert warned.endswith("; and 2 more frames")
    assert f"under {SUSPICIOUS_SHORT} / over {SUSPICIOUS_LONG} times" in warned
    assert "MODEL.ROBUST.SUSPICIOUS 'fill'" in warned and "treated as missing" not in warned
    filled = suspicious_message(SMPL_TREE, mask[:2], at_origin[:2], filled=True)
    assert "treated as missing: filled from the rest skeleton" in filled and "more frames" not in filled
    assert "in 1 frame(s)" in filled


def _line_skeleton(lengths):
    """A straight SMPL-slot skeleton (B=1) whose bones ending at each joint have the given lengths (metres)."""
    joints = torch.zeros(1, SMPL_TREE.num_joints, 3, dtype=torch.float64)
    for j in range(1, SMPL_TREE.num_joints):
        joints[0, j] = joints[0, SMPL_TREE.parents[j]] + torch.tensor([0.0, lengths[j], 0.0], dtype=torch.float64)
    return joints


def test_implausible_bones_are_the_ones_outside_half_to_twice_their_rest_length():
    rest = _line_skeleton([0.1] * SMPL_TREE.num_joints)
    lengths = [0.1] * SMPL_TREE.num_joints
    lengths[4], lengths[18], lengths[7], lengths[20] = 0.049, 0.201, 0.051, 0.199  # just outside / inside
    mask = implausible_bones(SMPL_TREE, rest, _line_skeleton(lengths))
    assert mask[0].nonzero().flatten().tolist() == [4, 18]
    # with a joint noise given, a bone is reported only when it is also off by more than 5 sigma of a bone length
    noisy = implausible_bones(SMPL_TREE, rest, _line_skeleton(lengths), torch.tensor([7.0], dtype=torch.float64))
    assert noisy[0].nonzero().flatten().tolist() == [4, 18]  # 51 / 101 mm off, 5 sigma = 49.5 mm
    quiet = implausible_bones(SMPL_TREE, rest, _line_skeleton(lengths), torch.tensor([7.5], dtype=torch.float64))
    assert quiet[0].nonzero().flatten().tolist() == [18]  # 5 sigma = 53.0 mm: the short bone is within the noise


def test_sequence_mean_with_more_columns_than_sequences():
    values = torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0], [10.0, 0.0, 1.0]], dtype=torch.float64)
    expected = np.array([[2.0, 3.0, 4.0], [2.0, 3.0, 4.0], [10.0, 0.0, 1.0]])
    np.testing.assert_allclose(sequence_mean(values, torch.tensor([0, 0, 1])).numpy(), expected, rtol=0, atol=1e-12)


def test_suspicious_report_reads_exactly():
    mask = torch.zeros(9, SMPL_TREE.num_joints, dtype=torch.bool)
    at_origin = torch.zeros_like(mask)
    mask[1, 18] = at_origin[1, 18] = True
    mask[1, 20] = True
    mask[2:9, 4] = True  # 8 frames: exactly the limit, all listed, no "more frames"
    head = f"suspicious input joints (at the origin, or a bone under {SUSPICIOUS_SHORT} / over {SUSPICIOUS_LONG} "
    head += "times its rest length beyond the joint noise) in 8 frame(s), "
    knees = "; ".join(f"frame {b}: left_knee" for b in range(2, 9))
    listed = f"frame 1: left_elbow (at the origin), left_wrist; {knees}"
    warn = "used as given; treat them as missing with MODEL.ROBUST.SUSPICIOUS 'fill' "
    warn += "(lib.api.load_solver(..., suspicious='fill'))"
    assert suspicious_message(SMPL_TREE, mask, at_origin, filled=False) == f"{head}{warn}: {listed}"
    fill = "treated as missing: filled from the rest skeleton under the parent's rotation"
    assert suspicious_message(SMPL_TREE, mask, at_origin, filled=True) == f"{head}{fill}: {listed}"


def test_a_missing_joint_hangs_under_rotations_of_the_asked_orientation_fit():
    # on noisy joints the rigid-group and the two-direction rule orient spine3 differently, and the elbow, hanging
    # from the shoulder under the collar's global rotation, follows the fit asked for
    rest, rotmats = _exact_skeleton(seed=8)
    truth = posed_skeleton(SMPL_TREE, rotmats, rest)
    noisy = truth + 0.01 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    missing = torch.zeros(truth.shape[:2], dtype=torch.bool)
    missing[:, 18] = True
    rigid = fill_missing(SMPL_TREE, rest, noisy, missing, "rigid")
    directions = fill_missing(SMPL_TREE, rest, noisy, missing, "directions")
    assert (rigid[:, 18] - directions[:, 18]).norm(dim=-1).min() > 1e-4
