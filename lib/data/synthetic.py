"""Synthetic training / test data: anatomically plausible SMPL and SMPL-X poses in short smooth sequences.

Every joint rotation is built from three anatomical angles (degrees) on idealised axes of the body model's rest
frame (y up, the body faces +z, +x is the body's LEFT; T-pose with the arms along +-x, palms down, hands flat):

    R = exp(swing1 * e1 + swing2 * e2) @ exp(twist * u)

``u`` is the joint's idealised bone direction (towards its child), ``e1`` and ``e2`` are perpendicular to it, so
the first factor is a pure swing (it moves the bone) and the second a pure twist about the bone (what joint
positions cannot show and the network must learn). Each axis is signed so that a positive angle is the anatomical
motion named in the table (flexion, abduction, internal rotation, ...). Limits are per angle, ``(low, neutral,
high)``, with the swing pair further confined to the ellipse through its four limits; both regions are convex, so
interpolating between keyposes never leaves them. Left-side joints are tabulated; a right-side joint uses the same
table and mirrors the resulting rotation vector through the sagittal plane, ``(x, y, z) -> (x, -y, -z)``.
Given a body model's rest joints (``rest_joints=``, as ``make_synthetic_db`` does), each twist axis follows the
model's rest bone, so the sampled twist is exactly the stored twist at beta = 0. Right-side twists are stored with
the opposite sign of the anatomical angle (the twist is measured about +rest bone). Limits and their sources:
``docs/synthetic_data.md``.

Sequences: each ``vid_name`` is 8-32 frames, eased (smoothstep) interpolation between keyposes 6-12 frames apart;
keyposes follow a damped random walk (each moves part of the way towards a fresh independent sample), so
consecutive frames are close. Shapes: ``beta ~ N(0, 1)`` (10), constant within a sequence; optionally kids with
an 11th beta ~ U(0, 1) (the kid-template blend weight).

Public API:
    sample_smpl_poses(n, seed, ...)   -> SyntheticPoses, pose (n, 24, 3) axis-angle incl. the root
    sample_smplx_poses(n, seed, ...)  -> SyntheticPoses, pose (n, 55, 3): body as SMPL, jaw / eyes zero, hands
    sample_hand_poses(n, seed)        -> (n, 2, 15, 3) independent left / right hand poses
    make_synthetic_db(body, n, seed, body_model, ...)   -> dict in the official db layout (twist angles computed)
    ensure_synthetic_db(body, split, db_dir, body_model_path, n, ...) -> path; generates a missing db once
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import roma
import torch

__all__ = [
    'JointLimit', 'SMPL_LIMITS', 'HAND_LIMITS', 'SyntheticPoses', 'SequenceConfig', 'DEFAULT_SEEDS',
    'sample_smpl_poses', 'sample_smplx_poses', 'sample_hand_poses', 'dofs_to_rotvec', 'mirror_rotvec',
    'make_synthetic_db', 'ensure_synthetic_db', 'synthetic_db_path', 'SYNTHETIC_FORMAT_VERSION',
]

SYNTHETIC_FORMAT_VERSION = 1
# Default seeds per split; the split name is mixed into the random stream as well, so train and test differ even
# with equal seeds, and their vid_names carry the split, so they can never collide.
DEFAULT_SEEDS = {'train': 1, 'test': 2}
_SPLIT_CODE = {'train': 0, 'test': 1}
_BODY_CODE = {'smpl': 0, 'smplx': 1}


# ---------------------------------------------------------------------------------------------------------------
# Joint limit tables
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class JointLimit:
    """Limits of one joint (left-side convention), angles in degrees as (low, neutral, high).

    ``twist_axis`` u is the idealised bone direction; ``swing_axes`` (e1, e2) are perpendicular to it. A positive
    angle rotates about the signed axis by the right-hand rule and is the motion named in ``names``.
    """

    name: str
    twist_axis: tuple[float, float, float]
    swing_axes: tuple[tuple[float, float, float], tuple[float, float, float]]
    swing1: tuple[float, float, float]
    swing2: tuple[float, float, float]
    twist: tuple[float, float, float]
    names: tuple[str, str, str]
    mirror: bool = False   # right-side joint: mirror the rotation vector of the left-side construction

    def mirrored(self, name: str) -> 'JointLimit':
        return JointLimit(name, self.twist_axis, self.swing_axes, self.swing1, self.swing2, self.twist, self.names,
                          mirror=True)

    def ranges(self) -> np.ndarray:
        """(3, 3): rows swing1, swing2, twist; columns low, neutral, high (degrees)."""
        return np.array([self.swing1, self.swing2, self.twist], dtype=np.float64)


_X, _Y, _Z = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)
_NX, _NY, _NZ = (-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0)
_ZERO = (0.0, 0.0, 0.0)


def _spine(name: str, flex: float, ext: float, lateral: float, rotation: float, neutral_flex: float = 0.0):
    # trunk bone points up (+y); flexion (bending forward, +y towards +z) is about +x
    return JointLimit(name, _Y, (_X, _Z), (-ext, neutral_flex, flex), (-lateral, 0.0, lateral),
                      (-rotation, 0.0, rotation), ('flexion', 'lateral_bending', 'axial_rotation'))


def _leaf(name: str):
    return JointLimit(name, _Y, (_X, _Z), _ZERO, _ZERO, _ZERO, ('none', 'none', 'none'))


# Left-side joints (SMPL indices). Sources and the reasoning for each row: docs/synthetic_data.md.
_L_HIP = JointLimit('left_hip', _NY, (_NX, _Z), (-20.0, 10.0, 120.0), (-25.0, 5.0, 45.0), (-45.0, 0.0, 45.0),
                    ('flexion', 'abduction', 'internal_rotation'))
_L_KNEE = JointLimit('left_knee', _NY, (_X, _Z), (0.0, 15.0, 135.0), (-3.0, 0.0, 3.0), (-5.0, 0.0, 5.0),
                     ('flexion', 'varus_valgus', 'tibial_rotation'))
_L_ANKLE = JointLimit('left_ankle', _Z, (_NX, _Y), (-50.0, 0.0, 20.0), (-10.0, 0.0, 10.0), (-15.0, 0.0, 35.0),
                      ('dorsiflexion', 'abduction', 'inversion'))
_L_FOOT = JointLimit('left_foot', _Z, (_NX, _Y), (-20.0, 0.0, 30.0), (-5.0, 0.0, 5.0), (-5.0, 0.0, 5.0),
                     ('toe_extension', 'abduction', 'rotation'))
_L_COLLAR = JointLimit('left_collar', _X, (_Z, _NY), (-10.0, 0.0, 30.0), (-15.0, 0.0, 15.0), (-10.0, 0.0, 10.0),
                       ('elevation', 'protraction', 'rotation'))
_L_SHOULDER = JointLimit('left_shoulder', _X, (_Z, _NY), (-85.0, -45.0, 90.0), (-45.0, 15.0, 130.0),
                         (-90.0, 0.0, 70.0), ('elevation', 'horizontal_flexion', 'internal_rotation'))
_L_ELBOW = JointLimit('left_elbow', _X, (_NY, _Z), (0.0, 20.0, 145.0), (-3.0, 0.0, 3.0), (-5.0, 0.0, 5.0),
                      ('flexion', 'carrying_angle', 'twist'))
_L_WRIST = JointLimit('left_wrist', _X, (_NZ, _NY), (-70.0, 0.0, 80.0), (-30.0, 0.0, 20.0), (-120.0, -20.0, 15.0),
                      ('flexion', 'radial_deviation', 'pronation'))
_L_HAND = JointLimit('left_hand', _X, (_NZ, _NY), (-10.0, 5.0, 30.0), (-5.0, 0.0, 5.0), (-5.0, 0.0, 5.0),
                     ('finger_flexion', 'deviation', 'twist'))

SMPL_LIMITS: tuple[JointLimit, ...] = (
    _leaf('pelvis'),                      # 0: the root is sampled separately (global orientation)
    _L_HIP, _L_HIP.mirrored('right_hip'),                                                   # 1, 2
    _spine('spine1', 27.0, 8.0, 12.0, 15.0, 3.0),                                          # 3
    _L_KNEE, _L_KNEE.mirrored('right_knee'),                                                # 4, 5
    _spine('spine2', 27.0, 8.0, 12.0, 15.0, 3.0),                                          # 6
    _L_ANKLE, _L_ANKLE.mirrored('right_ankle'),                                             # 7, 8
    _spine('spine3', 27.0, 8.0, 12.0, 15.0, 3.0),                                          # 9
    _L_FOOT, _L_FOOT.mirrored('right_foot'),                                                # 10, 11
    _spine('neck', 22.0, 22.0, 22.0, 30.0),                                                # 12
    _L_COLLAR, _L_COLLAR.mirrored('right_collar'),                                          # 13, 14
    _spine('head', 22.0, 22.0, 22.0, 30.0),                                                # 15
    _L_SHOULDER, _L_SHOULDER.mirrored('right_shoulder'),                                    # 16, 17
    _L_ELBOW, _L_ELBOW.mirrored('right_elbow'),                                             # 18, 19
    _L_WRIST, _L_WRIST.mirrored('right_wrist'),                                             # 20, 21
    _L_HAND, _L_HAND.mirrored('right_hand'),                                                # 22, 23
)

# --- hands (SMPL-X): left hand, fingers along +x, palm facing -y, thumb side +z -------------------------------
# Finger flexion (curl towards the palm, +x towards -y) is a rotation about -z; "radial" abduction (towards the
# thumb, +x towards +z) is about -y. Order of a hand pose: index, middle, pinky, ring, thumb; 3 joints each.
_THUMB_U = tuple((np.array([1.0, 0.0, 1.0]) / math.sqrt(2.0)).tolist())          # thumb bone, in the palm plane
_THUMB_Q = tuple((np.array([1.0, 0.0, -1.0]) / math.sqrt(2.0)).tolist())         # in-plane, towards the fingers
# Thumb MCP / IP flexion curls the thumb towards the palm and across it: the tip moves towards the palm normal (-y)
# tilted 30 degrees towards the fingers.
_THUMB_CURL = np.array([0.0, -math.cos(math.radians(30.0)), 0.0]) + math.sin(math.radians(30.0)) * np.array(_THUMB_Q)
_THUMB_FLEX = tuple((np.cross(_THUMB_U, _THUMB_CURL) / np.linalg.norm(np.cross(_THUMB_U, _THUMB_CURL))).tolist())
_THUMB_SIDE = tuple(np.cross(_THUMB_FLEX, _THUMB_U).tolist())


def _finger(name: str, mcp_abduction: tuple[float, float, float]):
    mcp = JointLimit(f'{name}1', _X, (_NZ, _NY), (-20.0, 10.0, 90.0), mcp_abduction, (-5.0, 0.0, 5.0),
                     ('flexion', 'radial_abduction', 'twist'))
    pip = JointLimit(f'{name}2', _X, (_NZ, _NY), (0.0, 10.0, 100.0), (-3.0, 0.0, 3.0), (-3.0, 0.0, 3.0),
                     ('flexion', 'deviation', 'twist'))
    dip = JointLimit(f'{name}3', _X, (_NZ, _NY), (0.0, 5.0, 80.0), (-2.0, 0.0, 2.0), (-2.0, 0.0, 2.0),
                     ('flexion', 'deviation', 'twist'))
    return mcp, pip, dip


HAND_LIMITS: tuple[JointLimit, ...] = (
    *_finger('index', (-10.0, 0.0, 20.0)),
    *_finger('middle', (-10.0, 0.0, 10.0)),
    *_finger('pinky', (-20.0, 0.0, 10.0)),
    *_finger('ring', (-15.0, 0.0, 10.0)),
    # thumb CMC: palmar abduction (thumb in front of the palm, about the in-plane axis q), flexion across the palm
    # (in the palm plane, towards the fingers: about +y), pronation of the metacarpal (about the thumb bone).
    JointLimit('thumb1', _THUMB_U, (_THUMB_Q, _Y), (-10.0, 10.0, 60.0), (-20.0, 0.0, 25.0), (-10.0, 0.0, 45.0),
               ('palmar_abduction', 'flexion', 'opposition_pronation')),
    JointLimit('thumb2', _THUMB_U, (_THUMB_FLEX, _THUMB_SIDE), (-10.0, 10.0, 50.0), (-5.0, 0.0, 5.0),
               (-5.0, 0.0, 5.0), ('flexion', 'deviation', 'twist')),
    JointLimit('thumb3', _THUMB_U, (_THUMB_FLEX, _THUMB_SIDE), (-15.0, 5.0, 80.0), (-3.0, 0.0, 3.0),
               (-3.0, 0.0, 3.0), ('flexion', 'deviation', 'twist')),
)
# Coupling of the distal joint to the middle one: DIP = r * PIP + e, r ~ U(0.55, 0.8), e ~ U(-5, 5) degrees,
# clipped to the DIP range (the classic DIP ~ 2/3 PIP rule).
DIP_RATIO = (0.55, 0.8)
DIP_NOISE = 5.0
# Opposition: a per-keypose amount o ~ U(0, 1) pulls the thumb CMC angles towards o * OPPOSITION (degrees of
# palmar abduction, flexion across the palm, pronation) with weight OPPOSITION_WEIGHT.
OPPOSITION = (40.0, 15.0, 40.0)  # inside the CMC swing ellipse, so the pull keeps the angles within limits
OPPOSITION_WEIGHT = 0.7
_FINGER_SLOTS = {'index': 0, 'middle': 3, 'pinky': 6, 'ring': 9, 'thumb': 12}

# Root: global orientation = base @ yaw(about +y) @ tilt(pitch about +x, roll about +z).
ROOT_TILT = 15.0          # degrees, pitch and roll limit of an upright body
ROOT_YAW_STEP = 60.0      # degrees, largest yaw change between keyposes
ROOT_FREE_FRACTION = 0.2  # sequences whose base orientation is uniformly random (lying, upside down, ...)


def _check_table(table: Sequence[JointLimit]) -> None:
    for lim in table:
        u = np.asarray(lim.twist_axis)
        e1, e2 = (np.asarray(e) for e in lim.swing_axes)
        if not np.isclose(np.linalg.norm(u), 1.0):
            raise ValueError(f'{lim.name}: twist axis must be a unit vector')
        if abs(u @ e1) > 1e-9 or abs(u @ e2) > 1e-9 or abs(e1 @ e2) > 1e-9:
            raise ValueError(f'{lim.name}: swing axes must be perpendicular to the twist axis and to each other')
        for lo, neutral, hi in lim.ranges():
            if not lo <= 0.0 <= hi or not lo <= neutral <= hi:
                raise ValueError(f'{lim.name}: each range needs low <= neutral <= high and must contain 0')


_check_table(SMPL_LIMITS)
_check_table(HAND_LIMITS)


class _Table:
    """A limit table as arrays: axes (J, 3, 3) [e1, e2, u], ranges (J, 3, 3) degrees, mirror (J,)."""

    def __init__(self, table: Sequence[JointLimit]):
        self.names = tuple(lim.name for lim in table)
        self.axes = np.stack([np.stack([lim.swing_axes[0], lim.swing_axes[1], lim.twist_axis]) for lim in table])
        self.ranges = np.stack([lim.ranges() for lim in table])
        self.mirror = np.array([lim.mirror for lim in table])


_SMPL_TABLE = _Table(SMPL_LIMITS)
_HAND_TABLE = _Table(HAND_LIMITS)

# Largest angle (degrees) between an idealised axis and the model's bone for the bone to be used.
_MAX_AXIS_DEVIATION = 60.0
_MIRROR = np.array([-1.0, 1.0, 1.0])


def _aligned_axes(axes: np.ndarray, bones: np.ndarray) -> np.ndarray:
    """axes (J, 3, 3) rows [e1, e2, u] (left-side convention); bones (J, 3) the model's rest bone vectors in the
    same convention (right-side bones mirrored), NaN rows kept idealised. Returns axes with u along the bone and
    e1, e2 the idealised swing axes made perpendicular to it (Gram-Schmidt, signs kept)."""
    out = axes.copy()
    for row, bone in enumerate(bones):
        length = np.linalg.norm(bone)
        if not np.isfinite(length) or length < 1e-9:
            continue
        u = bone / length
        if np.degrees(np.arccos(np.clip(u @ axes[row, 2], -1.0, 1.0))) > _MAX_AXIS_DEVIATION:
            continue
        e1 = axes[row, 0] - (axes[row, 0] @ u) * u
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(u, e1)
        out[row] = np.stack([e1, e2 if e2 @ axes[row, 1] >= 0 else -e2, u])
    return out


@dataclass(frozen=True)
class _Axes:
    """Per-joint axes for one sampling run: body rows 1..Jb, left hand, right hand (15 rows each)."""

    body: np.ndarray
    left_hand: np.ndarray
    right_hand: np.ndarray


def _rest_bones(body: str, rest: np.ndarray, slots: Sequence[int], ideal: np.ndarray,
                mirror: np.ndarray) -> np.ndarray:
    """Rest bone of each slot (to its child most aligned with the idealised axis: spine3 -> neck, an SMPL-X wrist ->
    a finger base), in the left-side convention (right-side bones mirrored); NaN for leaves."""
    from lib.kinematics.tree import TREES

    children = TREES[body].children
    bones = np.full((len(slots), 3), np.nan)
    for row, slot in enumerate(slots):
        kids = children.get(slot, ())
        if not kids:
            continue
        candidates = (rest[list(kids)] - rest[slot]) * (_MIRROR if mirror[row] else 1.0)
        unit = candidates / np.maximum(np.linalg.norm(candidates, axis=1, keepdims=True), 1e-12)
        bones[row] = candidates[int(np.argmax(unit @ ideal[row]))]
    return bones


def _axes_for(body: str, rest_joints: np.ndarray | None) -> _Axes:
    """Axes of the body rows (joints 1..21 / 1..23) and of both hands, idealised or aligned to ``rest_joints``
    ((24, 3) SMPL or (76, 3) SMPL-X slots, METHOD.md section 1)."""
    num_body = 23 if body == 'smpl' else 21
    body_axes = _SMPL_TABLE.axes[1:1 + num_body]
    left, right = _HAND_TABLE.axes, _HAND_TABLE.axes
    if rest_joints is None:
        return _Axes(body_axes, left, right)
    rest = np.asarray(rest_joints, dtype=np.float64)
    need = 24 if body == 'smpl' else 76
    if rest.ndim != 2 or rest.shape[1] != 3 or len(rest) < need:
        raise ValueError(f'rest_joints must be ({need}, 3) for {body}, got {rest.shape}')
    body_mirror = _SMPL_TABLE.mirror[1:1 + num_body]
    body_axes = _aligned_axes(body_axes, _rest_bones(body, rest, range(1, 1 + num_body), body_axes[:, 2],
                                                     body_mirror))
    if body == 'smplx':   # hand slots 25-39 (left) and 40-54 (right), in the hand table's order
        left = _aligned_axes(left, _rest_bones(body, rest, range(25, 40), left[:, 2], np.zeros(15, bool)))
        right = _aligned_axes(right, _rest_bones(body, rest, range(40, 55), right[:, 2], np.ones(15, bool)))
    return _Axes(body_axes, left, right)


# ---------------------------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SequenceConfig:
    """Sequence model: lengths (frames), keypose spacing (frames), keypose random-walk step fraction."""

    length: tuple[int, int] = (8, 32)
    spacing: tuple[int, int] = (6, 12)
    step: tuple[float, float] = (0.2, 0.6)
    beta_concentration: float = 2.0   # angle samples: neutral + Beta(a, a) spread over the range (a=1: uniform)

    def __post_init__(self):
        if not 1 <= self.length[0] <= self.length[1]:
            raise ValueError('SequenceConfig.length must be 1 <= low <= high')
        if not 1 <= self.spacing[0] <= self.spacing[1]:
            raise ValueError('SequenceConfig.spacing must be 1 <= low <= high')
        if not 0.0 < self.step[0] <= self.step[1] <= 1.0:
            raise ValueError('SequenceConfig.step must be 0 < low <= high <= 1')


@dataclass
class SyntheticPoses:
    """Sampled frames, grouped in sequences (contiguous rows share a ``vid_name``).

    pose: (N, P, 3) axis-angle incl. the root (float64); betas: (N, 10 or 11); vid_name: (N,) str;
    frame: (N,) index within the sequence; dofs: (N, P, 3) anatomical angles in degrees (swing1, swing2, twist of
    the left-side convention; root row zero); for SMPL-X also hand_dofs (N, 2, 15, 3).
    """

    pose: np.ndarray
    betas: np.ndarray
    vid_name: np.ndarray
    frame: np.ndarray
    dofs: np.ndarray
    hand_dofs: np.ndarray | None = None


def _rng_streams(seed: int, *salt: int, count: int = 6) -> list[np.random.Generator]:
    root = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *salt])
    return [np.random.default_rng(s) for s in root.spawn(count)]


def _sample_angles(rng: np.random.Generator, ranges: np.ndarray, shape: tuple[int, ...],
                   concentration: float) -> np.ndarray:
    """Angles (shape + (J, 3)) in degrees: neutral + z * (distance to the limit on z's side), z = 2 Beta(a,a) - 1,
    then the swing pair scaled into the ellipse through its four limits."""
    lo, neutral, hi = ranges[..., 0], ranges[..., 1], ranges[..., 2]
    z = 2.0 * rng.beta(concentration, concentration, size=shape + ranges.shape[:2]) - 1.0
    angles = neutral + np.where(z >= 0.0, z * (hi - neutral), z * (neutral - lo))
    return _clamp_swing_ellipse(angles, ranges)


def _clamp_swing_ellipse(angles: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    lim = np.where(angles[..., :2] >= 0.0, ranges[..., :2, 2], -ranges[..., :2, 0])
    norm = np.divide(angles[..., :2], lim, out=np.zeros_like(angles[..., :2]), where=lim > 0)
    radius = np.sqrt((norm ** 2).sum(-1, keepdims=True))
    out = angles.copy()
    out[..., :2] *= np.where(radius > 1.0, 1.0 / np.maximum(radius, 1e-12), 1.0)
    return out


def mirror_rotvec(rotvec: np.ndarray | torch.Tensor):
    """Mirror rotation vectors through the sagittal plane (x -> -x): (x, y, z) -> (x, -y, -z)."""
    sign = np.array([1.0, -1.0, -1.0])
    if torch.is_tensor(rotvec):
        return rotvec * torch.as_tensor(sign, dtype=rotvec.dtype, device=rotvec.device)
    return rotvec * sign


def dofs_to_rotvec(dofs: np.ndarray, axes: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """Anatomical angles (..., J, 3) degrees -> axis-angle (..., J, 3): exp(a1 e1 + a2 e2) @ exp(t u), mirrored
    for the joints flagged in ``mirror`` (J,)."""
    rad = np.deg2rad(dofs)
    swing = rad[..., 0:1] * axes[:, 0] + rad[..., 1:2] * axes[:, 1]
    twist = rad[..., 2:3] * axes[:, 2]
    rotvec = _compose_rotvecs(swing, twist)
    return np.where(mirror[:, None], mirror_rotvec(rotvec), rotvec)


def _rotvec_to_quat(rotvec: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 4) unit quaternions (x, y, z, w)."""
    angle = np.linalg.norm(rotvec, axis=-1, keepdims=True)
    half = 0.5 * angle
    # sin(half) / angle, with its series near 0
    scale = np.where(angle > 1e-6, np.sin(half) / np.maximum(angle, 1e-300), 0.5 - angle ** 2 / 48.0)
    return np.concatenate([rotvec * scale, np.cos(half)], -1)


def _quat_to_rotvec(quat: np.ndarray) -> np.ndarray:
    """(..., 4) unit quaternions (x, y, z, w) -> (..., 3) axis-angle with angle in [0, pi]."""
    quat = np.where(quat[..., 3:] < 0.0, -quat, quat)
    xyz, w = quat[..., :3], quat[..., 3:]
    norm = np.linalg.norm(xyz, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(norm, w)
    scale = np.where(norm > 1e-9, angle / np.maximum(norm, 1e-300), 2.0 / np.maximum(w, 1e-300))
    return xyz * scale


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (x, y, z, w) quaternions: the rotation a @ b."""
    av, aw = a[..., :3], a[..., 3:]
    bv, bw = b[..., :3], b[..., 3:]
    return np.concatenate([aw * bv + bw * av + np.cross(av, bv), aw * bw - (av * bv).sum(-1, keepdims=True)], -1)


def _compose_rotvecs(*rotvecs: np.ndarray) -> np.ndarray:
    """Axis-angle of the product R(r1) @ R(r2) @ ... (all (..., 3), broadcast)."""
    quat = _rotvec_to_quat(rotvecs[0])
    for r in rotvecs[1:]:
        quat = _quat_mul(quat, _rotvec_to_quat(r))
    return _quat_to_rotvec(quat)


def _keypose_walk(fresh: np.ndarray, step: np.ndarray) -> np.ndarray:
    """fresh (M, K, ...) independent samples -> keyposes: key_k = key_{k-1} + step * (fresh_k - key_{k-1})."""
    keys = fresh.copy()
    s = step.reshape((-1,) + (1,) * (fresh.ndim - 2))
    for k in range(1, fresh.shape[1]):
        keys[:, k] = keys[:, k - 1] + s * (fresh[:, k] - keys[:, k - 1])
    return keys


class _Layout:
    """Sequence layout of N frames: per frame its sequence, its index in it, the keypose pair and the blend."""

    def __init__(self, n: int, rng: np.random.Generator, cfg: SequenceConfig):
        lo, hi = cfg.length
        max_seqs = n // lo + 1
        lengths = rng.integers(lo, hi + 1, size=max_seqs)
        ends = np.cumsum(lengths)
        self.num_seqs = int(np.searchsorted(ends, n) + 1)
        lengths = lengths[:self.num_seqs]
        lengths[-1] -= int(ends[self.num_seqs - 1] - n)       # truncate the last sequence to n frames in total
        self.lengths = lengths
        self.spacing = rng.integers(cfg.spacing[0], cfg.spacing[1] + 1, size=self.num_seqs)
        self.step = rng.uniform(cfg.step[0], cfg.step[1], size=self.num_seqs)
        self.num_keys = (hi - 1) // cfg.spacing[0] + 2
        self.seq = np.repeat(np.arange(self.num_seqs), lengths)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.frame = np.arange(n) - starts[self.seq]
        spacing = self.spacing[self.seq]
        self.key = self.frame // spacing
        f = (self.frame % spacing) / spacing
        self.blend = f * f * (3.0 - 2.0 * f)                  # smoothstep: C1 across keyposes

    def interpolate(self, keys: np.ndarray) -> np.ndarray:
        """keys (num_seqs, num_keys, ...) -> per-frame values (N, ...)."""
        a = keys[self.seq, self.key]
        b = keys[self.seq, self.key + 1]
        w = self.blend.reshape((-1,) + (1,) * (a.ndim - 1))
        return a + w * (b - a)


def _couple_hand(rng: np.random.Generator, hand: np.ndarray) -> np.ndarray:
    """hand (..., 15, 3) angles: DIP flexion coupled to PIP; thumb CMC pulled towards an opposition amount."""
    out = hand.copy()
    for finger in ('index', 'middle', 'pinky', 'ring'):
        s = _FINGER_SLOTS[finger]
        ratio = rng.uniform(*DIP_RATIO, size=out.shape[:-2])
        noise = rng.uniform(-DIP_NOISE, DIP_NOISE, size=out.shape[:-2])
        lo, _, hi = _HAND_TABLE.ranges[s + 2, 0]
        out[..., s + 2, 0] = np.clip(ratio * out[..., s + 1, 0] + noise, lo, hi)
        # keep the DIP's small deviation inside its swing ellipse for the new flexion
        dev_lo, _, dev_hi = _HAND_TABLE.ranges[s + 2, 1]
        room = np.sqrt(np.clip(1.0 - (out[..., s + 2, 0] / hi) ** 2, 0.0, 1.0))
        out[..., s + 2, 1] = np.clip(out[..., s + 2, 1], dev_lo * room, dev_hi * room)
    t = _FINGER_SLOTS['thumb']
    amount = rng.uniform(0.0, 1.0, size=out.shape[:-2] + (1,))
    target = amount * np.asarray(OPPOSITION)
    out[..., t, :] = (1.0 - OPPOSITION_WEIGHT) * out[..., t, :] + OPPOSITION_WEIGHT * target
    return out


def _root_rotvec(layout: _Layout, rng: np.random.Generator) -> np.ndarray:
    m, k = layout.num_seqs, layout.num_keys
    yaw0 = rng.uniform(-180.0, 180.0, size=(m, 1))
    yaw = yaw0 + np.concatenate([np.zeros((m, 1)), np.cumsum(rng.uniform(-1, 1, size=(m, k - 1)), 1)], 1) \
        * ROOT_YAW_STEP
    tilt = ROOT_TILT * (2.0 * rng.beta(2.0, 2.0, size=(m, k, 2)) - 1.0)
    tilt = _keypose_walk(tilt, layout.step)
    params = layout.interpolate(np.concatenate([yaw[..., None], tilt], -1))           # (N, 3) degrees
    rad = np.deg2rad(params)
    yaw_vec = np.zeros((len(rad), 3))
    yaw_vec[:, 1] = rad[:, 0]
    tilt_vec = np.stack([rad[:, 1], np.zeros(len(rad)), rad[:, 2]], -1)
    quat = rng.normal(size=(m, 4))                                                      # uniform random rotation
    base = _quat_to_rotvec(quat / np.linalg.norm(quat, axis=1, keepdims=True))
    base[rng.uniform(size=m) >= ROOT_FREE_FRACTION] = 0.0
    return _compose_rotvecs(base[layout.seq], yaw_vec, tilt_vec)


def _sample(body: str, n: int, seed: int, kids: float, seq: SequenceConfig, vid_prefix: str | None,
            salt: Sequence[int], rest_joints: np.ndarray | None) -> SyntheticPoses:
    if n < 1:
        raise ValueError(f'n must be >= 1, got {n}')
    if not 0.0 <= kids <= 1.0:
        raise ValueError(f'kids is a fraction of sequences in [0, 1], got {kids}')
    r_layout, r_body, r_root, r_shape, r_hand, r_couple = _rng_streams(seed, _BODY_CODE[body], *salt)
    layout = _Layout(n, r_layout, seq)
    m, k = layout.num_seqs, layout.num_keys
    axes = _axes_for(body, rest_joints)

    fresh = _sample_angles(r_body, _SMPL_TABLE.ranges[1:22 if body == 'smplx' else 24], (m, k),
                           seq.beta_concentration)
    dofs_body = layout.interpolate(_keypose_walk(fresh, layout.step))                  # (N, Jb, 3)
    table_rows = slice(1, 1 + dofs_body.shape[1])
    body_rotvec = dofs_to_rotvec(dofs_body, axes.body, _SMPL_TABLE.mirror[table_rows])
    root = _root_rotvec(layout, r_root)

    betas = r_shape.standard_normal((m, 10))
    if kids > 0.0:
        kid = np.where(r_shape.uniform(size=m) < kids, r_shape.uniform(size=m), 0.0)
        betas = np.concatenate([betas, kid[:, None]], 1)
    prefix = vid_prefix if vid_prefix is not None else f'synthetic_{body}_s{seed}'
    names = np.array([f'{prefix}_{i:07d}' for i in range(m)])

    hand_dofs = None
    if body == 'smpl':
        pose = np.concatenate([root[:, None], body_rotvec], 1)
        dofs = np.concatenate([np.zeros((n, 1, 3)), dofs_body], 1)
    else:
        fresh_h = _sample_angles(r_hand, _HAND_TABLE.ranges, (m, k, 2), seq.beta_concentration)
        fresh_h = _couple_hand(r_couple, fresh_h)
        hand_dofs = layout.interpolate(_keypose_walk(fresh_h, layout.step))            # (N, 2, 15, 3)
        hands = _hand_rotvec(hand_dofs, axes)
        zeros = np.zeros((n, 3, 3))                                                     # jaw, left eye, right eye
        pose = np.concatenate([root[:, None], body_rotvec, zeros, hands[:, 0], hands[:, 1]], 1)
        dofs = np.concatenate([np.zeros((n, 1, 3)), dofs_body, zeros, hand_dofs[:, 0], hand_dofs[:, 1]], 1)
    return SyntheticPoses(pose=pose, betas=betas[layout.seq], vid_name=names[layout.seq], frame=layout.frame,
                          dofs=dofs, hand_dofs=hand_dofs)


def _hand_rotvec(hand_dofs: np.ndarray, axes: _Axes | None = None) -> np.ndarray:
    """(..., 2, 15, 3) angles (left-hand convention for both) -> axis-angle, the right hand (index 1) mirrored."""
    axes = axes or _axes_for('smplx', None)
    left = dofs_to_rotvec(hand_dofs[..., 0, :, :], axes.left_hand, np.zeros(15, dtype=bool))
    right = dofs_to_rotvec(hand_dofs[..., 1, :, :], axes.right_hand, np.ones(15, dtype=bool))
    return np.stack([left, right], -3)


_REST_DOC = """``rest_joints`` (optional, (24, 3) SMPL / (76, 3) SMPL-X slots): a body model's rest joints (e.g. of
    beta = 0); each twist axis then follows the model's rest bone (within 60 degrees of the idealised axis) and the
    swing axes are made perpendicular to it, so the sampled twist is the twist the db stores (METHOD.md section 6)
    up to shape variation. Without it the idealised axes are used."""


def sample_smpl_poses(n: int, seed: int, *, kids: float = 0.0, sequence: SequenceConfig = SequenceConfig(),
                      vid_prefix: str | None = None, salt: Sequence[int] = (),
                      rest_joints: np.ndarray | None = None) -> SyntheticPoses:
    """``n`` SMPL frames (pose (n, 24, 3)) in sequences; deterministic given the arguments.

    ``kids`` is the fraction of sequences that are children (11th beta ~ U(0, 1); betas get 11 columns whenever
    kids > 0). ``salt``: extra integers mixed into the seed (the split). ``vid_prefix``: vid_name prefix.
    """
    return _sample('smpl', n, seed, kids, sequence, vid_prefix, salt, rest_joints)


def sample_smplx_poses(n: int, seed: int, *, kids: float = 0.0, sequence: SequenceConfig = SequenceConfig(),
                       vid_prefix: str | None = None, salt: Sequence[int] = (),
                       rest_joints: np.ndarray | None = None) -> SyntheticPoses:
    """``n`` SMPL-X frames (pose (n, 55, 3): root, body 1-21 as SMPL, jaw and eyes zero, left hand, right hand)."""
    return _sample('smplx', n, seed, kids, sequence, vid_prefix, salt, rest_joints)


sample_smpl_poses.__doc__ += '\n    ' + _REST_DOC
sample_smplx_poses.__doc__ += '\n    ' + _REST_DOC


def sample_hand_poses(n: int, seed: int, concentration: float = 2.0,
                      rest_joints: np.ndarray | None = None) -> np.ndarray:
    """``n`` independent hand-pose pairs: (n, 2, 15, 3) axis-angle, [:, 0] left and [:, 1] right hand, in SMPL-X
    order (index, middle, pinky, ring, thumb; 3 joints each). ``rest_joints``: (76, 3) SMPL-X slots, optional."""
    r_hand, r_couple = _rng_streams(seed, 7, count=2)
    dofs = _couple_hand(r_couple, _sample_angles(r_hand, _HAND_TABLE.ranges, (n, 2), concentration))
    return _hand_rotvec(dofs, _axes_for('smplx', rest_joints))


# ---------------------------------------------------------------------------------------------------------------
# Databases in the official layout
# ---------------------------------------------------------------------------------------------------------------

def _load_body_model(body: str, body_model: Any, kid_template_path: str | os.PathLike | None):
    from lib.models.body_model import BodyModel   # imported here: sampling alone needs no body model

    if isinstance(body_model, BodyModel):
        if body_model.model_type != body:
            raise ValueError(f'body model is {body_model.model_type!r}, the db is {body!r}')
        return body_model
    return BodyModel.from_file(body_model, model_type=body, kid_template_path=kid_template_path,
                               dtype=torch.float64)


def compute_twist_angles(body: str, pose: np.ndarray, betas: np.ndarray, body_model: Any,
                         batch_size: int = 8192, progress: bool = False, desc: str = 'twist') -> np.ndarray:
    """Ground-truth twist angles (N, P-1) of poses (N, P, 3) for shapes (N, B) with the project's twist function
    (METHOD.md section 6) on the body model's rest joints."""
    from tqdm import tqdm

    from lib.kinematics.tree import TREES
    from lib.solver.twist import twist_angles

    tree = TREES[body]
    model_betas = body_model.num_betas
    if betas.shape[1] > model_betas:
        if np.any(betas[:, model_betas:] != 0):
            raise ValueError(f'the poses use {betas.shape[1]} betas but the body model has {model_betas}: kids '
                             'need the kid template (DATA.KID_TEMPLATE / --kid-template)')
        betas = betas[:, :model_betas]
    elif betas.shape[1] < model_betas:
        betas = np.concatenate([betas, np.zeros((len(betas), model_betas - betas.shape[1]))], 1)
    out = np.zeros((len(pose), tree.num_twists))
    starts = range(0, len(pose), batch_size)
    for s in tqdm(starts, desc=desc, unit='batch', disable=not progress, leave=False):
        b = torch.as_tensor(betas[s:s + batch_size], dtype=body_model.dtype, device=body_model.device)
        with torch.no_grad():
            rest = body_model.rest_joints(b).to(torch.float64).cpu()
            rot = roma.rotvec_to_rotmat(torch.as_tensor(pose[s:s + batch_size], dtype=torch.float64))
            out[s:s + batch_size] = twist_angles(tree, rest, rot).numpy()
    return out


def make_synthetic_db(body: str, n: int, seed: int, body_model: Any, *, split: str = 'train', kids: float = 0.0,
                      kid_template_path: str | os.PathLike | None = None, batch_size: int = 8192,
                      progress: bool = False) -> dict[str, np.ndarray]:
    """Sample ``n`` frames and return them in the official db layout (METHOD.md section 10), float32.

    ``body_model``: a BodyModel of the same type or a model file path. Poses are rounded to float32 before the
    twist angles are computed, so the stored twist matches the stored pose.
    """
    if body not in _BODY_CODE:
        raise ValueError(f"body must be 'smpl' or 'smplx', got {body!r}")
    if split not in _SPLIT_CODE:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    model = _load_body_model(body, body_model, kid_template_path)
    with torch.no_grad():
        zero = torch.zeros(1, model.num_betas, dtype=model.dtype, device=model.device)
        rest = model.rest_joints(zero)[0].to(torch.float64).cpu().numpy()
    sampler = sample_smpl_poses if body == 'smpl' else sample_smplx_poses
    poses = sampler(n, seed, kids=kids, vid_prefix=f'synthetic_{body}_{split}_s{seed}', salt=(_SPLIT_CODE[split],),
                    rest_joints=rest)
    pose32 = poses.pose.astype(np.float32)
    betas32 = poses.betas.astype(np.float32)
    twist = compute_twist_angles(body, pose32.astype(np.float64), betas32.astype(np.float64), model,
                                 batch_size=batch_size, progress=progress,
                                 desc=f'synthetic {body} {split} db').astype(np.float32)
    vid = poses.vid_name
    if body == 'smpl':
        theta = pose32.reshape(n, 72)
        return {'beta': betas32, 'theta': theta, 'orig_theta': theta.copy(), 'twist_angle': twist, 'vid_name': vid}
    return {'betas': betas32, 'global_orient': pose32[:, 0], 'body_pose': pose32[:, 1:22].reshape(n, 63),
            'lhand_pose': pose32[:, 25:40].reshape(n, 45), 'rhand_pose': pose32[:, 40:55].reshape(n, 45),
            'twist_angle': twist, 'vid_name': vid}


def synthetic_db_path(db_dir: str | os.PathLike, split: str) -> Path:
    return Path(db_dir) / f'synthetic_{split}_db.pt'


def _file_tag(path: Any) -> str | None:
    """'<name>:<sha1 prefix>' of a model file, so a db made on another model is regenerated; None for objects."""
    if not isinstance(path, (str, os.PathLike)) or not Path(path).is_file():
        return None
    digest = hashlib.sha1()
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b''):
            digest.update(chunk)
    return f'{Path(path).name}:{digest.hexdigest()[:12]}'


