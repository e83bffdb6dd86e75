"""Rotation building blocks of the solver, thin over roma. All functions accept any batch shape (``...x3``).

Degenerate inputs are handled explicitly (METHOD.md section 12): zero-length vectors give the identity,
anti-parallel vectors a half-turn about a perpendicular axis, and every angle comes from ``atan2`` so nothing is
taken outside the domain of ``acos``/``sqrt``.
"""

from __future__ import annotations

import roma
import torch
from torch import Tensor

# Below this norm a direction is treated as undefined (a zero-length bone).
EPS_LENGTH = 1e-9
# Below this value of 1 + cos(angle) two directions are treated as anti-parallel.
EPS_ANTIPARALLEL = 1e-6


def normalize(v: Tensor, eps: float = EPS_LENGTH) -> Tensor:
    """Unit vectors ``...x3``; zero vectors stay zero (not NaN)."""
    return v / v.norm(dim=-1, keepdim=True).clamp_min(eps)


def any_perpendicular(v: Tensor) -> Tensor:
    """A unit vector perpendicular to each ``...x3`` vector (crossed with the least-aligned basis axis)."""
    basis = torch.eye(3, dtype=v.dtype, device=v.device)
    axis = basis[v.abs().argmin(dim=-1)]
    return normalize(torch.cross(v, axis, dim=-1))


def minimal_rotation(a: Tensor, b: Tensor) -> Tensor:
    """The smallest rotation taking direction ``a`` onto direction ``b``: ``...x3, ...x3 -> ...x3x3``.

    Built as the unit quaternion (a x b, 1 + a.b), which is exact for all angles below pi. Anti-parallel inputs get
    a half-turn about a perpendicular axis; a zero-length input gives the identity.
    """
    a_norm, b_norm = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    a_unit, b_unit = a / a_norm.clamp_min(EPS_LENGTH), b / b_norm.clamp_min(EPS_LENGTH)  # == normalize(a), (b)
    xyz = torch.cross(a_unit, b_unit, dim=-1)
    w = 1.0 + (a_unit * b_unit).sum(-1, keepdim=True)
    antiparallel = w < EPS_ANTIPARALLEL
    xyz = torch.where(antiparallel, any_perpendicular(a_unit), xyz)
    degenerate = (a_norm < EPS_LENGTH) | (b_norm < EPS_LENGTH)
    xyz = xyz.masked_fill(degenerate, 0.0)
    w = w.masked_fill(antiparallel, 0.0).masked_fill(degenerate, 1.0)
    quat = torch.cat([xyz, w], dim=-1)  # roma's xyzw convention
    return unitquat_to_rotmat(quat / quat.norm(dim=-1, keepdim=True))


def _quat_outer_to_rotmat() -> Tensor:
    """(16, 9): the rotation matrix of a unit quaternion q = (x, y, z, w) as a linear map of ``q q^T`` (row-major),
    e.g. R00 = xx - yy - zz + ww (= 1 - 2(yy + zz) for |q| = 1) and R01 = 2(xy - zw)."""
    x, y, z, w = range(4)
    entries = {  # matrix entry -> [(i, j, coefficient of q_i q_j)]
        0: [(x, x, 1), (y, y, -1), (z, z, -1), (w, w, 1)],
        1: [(x, y, 2), (z, w, -2)],
        2: [(x, z, 2), (y, w, 2)],
        3: [(x, y, 2), (z, w, 2)],
        4: [(x, x, -1), (y, y, 1), (z, z, -1), (w, w, 1)],
        5: [(y, z, 2), (x, w, -2)],
        6: [(x, z, 2), (y, w, -2)],
        7: [(y, z, 2), (x, w, 2)],
        8: [(x, x, -1), (y, y, -1), (z, z, 1), (w, w, 1)],
    }
    table = torch.zeros(4, 4, 9, dtype=torch.float64)
    for entry, terms in entries.items():
        for i, j, coefficient in terms:
            table[i, j, entry] = coefficient
    return table.reshape(16, 9)


_QUAT_OUTER_TO_ROTMAT = _quat_outer_to_rotmat()
_QUAT_TABLES: dict[tuple, Tensor] = {}  # the table per (dtype, device)
# Below this many quaternions one product with the table above (3 ops) beats roma's elementwise formula (~25 ops);
# above it the elementwise formula is faster (a matrix product with 9 columns is memory-bound).
_SMALL_QUAT_BATCH = 4096


