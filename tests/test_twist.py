"""Twist parameters per part scattered per joint: the errors a wrong network output gets."""

import pytest
import torch

from lib.kinematics.tree import SMPL_TREE
from lib.solver.twist import phi_per_joint


def _identity_twists(batch):
    return [torch.tensor([1.0, 0.0]).expand(batch, len(p.twist_joints), 2) for p in SMPL_TREE.parts]


def test_phi_per_joint_names_the_parts_it_expects():
    with pytest.raises(ValueError, match=r"expected 3 part outputs for the smpl tree \(leg, spine, arm\), got 2"):
        phi_per_joint(SMPL_TREE, _identity_twists(4)[:2])


def test_phi_per_joint_names_the_part_with_a_wrong_shape():
    parts = _identity_twists(3)
    parts[1] = parts[1][:2]  # the spine's twists for 2 frames, the others' for 3
    n = len(SMPL_TREE.parts[1].twist_joints)
    with pytest.raises(ValueError, match=rf"part spine: expected twists of shape \(3, {n}, 2\), got \(2, {n}, 2\)"):
        phi_per_joint(SMPL_TREE, parts)