def _meta_path(path: Path) -> Path:
    return path.with_suffix('.json')


def ensure_synthetic_db(body: str, split: str, db_dir: str | os.PathLike, body_model_path: Any, n: int,
                        seed: int | None = None, *, kids: float = 0.0,
                        kid_template_path: str | os.PathLike | None = None, batch_size: int = 8192,
                        progress: bool = True) -> Path:
    """Path of ``<db_dir>/synthetic_<split>_db.pt``, generating it first when missing (seeded, with a progress bar).

    A generated db has a sidecar ``synthetic_<split>_db.json`` with its parameters; when they differ from the
    requested ones (n, seed, kids, body) the db is regenerated. A db without a sidecar (user supplied) is used as
    it is. The sidecar also records the body model file's digest, so a db made on a different model is
    regenerated. Writing is atomic (temporary file + rename), so concurrent callers never see a partial file.
    """
    from lib.data.db import write_db

    seed = DEFAULT_SEEDS[split] if seed is None else int(seed)
    path = synthetic_db_path(db_dir, split)
    meta = {'generator': 'lib.data.synthetic', 'version': SYNTHETIC_FORMAT_VERSION, 'body': body, 'split': split,
            'n': int(n), 'seed': seed, 'kids': float(kids), 'body_model': _file_tag(body_model_path),
            'kid_template': _file_tag(kid_template_path) if kids > 0 else None}
    if path.is_file():
        meta_file = _meta_path(path)
        if not meta_file.is_file():
            return path
        try:
            old = json.loads(meta_file.read_text())
        except (OSError, ValueError):
            old = None
        if old == meta:
            return path
        print(f'[synthetic] {path} was generated with {old}; regenerating with {meta}')
    path.parent.mkdir(parents=True, exist_ok=True)
    _meta_path(path).unlink(missing_ok=True)
    if progress:
        print(f'[synthetic] generating {path} ({n} {body} frames, seed {seed}); done once, then reused')
    db = make_synthetic_db(body, n, seed, body_model_path, split=split, kids=kids,
                           kid_template_path=kid_template_path, batch_size=batch_size, progress=progress)
    write_db(path, db, body)
    tmp = _meta_path(path).with_name(f'.{_meta_path(path).name}.{os.getpid()}.tmp')
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, _meta_path(path))
    return path