def unitquat_to_rotmat(quat: Tensor) -> Tensor:
    """Unit quaternions ``...x4`` (xyzw, roma's convention) -> rotation matrices ``...x3x3``, as roma's."""
    if quat.numel() > 4 * _SMALL_QUAT_BATCH:
        return roma.unitquat_to_rotmat(quat)
    key = (quat.dtype, quat.device)
    table = _QUAT_TABLES.get(key)
    if table is None:
        table = _QUAT_TABLES[key] = _QUAT_OUTER_TO_ROTMAT.to(dtype=quat.dtype, device=quat.device)
    return ((quat[..., :, None] * quat[..., None, :]).flatten(-2) @ table).unflatten(-1, (3, 3))


def rotation_about_axis(axis: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotation by the angle with the given cosine and sine about ``axis`` (Rodrigues): ``...x3, ..., ... -> ...x3x3``.

    ``cos`` and ``sin`` need not be normalised jointly; callers pass unit (cos, sin) pairs.
    """
    u = normalize(axis)
    k = skew(u)
    eye = torch.eye(3, dtype=u.dtype, device=u.device).expand(k.shape)
    return eye + sin[..., None, None] * k + (1.0 - cos)[..., None, None] * (k @ k)


def skew(v: Tensor) -> Tensor:
    """Cross-product matrix ``[v]_x``: ``...x3 -> ...x3x3``."""
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(v.shape + (3,))


def signed_angle_about(u: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Signed angle from ``a`` to ``b`` about unit axis ``u`` (vectors taken in the plane normal to ``u``): ``...``.

    Zero when either projection vanishes (``atan2(0, 0) = 0``).
    """
    u = normalize(u)
    a_perp = a - (a * u).sum(-1, keepdim=True) * u
    b_perp = b - (b * u).sum(-1, keepdim=True) * u
    sin = (u * torch.cross(a_perp, b_perp, dim=-1)).sum(-1)
    cos = (a_perp * b_perp).sum(-1)
    return torch.atan2(sin, cos)


def two_direction_orientation(a_rest: Tensor, a_posed: Tensor, c_rest: Tensor, c_posed: Tensor) -> Tensor:
    """Rotation taking a rest frame onto a posed one from a primary and a secondary direction (METHOD.md sec. 4).

    ``R1`` aligns the primary directions exactly; ``R2`` then turns about the posed primary direction so that the
    secondary directions agree as well as they can (their projections on the plane normal to it). Returns
    ``R2 @ R1``, ``...x3x3``. The turn angle comes from atan2, so opposite projections give a clean half-turn about
    the primary axis and a vanishing projection gives no turn.
    """
    r1 = minimal_rotation(a_rest, a_posed)
    c_rotated = (r1 @ c_rest[..., None])[..., 0]
    angle = signed_angle_about(a_posed, c_rotated, c_posed)
    r2 = rotation_about_axis(a_posed, torch.cos(angle), torch.sin(angle))
    return r2 @ r1


def rigid_rotation(source: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """Least-squares rotation (Kabsch / Procrustes) of a point set onto another, translation free: ``...x3x3``.

    ``source`` and ``target`` are ``...xNx3`` corresponding points, ``weights`` ``...xN`` (None = equal). The
    rotation minimises sum_i w_i |R (s_i - s_mean) - (t_i - t_mean)|^2 with weighted means, a proper rotation
    (no reflection) even for flat or collinear sets.
    """
    rotation, _ = roma.rigid_points_registration(source, target, weights=weights)
    return rotation


def swing(rotation: Tensor, axis: Tensor) -> Tensor:
    """Swing part of ``rotation`` about ``axis``: the minimal rotation taking ``axis`` onto ``rotation @ axis``."""
    return minimal_rotation(axis, (rotation @ axis[..., None])[..., 0])


def twist_angle(rotation: Tensor, axis: Tensor) -> Tensor:
    """Signed angle of the twist ``swing^T R`` about ``+axis``: ``...x3x3, ...x3 -> ...``.

    The twist is a rotation about ``axis``, so its angle is read as the turn it gives a vector perpendicular to it.
    """
    twist = swing(rotation, axis).transpose(-1, -2) @ rotation
    u = normalize(axis)
    probe = any_perpendicular(u)
    return signed_angle_about(u, probe, (twist @ probe[..., None])[..., 0])


def rotmat_to_axis_angle(rotation: Tensor) -> Tensor:
    """``...x3x3 -> ...x3`` axis-angle, accurate near 0 and pi (roma's conversion through quaternions)."""
    return roma.rotmat_to_rotvec(rotation)


def axis_angle_to_rotmat(rotvec: Tensor) -> Tensor:
    """``...x3 -> ...x3x3``."""
    return roma.rotvec_to_rotmat(rotvec)
