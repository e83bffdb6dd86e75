"""SMPL-X finger rotations (METHOD.md section 5): ``local = R(vt_a -> vp_a)^T R(vt_b -> vp_b)`` for parent bone a
and child bone b, both in the current hand frame, accumulated along each finger.

On PR-C output every knuckle base sits where the wrist's rotation puts it, so the parent-bone correction is the
identity there and a dropped transpose shows nothing. Here the knuckle bases are moved off their rigid place and the
solver's finger rotations are compared with the composition written out in float64 below (own Rodrigues).
"""

import torch
from conftest import posed_skeleton, random_pose

from lib.core.config import REPO_ROOT
from lib.kinematics.tree import SMPLX_TREE
from lib.models.body_model import BodyModel
from lib.solver.analytic_ik import solve_rotations

# METHOD.md section 1: body parents 0-21, hands in local order (wrist, thumb, index, middle, ring, pinky; 4 each)
BODY_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19]
HANDS = (
    [20, 37, 38, 39, 66, 25, 26, 27, 67, 28, 29, 30, 68, 34, 35, 36, 69, 31, 32, 33, 70],
    [21, 52, 53, 54, 71, 40, 41, 42, 72, 43, 44, 45, 73, 49, 50, 51, 74, 46, 47, 48, 75],
)
BATCH = 32


def rodrigues_minimal(a, b):
    """Minimal rotation a -> b (B, 3) -> (B, 3, 3): axis a x b, I + sin K + (1 - cos) K^2 (non-degenerate input)."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    cross = torch.cross(a, b, dim=-1)
    sin, cos = cross.norm(dim=-1), (a * b).sum(-1)
    x, y, z = (cross / sin[:, None]).unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(-1, 3, 3)
    eye = torch.eye(3, dtype=a.dtype)
    return eye + sin[:, None, None] * k + (1 - cos)[:, None, None] * (k @ k)


def bones(joints, start, end):
    """Bone vectors (B, 3) from slot ``start`` to slot ``end``."""
    return joints[:, end] - joints[:, start]


def _rotation_angle(rotation):
    cos = ((rotation.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    return torch.arccos(cos)


def test_finger_rotation_is_parent_correction_times_swing():
    body = BodyModel.from_file(
        REPO_ROOT / "data/open/smplx/OPEN_SMPLX_NEUTRAL.npz", model_type="smplx", dtype=torch.float64
    )
    gen = torch.Generator().manual_seed(3)
    rest = body.rest_joints(torch.randn(BATCH, 10, generator=gen, dtype=torch.float64))
    target = posed_skeleton(SMPLX_TREE, random_pose(SMPLX_TREE, BATCH, scale=0.5, seed=4), rest)
    bases = [hand[k] for hand in HANDS for k in (1, 5, 9, 13, 17)]
    target[:, bases] += 0.006 * torch.randn(BATCH, len(bases), 3, generator=gen, dtype=torch.float64)

    local = solve_rotations(SMPLX_TREE, rest, target)

    glob = {0: local[:, 0]}
    for j in range(1, 22):
        glob[j] = glob[BODY_PARENTS[j]] @ local[:, j]
    base_corrections = []
    for hand in HANDS:
        for first in (1, 5, 9, 13, 17):
            chain = [hand[0]] + hand[first : first + 4]  # wrist, three finger joints, tip
            frame = glob[hand[0]]
            for parent, joint, child in zip(chain[:-2], chain[1:-1], chain[2:], strict=True):
                to_frame = frame.transpose(-1, -2)
                posed_parent_bone = (to_frame @ bones(target, parent, joint)[..., None])[..., 0]
                posed_child_bone = (to_frame @ bones(target, joint, child)[..., None])[..., 0]
                correction = rodrigues_minimal(bones(rest, parent, joint), posed_parent_bone)
                expected = correction.transpose(-1, -2) @ rodrigues_minimal(bones(rest, joint, child), posed_child_bone)
                error = (local[:, joint] - expected).abs().max().item()
                assert error < 1e-9, f"finger joint {joint}: local rotation off by {error:.3g}"
                if joint == chain[1]:
                    base_corrections.append(_rotation_angle(correction))
                frame = frame @ expected
    # the moved knuckle bases make the parent-bone correction a real rotation (else this test could not fail)
    assert torch.stack(base_corrections).median() > 0.02
