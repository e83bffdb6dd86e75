"""Motion capture -> body model poses: a BVH reader and a rotation retargeter, pure functions over arrays.

    skeleton, motion = read_bvh('walk.bvh')                 # any hierarchy, per-joint channel orders
    rot, pos = forward_kinematics(skeleton, motion)         # global rotations (F, S, 3, 3), positions (F, S, 3)
    jmap = load_joint_map('lib/data/joint_maps/bandai.yaml')
    target = RetargetTarget.from_rest(SMPL_TREE, SMPL_JOINT_NAMES, rest_joints)
    local = retarget(skeleton, rot, jmap, target)           # local rotations (F, P, 3, 3) of the body's pose slots

Retargeting moves ROTATIONS, never positions: a mapped target joint's global rotation is the source joint's global
rotation times a constant rest alignment ``A`` (computed once per source skeleton), ``G_target = W G_source A``.
``A`` takes the target's rest frame (its bone direction and a second reference direction) onto the source joint's
local frame (the same two directions, read from the joint map and the source rest pose), so a bone's direction and
its roll (twist) carry over. Joint-map format and the rules: docs/motion_data.md.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import roma
import torch

__all__ = [
    "BvhError",
    "BvhSkeleton",
    "read_bvh",
    "parse_bvh",
    "forward_kinematics",
    "JointMapError",
    "JointMap",
    "load_joint_map",
    "RetargetTarget",
    "rest_alignment",
    "retarget",
    "detect_unit_scale",
    "UNIT_SCALE",
]

_AXES = {"X": 0, "Y": 1, "Z": 2}
_ROT_CHANNELS = ("Xrotation", "Yrotation", "Zrotation")
_POS_CHANNELS = ("Xposition", "Yposition", "Zposition")
UNIT_SCALE = {"m": 1.0, "cm": 0.01, "mm": 0.001, "inch": 0.0254}


class BvhError(ValueError):
    """A BVH file that cannot be read; the message names the file and the line."""


class JointMapError(ValueError):
    """A joint map that does not fit its schema or the skeleton it is applied to."""


@dataclass(frozen=True)
class BvhSkeleton:
    """A BVH hierarchy. ``parents[j]`` < j (-1 for roots); ``offsets`` (S, 3) in the file's unit; ``channels[j]``
    the joint's channel names in file order; ``frame_time`` seconds. End sites are not joints: ``end_offsets[j]``
    is the offset of joint j's end site (None when it has none)."""

    names: tuple[str, ...]
    parents: tuple[int, ...]
    offsets: np.ndarray
    channels: tuple[tuple[str, ...], ...]
    end_offsets: tuple[Any, ...]
    frame_time: float

    @property
    def num_channels(self) -> int:
        return sum(len(c) for c in self.channels)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise JointMapError(f"the skeleton has no joint {name!r}; it has {list(self.names)}") from None

    def rest_positions(self) -> np.ndarray:
        """(S, 3) joint positions with every channel at zero (offsets only), in the file's unit."""
        pos = np.zeros((len(self.names), 3))
        for j, p in enumerate(self.parents):
            pos[j] = self.offsets[j] + (pos[p] if p >= 0 else 0.0)
        return pos


def read_bvh(path: str | os.PathLike) -> tuple[BvhSkeleton, np.ndarray]:
    """Read a BVH file: (skeleton, motion (F, C) channel values in file order). Raises BvhError naming the file
    and line of the first problem."""
    path = Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        raise BvhError(f"{path}: cannot read ({err.strerror})") from None
    return parse_bvh(text, str(path))


