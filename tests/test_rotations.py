"""Rotation building blocks against analytic cases, including the degenerate ones (METHOD.md section 12)."""

import math

import pytest
import roma
import torch

from lib.kinematics.rotations import (
    any_perpendicular,
    minimal_rotation,
    rotation_about_axis,
    rotmat_to_axis_angle,
    swing,
    twist_angle,
    two_direction_orientation,
)

D = torch.float64


def apply(r, v):
    return (r @ v[..., None])[..., 0]


def random_unit(n, seed=0):
    v = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=D)
    return v / v.norm(dim=-1, keepdim=True)


def assert_rotation(r):
    eye = torch.eye(3, dtype=r.dtype).expand(r.shape)
    assert torch.allclose(r.transpose(-1, -2) @ r, eye, atol=1e-9)
    assert torch.allclose(torch.linalg.det(r), torch.ones(r.shape[:-2], dtype=r.dtype), atol=1e-9)


def test_minimal_rotation_maps_direction_and_is_minimal():
    a, b = random_unit(500, 1) * 2.0, random_unit(500, 2) * 0.3
    r = minimal_rotation(a, b)
    assert_rotation(r)
    assert torch.allclose(apply(r, a / a.norm(dim=-1, keepdim=True)), b / b.norm(dim=-1, keepdim=True), atol=1e-9)
    angle = rotmat_to_axis_angle(r).norm(dim=-1)
    expected = torch.arccos((a * b).sum(-1) / a.norm(dim=-1) / b.norm(dim=-1))
    assert torch.allclose(angle, expected, atol=1e-7)


@pytest.mark.parametrize("offset", [0.0, 1e-12, 1e-7, 1e-4])
def test_minimal_rotation_parallel_and_antiparallel(offset):
    a = random_unit(200, 3)
    nudge = offset * random_unit(200, 4)
    parallel = minimal_rotation(a, a + nudge)
    assert torch.isfinite(parallel).all()
    assert torch.allclose(parallel, torch.eye(3, dtype=D).expand_as(parallel), atol=2e-4 + 10 * offset)
    anti = minimal_rotation(a, -a + nudge)
    assert_rotation(anti)
    assert torch.allclose(apply(anti, a), -a, atol=1e-3 + 10 * offset)


def test_minimal_rotation_zero_length_is_identity():
    a = random_unit(10, 5)
    r = minimal_rotation(a, torch.zeros_like(a))
    assert torch.equal(r, torch.eye(3, dtype=D).expand_as(r))
    r = minimal_rotation(torch.zeros_like(a), a)
    assert torch.equal(r, torch.eye(3, dtype=D).expand_as(r))


def test_minimal_rotation_gradients_finite_at_degenerate_inputs():
    a = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]], dtype=D, requires_grad=True)
    b = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0.3, 0.2, 0.1]], dtype=D, requires_grad=True)
    minimal_rotation(a, b).sum().backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_swing_twist_recomposes_and_twist_is_about_axis():
    r = roma.random_rotmat(1000, dtype=D)
    u = random_unit(1000, 6)
    angle = twist_angle(r, u)
    rebuilt = swing(r, u) @ rotation_about_axis(u, torch.cos(angle), torch.sin(angle))
    assert torch.allclose(rebuilt, r, atol=1e-9)


@pytest.mark.parametrize("angle", [0.0, 1e-9, 0.5, -2.0, math.pi - 1e-9, math.pi])
def test_twist_angle_of_pure_twist(angle):
    u = random_unit(50, 7)
    a = torch.full((50,), angle, dtype=D)
    r = rotation_about_axis(u, torch.cos(a), torch.sin(a))
    got = twist_angle(r, u)
    # +pi and -pi are the same twist
    assert torch.allclose(torch.cos(got), torch.cos(a), atol=1e-9)
    assert torch.allclose(torch.sin(got), torch.sin(a), atol=1e-7)


def test_twist_angle_when_swing_is_a_half_turn():
    u = torch.tensor([[0.0, 1.0, 0.0]], dtype=D)
    half_turn_about_x = roma.rotvec_to_rotmat(torch.tensor([[math.pi, 0, 0]], dtype=D))
    a = torch.tensor([0.7], dtype=D)
    r = half_turn_about_x @ rotation_about_axis(u, torch.cos(a), torch.sin(a))
    angle = twist_angle(r, u)
    assert torch.isfinite(angle).all()
    rebuilt = swing(r, u) @ rotation_about_axis(u, torch.cos(angle), torch.sin(angle))
    assert torch.allclose(rebuilt, r, atol=1e-9)


def test_two_direction_orientation_recovers_rigid_rotation():
    r = roma.random_rotmat(300, dtype=D)
    a, c = random_unit(300, 8), random_unit(300, 9)
    got = two_direction_orientation(a, apply(r, a), c, apply(r, c))
    assert torch.allclose(got, r, atol=1e-8)


def test_two_direction_orientation_degenerate_secondary():
    a = random_unit(20, 10)
    r = roma.random_rotmat(20, dtype=D)
    # secondary parallel to primary: only the primary is determined; result must still be a finite rotation
    got = two_direction_orientation(a, apply(r, a), 2 * a, apply(r, 2 * a))
    assert_rotation(got)
    assert torch.allclose(apply(got, a), apply(r, a), atol=1e-9)
    # opposite secondary projections: a clean half-turn about the primary axis
    c = torch.cross(a, random_unit(20, 11), dim=-1)
    got = two_direction_orientation(a, a, c, -c)
    assert_rotation(got)
    assert torch.allclose(apply(got, c), -c, atol=1e-9)


def test_rotmat_to_axis_angle_near_pi():
    axis = random_unit(100, 12)
    for angle in (math.pi, math.pi - 1e-6, 1e-8, 0.0):
        rotvec = axis * angle
        back = rotmat_to_axis_angle(roma.rotvec_to_rotmat(rotvec))
        again = roma.rotvec_to_rotmat(back)
        assert torch.allclose(again, roma.rotvec_to_rotmat(rotvec), atol=1e-9)


def test_quaternion_table_is_the_rotation_matrix_of_the_quaternion():
    """The (16, 9) table built at import maps q q^T to R(q) (roma's xyzw convention), for any unit quaternion."""
    from lib.kinematics.rotations import _quat_outer_to_rotmat

    table = _quat_outer_to_rotmat()
    quat = roma.random_unitquat(64, dtype=torch.float64)
    outer = (quat[:, :, None] * quat[:, None, :]).flatten(-2)
    torch.testing.assert_close((outer @ table).unflatten(-1, (3, 3)), roma.unitquat_to_rotmat(quat), rtol=0, atol=1e-12)


def test_perpendiculars_and_half_turns_of_a_batch_of_three():
    """A leading dimension of size 3 must not be mistaken for the vector axis (torch.cross without ``dim`` takes the
    first dimension of size 3)."""
    v = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 1.0], [-3.0, 0.1, 0.2]], dtype=D)
    p = any_perpendicular(v)
    assert torch.allclose((p * v).sum(-1), torch.zeros(3, dtype=D), atol=1e-12)
    assert torch.allclose(p.norm(dim=-1), torch.ones(3, dtype=D), atol=1e-12)
    r = minimal_rotation(v, -v)  # anti-parallel: a half turn about a perpendicular axis
    assert torch.allclose(apply(r, v), -v, atol=1e-9)
