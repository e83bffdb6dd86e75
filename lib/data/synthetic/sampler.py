"""The synthetic pose sampler: anatomically plausible SMPL / SMPL-X poses in short smooth sequences, and shapes.

Sequences: each ``vid_name`` is 8-32 frames, eased (smoothstep) interpolation between keyposes 6-12 frames apart;
keyposes follow a damped random walk (each moves part of the way towards a fresh independent sample), so
consecutive frames are close. Shapes: ``beta ~ N(0, 1)`` (10), constant within a sequence; optionally kids with
an 11th beta ~ U(0, 1) (the kid-template blend weight). Angles and their limits: :mod:`.limits`; angles to
axis-angle: :mod:`.axes`. Which pose slots are sampled (body, hands) comes from the body's kinematic tree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import roma
import torch

from lib.data.synthetic.axes import Axes, axes_for, compose_rotvecs, dofs_to_rotvec
from lib.data.synthetic.limits import (
    DIP_NOISE,
    DIP_RATIO,
    FINGER_ROWS,
    HAND_TABLE,
    OPPOSITION,
    OPPOSITION_WEIGHT,
    ROOT_FREE_FRACTION,
    ROOT_TILT,
    ROOT_YAW_STEP,
    SMPL_TABLE,
)
from lib.kinematics.tree import TREES

# Mixed into the seed, so SMPL and SMPL-X samples of one seed differ.
_BODY_CODE = {"smpl": 0, "smplx": 1}


@dataclass(frozen=True)
class SequenceConfig:
    """Sequence model: lengths (frames), keypose spacing (frames), keypose random-walk step fraction."""

    length: tuple[int, int] = (8, 32)
    spacing: tuple[int, int] = (6, 12)
    step: tuple[float, float] = (0.2, 0.6)
    beta_concentration: float = 2.0  # angle samples: neutral + Beta(a, a) spread over the range (a=1: uniform)

    def __post_init__(self):
        if not 1 <= self.length[0] <= self.length[1]:
            raise ValueError("SequenceConfig.length must be 1 <= low <= high")
        if not 1 <= self.spacing[0] <= self.spacing[1]:
            raise ValueError("SequenceConfig.spacing must be 1 <= low <= high")
        if not 0.0 < self.step[0] <= self.step[1] <= 1.0:
            raise ValueError("SequenceConfig.step must be 0 < low <= high <= 1")


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


def _sample_angles(
    rng: np.random.Generator, ranges: np.ndarray, shape: tuple[int, ...], concentration: float
) -> np.ndarray:
    """Angles (shape + (J, 3)) in degrees: neutral + z * (distance to the limit on z's side), z = 2 Beta(a,a) - 1,
    then the swing pair scaled into the ellipse through its four limits."""
    lo, neutral, hi = ranges[..., 0], ranges[..., 1], ranges[..., 2]
    z = 2.0 * rng.beta(concentration, concentration, size=shape + ranges.shape[:2]) - 1.0
    angles = neutral + np.where(z >= 0.0, z * (hi - neutral), z * (neutral - lo))
    return _clamp_swing_ellipse(angles, ranges)


def _clamp_swing_ellipse(angles: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    lim = np.where(angles[..., :2] >= 0.0, ranges[..., :2, 2], -ranges[..., :2, 0])
    norm = np.divide(angles[..., :2], lim, out=np.zeros_like(angles[..., :2]), where=lim > 0)
    radius = np.sqrt((norm**2).sum(-1, keepdims=True))
    out = angles.copy()
    out[..., :2] *= np.where(radius > 1.0, 1.0 / np.maximum(radius, 1e-12), 1.0)
    return out


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
        lengths = lengths[: self.num_seqs]
        lengths[-1] -= int(ends[self.num_seqs - 1] - n)  # truncate the last sequence to n frames in total
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
        self.blend = f * f * (3.0 - 2.0 * f)  # smoothstep: C1 across keyposes

    def interpolate(self, keys: np.ndarray) -> np.ndarray:
        """keys (num_seqs, num_keys, ...) -> per-frame values (N, ...)."""
        a = keys[self.seq, self.key]
        b = keys[self.seq, self.key + 1]
        w = self.blend.reshape((-1,) + (1,) * (a.ndim - 1))
        return a + w * (b - a)


def _couple_hand(rng: np.random.Generator, hand: np.ndarray) -> np.ndarray:
    """hand (..., 15, 3) angles: DIP flexion coupled to PIP; thumb CMC pulled towards an opposition amount."""
    out = hand.copy()
    for finger in ("index", "middle", "pinky", "ring"):
        s = FINGER_ROWS[finger]
        ratio = rng.uniform(*DIP_RATIO, size=out.shape[:-2])
        noise = rng.uniform(-DIP_NOISE, DIP_NOISE, size=out.shape[:-2])
        lo, _, hi = HAND_TABLE.ranges[s + 2, 0]
        out[..., s + 2, 0] = np.clip(ratio * out[..., s + 1, 0] + noise, lo, hi)
        # keep the DIP's small deviation inside its swing ellipse for the new flexion
        dev_lo, _, dev_hi = HAND_TABLE.ranges[s + 2, 1]
        room = np.sqrt(np.clip(1.0 - (out[..., s + 2, 0] / hi) ** 2, 0.0, 1.0))
        out[..., s + 2, 1] = np.clip(out[..., s + 2, 1], dev_lo * room, dev_hi * room)
    t = FINGER_ROWS["thumb"]
    amount = rng.uniform(0.0, 1.0, size=out.shape[:-2] + (1,))
    target = amount * np.asarray(OPPOSITION)
    out[..., t, :] = (1.0 - OPPOSITION_WEIGHT) * out[..., t, :] + OPPOSITION_WEIGHT * target
    return out


def _root_rotvec(layout: _Layout, rng: np.random.Generator) -> np.ndarray:
    m, k = layout.num_seqs, layout.num_keys
    yaw0 = rng.uniform(-180.0, 180.0, size=(m, 1))
    yaw = (
        yaw0 + np.concatenate([np.zeros((m, 1)), np.cumsum(rng.uniform(-1, 1, size=(m, k - 1)), 1)], 1) * ROOT_YAW_STEP
    )
    tilt = ROOT_TILT * (2.0 * rng.beta(2.0, 2.0, size=(m, k, 2)) - 1.0)
    tilt = _keypose_walk(tilt, layout.step)
    params = layout.interpolate(np.concatenate([yaw[..., None], tilt], -1))  # (N, 3) degrees
    rad = np.deg2rad(params)
    yaw_vec = np.zeros((len(rad), 3))
    yaw_vec[:, 1] = rad[:, 0]
    tilt_vec = np.stack([rad[:, 1], np.zeros(len(rad)), rad[:, 2]], -1)
    quat = rng.normal(size=(m, 4))  # uniform random rotation
    base = roma.unitquat_to_rotvec(torch.as_tensor(quat / np.linalg.norm(quat, axis=1, keepdims=True))).numpy()
    base[rng.uniform(size=m) >= ROOT_FREE_FRACTION] = 0.0
    return compose_rotvecs(base[layout.seq], yaw_vec, tilt_vec)


def _sample(
    body: str,
    n: int,
    seed: int,
    kids: float,
    seq: SequenceConfig,
    vid_prefix: str | None,
    salt: Sequence[int],
    rest_joints: np.ndarray | None,
) -> SyntheticPoses:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0.0 <= kids <= 1.0:
        raise ValueError(f"kids is a fraction of sequences in [0, 1], got {kids}")
    tree = TREES[body]
    r_layout, r_body, r_root, r_shape, r_hand, r_couple = _rng_streams(seed, _BODY_CODE[body], *salt)
    layout = _Layout(n, r_layout, seq)
    m, k = layout.num_seqs, layout.num_keys
    axes = axes_for(body, rest_joints)

    body_slots = tree.pose_slots("body_pose")
    fresh = _sample_angles(r_body, SMPL_TABLE.ranges[body_slots], (m, k), seq.beta_concentration)
    dofs_body = layout.interpolate(_keypose_walk(fresh, layout.step))  # (N, Jb, 3)
    body_rotvec = dofs_to_rotvec(dofs_body, axes.body, SMPL_TABLE.mirror[body_slots])
    root = _root_rotvec(layout, r_root)

    betas = r_shape.standard_normal((m, 10))
    if kids > 0.0:
        kid = np.where(r_shape.uniform(size=m) < kids, r_shape.uniform(size=m), 0.0)
        betas = np.concatenate([betas, kid[:, None]], 1)
    prefix = vid_prefix if vid_prefix is not None else f"synthetic_{body}_s{seed}"
    names = np.array([f"{prefix}_{i:07d}" for i in range(m)])

    # slots the sampler does not pose (SMPL-X jaw and eyes) stay zero; the root's angles row is zero
    pose = np.zeros((n, tree.num_pose_joints, 3))
    dofs = np.zeros((n, tree.num_pose_joints, 3))
    pose[:, tree.pose_slots("global_orient")] = root[:, None]
    pose[:, body_slots], dofs[:, body_slots] = body_rotvec, dofs_body
    hand_dofs = None
    if tree.hands:
        fresh_h = _sample_angles(r_hand, HAND_TABLE.ranges, (m, k, 2), seq.beta_concentration)
        fresh_h = _couple_hand(r_couple, fresh_h)
        hand_dofs = layout.interpolate(_keypose_walk(fresh_h, layout.step))  # (N, 2, 15, 3)
        hands = hand_rotvec(hand_dofs, axes)
        for side, slots in enumerate(tree.hand_pose_slots):
            pose[:, slots], dofs[:, slots] = hands[:, side], hand_dofs[:, side]
    return SyntheticPoses(
        pose=pose,
        betas=betas[layout.seq],
        vid_name=names[layout.seq],
        frame=layout.frame,
        dofs=dofs,
        hand_dofs=hand_dofs,
    )


def hand_rotvec(hand_dofs: np.ndarray, axes: Axes) -> np.ndarray:
    """(..., 2, 15, 3) angles (left-hand convention for both) -> axis-angle, the right hand (index 1) mirrored."""
    left = dofs_to_rotvec(hand_dofs[..., 0, :, :], axes.left_hand, np.zeros(len(HAND_TABLE), dtype=bool))
    right = dofs_to_rotvec(hand_dofs[..., 1, :, :], axes.right_hand, np.ones(len(HAND_TABLE), dtype=bool))
    return np.stack([left, right], -3)


_REST_DOC = """``rest_joints`` (optional, (24, 3) SMPL / (76, 3) SMPL-X slots): a body model's rest joints (e.g. of
    beta = 0); each twist axis then follows the model's rest bone (within 60 degrees of the idealised axis) and the
    swing axes are made perpendicular to it, so the sampled twist is the twist the db stores (METHOD.md section 6)
    up to shape variation. Without it the idealised axes are used."""


def sample_poses(
    body: str,
    n: int,
    seed: int,
    *,
    kids: float = 0.0,
    sequence: SequenceConfig = SequenceConfig(),
    vid_prefix: str | None = None,
    salt: Sequence[int] = (),
    rest_joints: np.ndarray | None = None,
) -> SyntheticPoses:
    """``n`` frames of ``body`` ('smpl' or 'smplx') in sequences; deterministic given the arguments.

    ``kids`` is the fraction of sequences that are children (11th beta ~ U(0, 1); betas get 11 columns whenever
    kids > 0). ``salt``: extra integers mixed into the seed (the split). ``vid_prefix``: vid_name prefix.
    """
    return _sample(body, n, seed, kids, sequence, vid_prefix, salt, rest_joints)


def sample_smpl_poses(n: int, seed: int, **options) -> SyntheticPoses:
    """``n`` SMPL frames (pose (n, 24, 3)); ``options`` as :func:`sample_poses`."""
    return sample_poses("smpl", n, seed, **options)


def sample_smplx_poses(n: int, seed: int, **options) -> SyntheticPoses:
    """``n`` SMPL-X frames (pose (n, 55, 3): root, body 1-21 as SMPL, jaw and eyes zero, left hand, right hand);
    ``options`` as :func:`sample_poses`."""
    return sample_poses("smplx", n, seed, **options)


sample_poses.__doc__ += "\n    " + _REST_DOC


def sample_hand_poses(
    n: int, seed: int, concentration: float = 2.0, rest_joints: np.ndarray | None = None
) -> np.ndarray:
    """``n`` independent hand-pose pairs: (n, 2, 15, 3) axis-angle, [:, 0] left and [:, 1] right hand, in SMPL-X
    order (index, middle, pinky, ring, thumb; 3 joints each). ``rest_joints``: (76, 3) SMPL-X slots, optional."""
    r_hand, r_couple = _rng_streams(seed, 7, count=2)
    dofs = _couple_hand(r_couple, _sample_angles(r_hand, HAND_TABLE.ranges, (n, 2), concentration))
    return hand_rotvec(dofs, axes_for("smplx", rest_joints))