def parse_bvh(text: str, source: str = "<bvh>") -> tuple[BvhSkeleton, np.ndarray]:
    """:func:`read_bvh` on the text of a file; ``source`` names it in errors."""
    lines = text.splitlines()
    tokens = [(n + 1, tok) for n, line in enumerate(lines) for tok in line.split()]
    pos = 0

    def fail(msg: str, at: int | None = None) -> BvhError:
        line = tokens[min(at if at is not None else pos, len(tokens) - 1)][0] if tokens else 1
        return BvhError(f"{source}, line {line}: {msg}")

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise fail("unexpected end of file")
        pos += 1
        return tokens[pos - 1][1]

    def number() -> float:
        tok = take()
        try:
            value = float(tok)
        except ValueError:
            raise fail(f"expected a number, got {tok!r}", pos - 1) from None
        if not math.isfinite(value):
            raise fail(f"non-finite number {tok!r}", pos - 1)
        return value

    def expect(word: str) -> None:
        tok = take()
        if tok.upper() != word.upper():
            raise fail(f"expected {word!r}, got {tok!r}", pos - 1)

    names, parents, offsets, channels, ends = [], [], [], [], []

    def joint(parent: int) -> None:
        name = take()
        index = len(names)
        names.append(name)
        parents.append(parent)
        ends.append(None)
        expect("{")
        expect("OFFSET")
        offsets.append([number(), number(), number()])
        expect("CHANNELS")
        count_tok = take()
        if not count_tok.isdigit():
            raise fail(f"expected a channel count, got {count_tok!r}", pos - 1)
        chans = tuple(take() for _ in range(int(count_tok)))
        for c in chans:
            if c not in _ROT_CHANNELS + _POS_CHANNELS:
                raise fail(f"unknown channel {c!r} of joint {name!r} (allowed: {_POS_CHANNELS + _ROT_CHANNELS})")
        channels.append(chans)
        while True:
            tok = take()
            if tok == "}":
                return
            if tok.upper() == "JOINT":
                joint(index)
            elif tok.upper() == "END":
                expect("Site")
                expect("{")
                expect("OFFSET")
                ends[index] = np.array([number(), number(), number()])
                expect("}")
            else:
                raise fail(f"expected JOINT, End Site or }} in joint {name!r}, got {tok!r}", pos - 1)

    expect("HIERARCHY")
    while pos < len(tokens) and tokens[pos][1].upper() == "ROOT":
        take()
        joint(-1)
    if not names:
        raise fail("no ROOT joint")
    expect("MOTION")
    expect("Frames:")
    frames_tok = take()
    if not frames_tok.isdigit():
        raise fail(f"expected a frame count, got {frames_tok!r}", pos - 1)
    expect("Frame")
    expect("Time:")
    frame_time = number()
    if frame_time <= 0:
        raise fail("Frame Time must be positive", pos - 1)
    n_frames, n_chan = int(frames_tok), sum(len(c) for c in channels)
    first_line = tokens[pos][0] if pos < len(tokens) else len(lines) + 1
    rows = [line.split() for line in lines[first_line - 1 :] if line.strip()]
    if len(rows) != n_frames:
        raise BvhError(f"{source}, line {first_line}: the header says {n_frames} frames, the file has {len(rows)}")
    for k, row in enumerate(rows):
        if len(row) != n_chan:
            raise BvhError(
                f"{source}, line {first_line + k}: frame {k} has {len(row)} values, the hierarchy has {n_chan} channels"
            )
    try:
        motion = np.array(rows, dtype=np.float64).reshape(n_frames, n_chan)
    except ValueError:
        bad = next(k for k, row in enumerate(rows) if not _all_numbers(row))
        raise BvhError(f"{source}, line {first_line + bad}: frame {bad} holds a value that is not a number") from None
    if not np.isfinite(motion).all():
        bad = int(np.flatnonzero(~np.isfinite(motion).all(1))[0])
        raise BvhError(f"{source}, line {first_line + bad}: frame {bad} holds a non-finite value")
    skeleton = BvhSkeleton(
        tuple(names), tuple(parents), np.array(offsets, dtype=np.float64), tuple(channels), tuple(ends), frame_time
    )
    return skeleton, motion


def _all_numbers(row: Sequence[str]) -> bool:
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return True


