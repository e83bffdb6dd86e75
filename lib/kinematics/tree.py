"""Kinematic trees as data: everything the solver stages need to know about a body model's skeleton.

The stages (Shape Inverse, PR-C, AnalyIK, MixIK, PAN) are written once over a :class:`KinematicTree`; SMPL and
SMPL-X differ only in the instances below. Indices are skeleton slots (METHOD.md section 1): 24 for SMPL, 76 for
SMPL-X (55 skeleton joints, 11 unused landmark slots, 10 fingertips).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, fields, is_dataclass
from functools import cached_property

from smplx.joint_names import JOINT_NAMES as SMPLX_OUTPUT_NAMES  # smplx's 127 SMPL-X output joints (+ face)

NO_PARENT = -1


@dataclass(frozen=True)
class TwoDirectionJoint:
    """A joint whose full orientation is solved from two directions (METHOD.md section 4).

    The primary direction is the mean offset of ``primary`` children, the secondary one the mean offset of
    ``secondary`` children (offsets from this joint). All the joint's children are placed rigidly by it in PR-C.
    """

    joint: int
    primary: tuple[int, ...]
    secondary: tuple[int, ...]


@dataclass(frozen=True)
class Part:
    """One Part-aware Network branch: the joints it reads and the joints whose twist it predicts (in order)."""

    name: str
    joints: tuple[int, ...]
    twist_joints: tuple[int, ...]

    @property
    def twist_indices(self) -> tuple[int, ...]:
        """Positions in a ``twist_angle`` vector (entry k belongs to joint k + 1)."""
        return tuple(j - 1 for j in self.twist_joints)


@dataclass(frozen=True)
class PoseGroup:
    """One named stretch of the pose vector (smplx's keyword for it): pose slots ``start .. stop - 1``."""

    name: str
    start: int
    stop: int

    @property
    def slots(self) -> range:
        return range(self.start, self.stop)

    @property
    def size(self) -> int:
        return self.stop - self.start


def _consecutive_groups(*sizes: tuple[str, int]) -> tuple[PoseGroup, ...]:
    """Consecutive pose groups from (name, number of slots) pairs, the first starting at slot 0."""
    groups, start = [], 0
    for name, size in sizes:
        groups.append(PoseGroup(name, start, start + size))
        start += size
    return tuple(groups)


@dataclass(frozen=True)
class KinematicTree:
    """A body model's skeleton and the method's choices on it.

    Attributes:
        name: 'smpl' or 'smplx'.
        parents: parent slot of every slot (``NO_PARENT`` for the root and for slots outside the skeleton).
        pose_groups: the body model's pose vector as smplx lays it out (``global_orient``, ``body_pose``, then for
            SMPL-X ``jaw_pose``, ``leye_pose``, ``reye_pose``, ``left_hand_pose``, ``right_hand_pose``): slots
            0..num_pose_joints-1 carry a rotation, in these consecutive groups.
        skeleton: slots the solver places and rotates (others, e.g. SMPL-X jaw and eyes, are left alone).
        two_direction: joints solved by two-direction orientation; the first one is the root.
        relative_joints: joints whose rotation is the relative of the minimal rotations of their parent bone and
            child bone (SMPL-X fingers, METHOD.md section 5); all other joints with one child keep the swing only.
        bone_groups: the bone-length vector for Shape Inverse; each entry averages the bones ending at its joints.
        refine_segments: (A, B, C) two-bone segments re-solved by the PR-C V2 move.
        metric_joints: joints the MPJPE is taken over.
        parts: the Part-aware Network's parts, in checkpoint order.
        hands: per hand, its 21 slots in local order (wrist, thumb, index, middle, ring, pinky; 4 each).
        joint_names: one name per slot (smplx's names), for users' joint orders.
    """

    name: str
    parents: tuple[int, ...]
    pose_groups: tuple[PoseGroup, ...]
    skeleton: tuple[int, ...]
    two_direction: tuple[TwoDirectionJoint, ...]
    bone_groups: tuple[tuple[int, ...], ...]
    refine_segments: tuple[tuple[int, int, int], ...]
    metric_joints: tuple[int, ...]
    parts: tuple[Part, ...]
    relative_joints: frozenset[int] = field(default_factory=frozenset)
    hands: tuple[tuple[int, ...], ...] = ()
    joint_names: tuple[str, ...] = ()

    @property
    def num_joints(self) -> int:
        return len(self.parents)

    @property
    def num_pose_joints(self) -> int:
        """Rotations in a pose vector, root included."""
        return self.pose_groups[-1].stop

    def pose_slots(self, group: str) -> range:
        """Pose slots of one of ``pose_groups`` by its smplx name, e.g. ``pose_slots("left_hand_pose")``."""
        for candidate in self.pose_groups:
            if candidate.name == group:
                return candidate.slots
        raise ValueError(f"{self.name} has no pose group {group!r}; it has {[g.name for g in self.pose_groups]}")

    @property
    def hand_pose_slots(self) -> tuple[range, ...]:
        """Per hand (left, right, as ``hands``): its pose slots, in smplx's finger order (index, middle, pinky, ring,
        thumb; 3 joints each). Empty for a body without hands."""
        return tuple(self.pose_slots(group) for group in ("left_hand_pose", "right_hand_pose")) if self.hands else ()

    @property
    def num_twists(self) -> int:
        """Length of a ``twist_angle`` vector: one per non-root pose joint."""
        return self.num_pose_joints - 1

    @cached_property
    def children(self) -> dict[int, tuple[int, ...]]:
        """Children of each skeleton slot, restricted to the skeleton, in increasing slot order."""
        inside = set(self.skeleton)
        out: dict[int, list[int]] = {j: [] for j in self.skeleton}
        for j in self.skeleton:
            p = self.parents[j]
            if p != NO_PARENT and p in inside:
                out[p].append(j)
        return {j: tuple(sorted(c)) for j, c in out.items()}

    @cached_property
    def two_direction_by_joint(self) -> dict[int, TwoDirectionJoint]:
        return {spec.joint: spec for spec in self.two_direction}

    @cached_property
    def root(self) -> int:
        return self.two_direction[0].joint

    @cached_property
    def levels(self) -> tuple[tuple[int, ...], ...]:
        """Skeleton slots grouped by depth below the root (root excluded): parents always sit in an earlier level."""
        depth = {self.root: 0}
        for j in sorted(self.skeleton):  # parents precede children in slot order (checked in __post_init__)
            if j != self.root:
                depth[j] = depth[self.parents[j]] + 1
        n = max(depth.values())
        return tuple(tuple(j for j in sorted(depth) if depth[j] == d) for d in range(1, n + 1))

    @cached_property
    def ik_child(self) -> dict[int, int]:
        """For each pose joint with exactly one skeleton child (and not two-direction): that child."""
        return {
            j: c[0]
            for j, c in self.children.items()
            if j < self.num_pose_joints and len(c) == 1 and j not in self.two_direction_by_joint
        }

    @cached_property
    def twist_child(self) -> dict[int, int]:
        """Child whose rest bone is a joint's twist axis: the last child in slot order (as the reference)."""
        return {j: c[-1] for j, c in self.children.items() if c and 0 < j < self.num_pose_joints}

    @cached_property
    def mirror_slots(self) -> tuple[int, ...]:
        """The left-right counterpart of every slot (itself on the midline), from ``joint_names``: 'left' and 'right'
        swapped in the name ('left_elbow' <-> 'right_elbow', 'left_index1' <-> 'right_index1', 'neck' -> 'neck')."""
        if not self.joint_names:
            raise ValueError(f"{self.name}: the tree has no joint names to pair left and right slots")
        index = {name: j for j, name in enumerate(self.joint_names)}
        swap = {"left": "right", "right": "left"}
        mirror = []
        for name in self.joint_names:
            counterpart = re.sub(r"left|right", lambda m: swap[m.group(0)], name)
            if counterpart not in index:
                raise ValueError(f"{self.name}: slot {name!r} has no counterpart {counterpart!r}")
            mirror.append(index[counterpart])
        return tuple(mirror)

    @cached_property
    def layout_digest(self) -> str:
        """A short, process-independent digest of every field: caches of data derived from the tree (e.g. a fitted
        ``skeleton_2_beta``) are keyed on it, so a changed tree never reuses them."""
        return hashlib.sha1(json.dumps(_plain(self)).encode()).hexdigest()[:12]

    def __post_init__(self):
        if [g.start for g in self.pose_groups] != [0] + [g.stop for g in self.pose_groups[:-1]]:
            raise ValueError(f"{self.name}: pose groups must be consecutive from slot 0")
        inside = set(self.skeleton)
        for j in self.skeleton:
            p = self.parents[j]
            if j != self.two_direction[0].joint and not (p in inside and p < j):
                raise ValueError(f"{self.name}: slot {j} must have a skeleton parent with a smaller index")
        for spec in self.two_direction:
            if not set(spec.primary + spec.secondary) <= set(self.children.get(spec.joint, ())):
                raise ValueError(f"{self.name}: two-direction joint {spec.joint} must use its own children")
        if self.joint_names and len(self.joint_names) != self.num_joints:
            raise ValueError(f"{self.name}: {len(self.joint_names)} joint names for {self.num_joints} slots")
        for part in self.parts:
            for j in part.twist_joints:
                if j not in self.ik_child:
                    raise ValueError(f"{self.name}: part {part.name} twists joint {j}, which has no single child")


def _plain(value):
    """Dataclasses, tuples and sets as JSON-ready nested lists / dicts (sets sorted, so the result is stable)."""
    if is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------------------- SMPL
SMPL_JOINT_NAMES = (
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hand",
    "right_hand",
)
_SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
_PELVIS = TwoDirectionJoint(0, primary=(3,), secondary=(1, 2))
# Spine3 uses the LEFT collar as primary and the mean of neck and right collar as secondary: asymmetric, but it is
# what the reference computes; kept for parity (METHOD.md section 4).
_SPINE3 = TwoDirectionJoint(9, primary=(13,), secondary=(12, 14))
_BODY_BONE_GROUPS = (
    (1, 2),
    (4, 5),
    (7, 8),
    (10, 11),
    (3,),
    (6,),
    (9,),
    (12,),
    (15,),
    (13, 14),
    (16, 17),
    (18, 19),
    (20, 21),
)
_LEG = Part("leg", (0, 1, 2, 3, 4, 5, 7, 8, 10, 11), (1, 4, 7, 2, 5, 8))
_SPINE = Part("spine", (0, 1, 2, 3, 6, 9, 12, 13, 14, 15), (3, 6, 12))
_BODY_SEGMENTS = ((1, 4, 7), (2, 5, 8), (3, 6, 9), (13, 16, 18), (14, 17, 19))

SMPL_TREE = KinematicTree(
    name="smpl",
    parents=_SMPL_PARENTS,
    pose_groups=_consecutive_groups(("global_orient", 1), ("body_pose", 23)),
    skeleton=tuple(range(24)),
    two_direction=(_PELVIS, _SPINE3),
    bone_groups=_BODY_BONE_GROUPS + ((22, 23),),
    refine_segments=_BODY_SEGMENTS[:4] + ((18, 20, 22), (14, 17, 19), (19, 21, 23)),
    metric_joints=tuple(range(24)),
    parts=(
        _LEG,
        _SPINE,
        Part("arm", (9, 12, 13, 14, 16, 17, 18, 19, 20, 21, 22, 23), (13, 16, 18, 20, 14, 17, 19, 21)),
    ),
    joint_names=SMPL_JOINT_NAMES,
)

# --------------------------------------------------------------------------------------------------------- SMPL-X
# Per hand, the SMPL-X slots of (base, middle, distal) for index, middle, pinky, ring, thumb, and the fingertip slots
# thumb, index, middle, ring, pinky (smplx's vertex-joint order).
_FINGER_ORDER = ("index", "middle", "pinky", "ring", "thumb")
_TIP_ORDER = ("thumb", "index", "middle", "ring", "pinky")
_HAND_LOCAL_ORDER = ("thumb", "index", "middle", "ring", "pinky")


def _smplx_hand(wrist: int, first_finger_slot: int, first_tip_slot: int):
    fingers = {name: tuple(first_finger_slot + 3 * k + i for i in range(3)) for k, name in enumerate(_FINGER_ORDER)}
    tips = {name: first_tip_slot + k for k, name in enumerate(_TIP_ORDER)}
    local = (wrist,) + sum((fingers[n] + (tips[n],) for n in _HAND_LOCAL_ORDER), ())
    parents = {}
    for name in _FINGER_ORDER:
        chain = (wrist,) + fingers[name] + (tips[name],)
        parents.update({child: parent for parent, child in zip(chain[:-1], chain[1:], strict=True)})
    wrist_spec = TwoDirectionJoint(
        wrist, primary=(fingers["index"][0], fingers["middle"][0]), secondary=(fingers["ring"][0], fingers["pinky"][0])
    )
    twist_joints = sum((fingers[n] for n in _HAND_LOCAL_ORDER), ())
    segments = tuple(fingers[n] for n in _HAND_LOCAL_ORDER)
    return local, parents, wrist_spec, twist_joints, segments


_L_HAND, _L_PARENTS, _L_WRIST, _L_TWISTS, _L_SEGMENTS = _smplx_hand(20, 25, 66)
_R_HAND, _R_PARENTS, _R_WRIST, _R_TWISTS, _R_SEGMENTS = _smplx_hand(21, 40, 71)


def _smplx_parents() -> tuple[int, ...]:
    parents = [NO_PARENT] * 76
    parents[:22] = _SMPL_PARENTS[:22]
    parents[22] = parents[23] = parents[24] = 15  # jaw, eyes
    for table in (_L_PARENTS, _R_PARENTS):
        for child, parent in table.items():
            parents[child] = parent
    return tuple(parents)


# The 76 slots are the first 76 of smplx's 127 output joints (55 skeleton joints, 11 face / foot landmarks, fingertips).
SMPLX_JOINT_NAMES = tuple(SMPLX_OUTPUT_NAMES[:76])

SMPLX_TREE = KinematicTree(
    name="smplx",
    parents=_smplx_parents(),
    pose_groups=_consecutive_groups(
        ("global_orient", 1),
        ("body_pose", 21),
        ("jaw_pose", 1),
        ("leye_pose", 1),
        ("reye_pose", 1),
        ("left_hand_pose", 15),
        ("right_hand_pose", 15),
    ),
    skeleton=tuple(range(22)) + tuple(range(25, 55)) + tuple(range(66, 76)),
    two_direction=(_PELVIS, _SPINE3, _L_WRIST, _R_WRIST),
    bone_groups=_BODY_BONE_GROUPS + tuple(zip(_L_HAND[1:], _R_HAND[1:], strict=True)),
    refine_segments=_BODY_SEGMENTS + _L_SEGMENTS + _R_SEGMENTS,
    # METHOD.md says "63" but its explicit list has 62 slots: body 0-21 and each hand without its wrist.
    metric_joints=tuple(range(22)) + _L_HAND[1:] + _R_HAND[1:],
    parts=(
        _LEG,
        _SPINE,
        Part(
            "arm",
            (9, 12, 13, 14, 16, 17, 18, 19, 20, 37, 25, 28, 34, 31, 21, 52, 40, 43, 49, 46),
            (13, 16, 18, 14, 17, 19),
        ),
        Part("lhand", _L_HAND, _L_TWISTS),
        Part("rhand", _R_HAND, _R_TWISTS),
    ),
    relative_joints=frozenset(range(25, 55)),
    hands=(_L_HAND, _R_HAND),
    joint_names=SMPLX_JOINT_NAMES,
)

TREES = {"smpl": SMPL_TREE, "smplx": SMPLX_TREE}