def _axis_rotations(axis: int, degrees: np.ndarray) -> np.ndarray:
    """(F,) angles about a coordinate axis -> (F, 3, 3)."""
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    out = np.zeros(a.shape + (3, 3))
    i, j = [k for k in range(3) if k != axis]
    out[..., axis, axis] = 1.0
    out[..., i, i] = c
    out[..., j, j] = c
    out[..., i, j] = -s if axis != 1 else s
    out[..., j, i] = s if axis != 1 else -s
    return out


def forward_kinematics(skeleton: BvhSkeleton, motion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Global rotations (F, S, 3, 3) and positions (F, S, 3) of every joint.

    A joint's local rotation is the product of its rotation channels in file order (``Zrotation Xrotation
    Yrotation`` -> Rz @ Rx @ Ry, the BVH convention); its local translation is its position channels where it has
    them (they replace the OFFSET) and its OFFSET otherwise."""
    motion = np.asarray(motion, dtype=np.float64)
    n = len(motion)
    rot = np.zeros((n, len(skeleton.names), 3, 3))
    pos = np.zeros((n, len(skeleton.names), 3))
    col = 0
    for j, (parent, chans) in enumerate(zip(skeleton.parents, skeleton.channels, strict=True)):
        local = np.broadcast_to(np.eye(3), (n, 3, 3)).copy()
        trans = np.broadcast_to(skeleton.offsets[j], (n, 3)).copy()
        for c in chans:
            if c in _ROT_CHANNELS:
                local = local @ _axis_rotations(_AXES[c[0]], motion[:, col])
            else:
                trans[:, _AXES[c[0]]] = motion[:, col]
            col += 1
        if parent < 0:
            rot[:, j], pos[:, j] = local, trans
        else:
            rot[:, j] = rot[:, parent] @ local
            pos[:, j] = pos[:, parent] + np.einsum("fab,fb->fa", rot[:, parent], trans)
    return rot, pos


def detect_unit_scale(skeleton: BvhSkeleton) -> tuple[str, float]:
    """Guess the file's length unit from the longest root-to-leaf chain of offsets (0.4-4 m for a human body,
    whatever the root offset): the first of m, cm, mm that fits; returns (unit name, metres per unit). Inches read
    as centimetres would fit as well: such files need an explicit unit."""
    lengths = np.linalg.norm(skeleton.offsets, axis=1)
    reach = np.zeros(len(lengths))
    for j, p in enumerate(skeleton.parents):
        reach[j] = lengths[j] + (reach[p] if p >= 0 else 0.0)
    size = float(reach.max())
    for unit, scale in (("m", 1.0), ("cm", 0.01), ("mm", 0.001)):
        if 0.4 <= size * scale <= 4.0:
            return unit, scale
    raise ValueError(f"cannot tell the unit of a skeleton {size:g} units tall; pass --unit (m, cm, mm, inch)")


# ---------------------------------------------------------------------------------------------------------------
# Joint maps
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MappedJoint:
    """One target joint driven by a source joint (see docs/motion_data.md for the YAML keys)."""

    target: str
    source: str
    bone: Any  # a local 3-vector, or the name of a source joint (direction from the rest pose)
    reference: Any  # a local 3-vector, or [from, to] source joint names (a rest-pose line)
    target_child: str | None
    target_bone: tuple[float, float, float] | None
    target_reference: tuple[float, float, float]


@dataclass(frozen=True)
class JointMap:
    """A source skeleton -> body model map: mapped joints, interpolated joints, world rotation (3, 3)."""

    name: str
    joints: tuple[MappedJoint, ...]
    interpolated: tuple[tuple[str, str, str, float], ...]  # (target, from, to, fraction)
    world_rotation: np.ndarray


def _vector(value: Any, where: str) -> tuple[float, float, float]:
    arr = np.asarray(value, dtype=np.float64) if isinstance(value, (list, tuple)) else None
    if arr is None or arr.shape != (3,) or not np.isfinite(arr).all() or np.linalg.norm(arr) < 1e-9:
        raise JointMapError(f"{where} must be a non-zero list of 3 numbers, got {value!r}")
    return tuple(float(v) for v in arr)


def load_joint_map(path: str | os.PathLike) -> JointMap:
    """Read a joint map YAML file (format: docs/motion_data.md)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise JointMapError(f"{path}: cannot read the joint map ({err})") from None
    return joint_map_from_dict(data, str(path))


def joint_map_from_dict(data: Mapping[str, Any], source: str = "<joint map>") -> JointMap:
    """A :class:`JointMap` from the parsed YAML (``joints``, optional ``interpolated``, ``world_rotation``)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("joints"), Mapping):
        raise JointMapError(f'{source}: a joint map needs a mapping "joints: {{target: {{source: ...}}}}"')
    joints = []
    for target, spec in data["joints"].items():
        where = f"{source}: joints.{target}"
        if not isinstance(spec, Mapping) or "source" not in spec or "reference" not in spec:
            raise JointMapError(f'{where} needs "source" and "reference" (and "bone" or a source child)')
        bone = spec.get("bone")
        bone = bone if isinstance(bone, str) else _vector(bone, f"{where}.bone")
        ref = spec["reference"]
        if isinstance(ref, (list, tuple)) and len(ref) == 2 and all(isinstance(r, str) for r in ref):
            ref = tuple(ref)
        else:
            ref = _vector(ref, f"{where}.reference")
        tb = spec.get("target_bone")
        joints.append(
            MappedJoint(
                str(target),
                str(spec["source"]),
                bone,
                ref,
                spec.get("target_child"),
                None if tb is None else _vector(tb, f"{where}.target_bone"),
                _vector(spec.get("target_reference", [0.0, 0.0, 1.0]), f"{where}.target_reference"),
            )
        )
    interpolated = []
    for target, spec in (data.get("interpolated") or {}).items():
        try:
            a, b = spec["between"]
            t = float(spec.get("fraction", 0.5))
        except (TypeError, KeyError, ValueError):
            raise JointMapError(
                f'{source}: interpolated.{target} needs "between: [joint, joint]" and an optional "fraction" in [0, 1]'
            ) from None
        interpolated.append((str(target), str(a), str(b), t))
    world = np.asarray(data.get("world_rotation", np.eye(3)), dtype=np.float64)
    if world.shape != (3, 3) or not np.allclose(world @ world.T, np.eye(3), atol=1e-6) or np.linalg.det(world) < 0:
        raise JointMapError(f"{source}: world_rotation must be a 3x3 rotation matrix (rows)")
    return JointMap(str(data.get("name", source)), tuple(joints), tuple(interpolated), world)


# ---------------------------------------------------------------------------------------------------------------
# Retargeting
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetargetTarget:
    """The body model side: joint names of its pose slots (P,), parents (P,) and rest joints (P, 3) in T-pose."""

    names: tuple[str, ...]
    parents: tuple[int, ...]
    rest: np.ndarray

    @classmethod
    def from_rest(cls, tree, names: Sequence[str], rest_joints: np.ndarray) -> RetargetTarget:
        """For a KinematicTree: its pose slots, the first ``len(names)`` of them named by ``names`` (the rest get
        placeholder names, so they can never be mapped)."""
        p = tree.num_pose_joints
        names = tuple(names[:p]) + tuple(f"slot{k}" for k in range(len(names), p))
        return cls(names, tuple(tree.parents[:p]), np.asarray(rest_joints, dtype=np.float64)[:p])

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise JointMapError(f"the body model has no joint {name!r}; it has {list(self.names)}") from None

    def bone(self, joint: MappedJoint) -> np.ndarray:
        """Rest bone direction of a mapped target joint: ``target_bone``, or towards ``target_child``, or towards
        its only / last child."""
        if joint.target_bone is not None:
            return np.asarray(joint.target_bone)
        k = self.index(joint.target)
        if joint.target_child is not None:
            child = self.index(joint.target_child)
        else:
            kids = [c for c, p in enumerate(self.parents) if p == k]
            if not kids:
                raise JointMapError(f'target joint {joint.target!r} is a leaf: give it "target_bone"')
            child = kids[-1]
        return self.rest[child] - self.rest[k]


def _frame(primary: np.ndarray, secondary: np.ndarray, what: str) -> np.ndarray:
    """(3, 3) orthonormal frame, columns [u, v, u x v], u along primary, v the secondary made perpendicular."""
    u = primary / np.linalg.norm(primary)
    v = secondary - (secondary @ u) * u
    if np.linalg.norm(v) < 0.1 * np.linalg.norm(secondary):
        raise JointMapError(f"{what}: the reference direction is (nearly) parallel to the bone; choose another")
    v /= np.linalg.norm(v)
    return np.stack([u, v, np.cross(u, v)], axis=1)


def rest_alignment(skeleton: BvhSkeleton, joint: MappedJoint, target: RetargetTarget) -> np.ndarray:
    """The constant A (3, 3) of one mapped joint: target rest frame -> source local frame, from the bone direction
    and the reference direction on both sides. Source directions come from the joint map: a local vector, or rest
    positions (with every channel at zero all local frames coincide, so a rest-pose direction is local too)."""
    rest = skeleton.rest_positions()
    s = skeleton.index(joint.source)
    if isinstance(joint.bone, str):
        bone = rest[skeleton.index(joint.bone)] - rest[s]
    elif joint.bone is None:
        raise JointMapError(f'{joint.target}: give "bone" (a local vector or a source child joint)')
    else:
        bone = np.asarray(joint.bone)
    if isinstance(joint.reference[0], str):
        ref = rest[skeleton.index(joint.reference[1])] - rest[skeleton.index(joint.reference[0])]
    else:
        ref = np.asarray(joint.reference)
    if np.linalg.norm(bone) < 1e-9:
        raise JointMapError(f"{joint.target}: the source bone of {joint.source!r} has zero length; give a vector")
    source_frame = _frame(bone, ref, f"{joint.target} <- {joint.source}")
    target_frame = _frame(target.bone(joint), np.asarray(joint.target_reference), f"{joint.target} (target)")
    return source_frame @ target_frame.T


def _slerp_identity(rot: np.ndarray, t: float) -> np.ndarray:
    """(F, 3, 3) R -> R^t (same axis, angle scaled)."""
    rv = roma.rotmat_to_rotvec(torch.as_tensor(rot, dtype=torch.float64)) * t
    return roma.rotvec_to_rotmat(rv).numpy()


def retarget(
    skeleton: BvhSkeleton, source_global: np.ndarray, joint_map: JointMap, target: RetargetTarget
) -> np.ndarray:
    """Local rotations (F, P, 3, 3) of the target's pose slots from source global rotations (F, S, 3, 3).

    Mapped joints: ``G = W G_source A``. Interpolated joints (``between: [a, b]``, fraction t): the global rotation
    ``G_a (G_a^T G_b)^t``, i.e. the relative rotation from a to b is shared, t of it before the joint. Other joints
    keep their parent's global rotation (local identity)."""
    n, p = len(source_global), len(target.names)
    glob = np.full((n, p, 3, 3), np.nan)
    for joint in joint_map.joints:
        a = rest_alignment(skeleton, joint, target)
        source = source_global[:, skeleton.index(joint.source)]
        glob[:, target.index(joint.target)] = joint_map.world_rotation @ source @ a
    for name, first, second, t in joint_map.interpolated:
        ga, gb = glob[:, target.index(first)], glob[:, target.index(second)]
        if np.isnan(ga).any() or np.isnan(gb).any():
            raise JointMapError(f"interpolated {name!r}: {first!r} and {second!r} must both be mapped joints")
        glob[:, target.index(name)] = ga @ _slerp_identity(np.swapaxes(ga, -1, -2) @ gb, t)
    local = np.zeros_like(glob)
    for k, parent in enumerate(target.parents):
        if np.isnan(glob[:, k]).any():
            if parent < 0:
                raise JointMapError(f"the root joint {target.names[k]!r} must be mapped")
            glob[:, k] = glob[:, parent]
        local[:, k] = glob[:, k] if parent < 0 else np.swapaxes(glob[:, parent], -1, -2) @ glob[:, k]
    return local
