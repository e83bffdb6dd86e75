"""Joint limit tables of the synthetic sampler, as data: per joint its idealised axes and angle ranges.

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
Limits and their sources: ``docs/synthetic_data.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml


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
    mirror: bool = False  # right-side joint: mirror the rotation vector of the left-side construction

    def mirrored(self, name: str) -> JointLimit:
        return JointLimit(
            name, self.twist_axis, self.swing_axes, self.swing1, self.swing2, self.twist, self.names, mirror=True
        )

    def ranges(self) -> np.ndarray:
        """(3, 3): rows swing1, swing2, twist; columns low, neutral, high (degrees)."""
        return np.array([self.swing1, self.swing2, self.twist], dtype=np.float64)


_X, _Y, _Z = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)
_NX, _NY, _NZ = (-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0)
_ZERO = (0.0, 0.0, 0.0)


def _spine(name: str, flex: float, ext: float, lateral: float, rotation: float, neutral_flex: float = 0.0):
    # trunk bone points up (+y); flexion (bending forward, +y towards +z) is about +x
    return JointLimit(
        name,
        _Y,
        (_X, _Z),
        (-ext, neutral_flex, flex),
        (-lateral, 0.0, lateral),
        (-rotation, 0.0, rotation),
        ("flexion", "lateral_bending", "axial_rotation"),
    )


def _leaf(name: str):
    return JointLimit(name, _Y, (_X, _Z), _ZERO, _ZERO, _ZERO, ("none", "none", "none"))


_AXES = {"x": _X, "y": _Y, "z": _Z, "-x": _NX, "-y": _NY, "-z": _NZ}


def _load_body_limits(path: Path) -> dict[str, JointLimit]:
    """The left-side body joints' limits from the YAML table beside this module (its header says the format)."""
    table = yaml.safe_load(path.read_text())

    def degrees(row):
        return tuple(float(v) for v in row)

    return {
        name: JointLimit(name, _AXES[row["twist_axis"]], tuple(_AXES[a] for a in row["swing_axes"]),
                         degrees(row["swing1"]), degrees(row["swing2"]), degrees(row["twist"]), tuple(row["names"]))
        for name, row in table.items()
    }  # fmt: skip


_BODY = _load_body_limits(Path(__file__).with_name("body_limits.yaml"))
_L_HIP, _L_KNEE, _L_ANKLE, _L_FOOT = (_BODY[f"left_{j}"] for j in ("hip", "knee", "ankle", "foot"))
_L_COLLAR, _L_SHOULDER, _L_ELBOW = (_BODY[f"left_{j}"] for j in ("collar", "shoulder", "elbow"))
_L_WRIST, _L_HAND = _BODY["left_wrist"], _BODY["left_hand"]

# fmt: off
SMPL_LIMITS: tuple[JointLimit, ...] = (
    _leaf("pelvis"),                      # 0: the root is sampled separately (global orientation)
    _L_HIP, _L_HIP.mirrored("right_hip"),                                                   # 1, 2
    _spine("spine1", 27.0, 8.0, 12.0, 15.0, 3.0),                                          # 3
    _L_KNEE, _L_KNEE.mirrored("right_knee"),                                                # 4, 5
    _spine("spine2", 27.0, 8.0, 12.0, 15.0, 3.0),                                          # 6
    _L_ANKLE, _L_ANKLE.mirrored("right_ankle"),                                             # 7, 8
    _spine("spine3", 27.0, 8.0, 12.0, 15.0, 3.0),                                          # 9
    _L_FOOT, _L_FOOT.mirrored("right_foot"),                                                # 10, 11
    _spine("neck", 22.0, 22.0, 22.0, 30.0),                                                # 12
    _L_COLLAR, _L_COLLAR.mirrored("right_collar"),                                          # 13, 14
    _spine("head", 22.0, 22.0, 22.0, 30.0),                                                # 15
    _L_SHOULDER, _L_SHOULDER.mirrored("right_shoulder"),                                    # 16, 17
    _L_ELBOW, _L_ELBOW.mirrored("right_elbow"),                                             # 18, 19
    _L_WRIST, _L_WRIST.mirrored("right_wrist"),                                             # 20, 21
    _L_HAND, _L_HAND.mirrored("right_hand"),                                                # 22, 23
)
# fmt: on

# --- hands (SMPL-X): left hand, fingers along +x, palm facing -y, thumb side +z -------------------------------
# Finger flexion (curl towards the palm, +x towards -y) is a rotation about -z; "radial" abduction (towards the
# thumb, +x towards +z) is about -y. Order of a hand pose: index, middle, pinky, ring, thumb; 3 joints each.
_THUMB_U = tuple((np.array([1.0, 0.0, 1.0]) / math.sqrt(2.0)).tolist())  # thumb bone, in the palm plane
_THUMB_Q = tuple((np.array([1.0, 0.0, -1.0]) / math.sqrt(2.0)).tolist())  # in-plane, towards the fingers
# Thumb MCP / IP flexion curls the thumb towards the palm and across it: the tip moves towards the palm normal (-y)
# tilted 30 degrees towards the fingers.
_THUMB_CURL = np.array([0.0, -math.cos(math.radians(30.0)), 0.0]) + math.sin(math.radians(30.0)) * np.array(_THUMB_Q)
_THUMB_FLEX = tuple((np.cross(_THUMB_U, _THUMB_CURL) / np.linalg.norm(np.cross(_THUMB_U, _THUMB_CURL))).tolist())
_THUMB_SIDE = tuple(np.cross(_THUMB_FLEX, _THUMB_U).tolist())


# fmt: off
def _finger(name: str, mcp_abduction: tuple[float, float, float]):
    mcp = JointLimit(f"{name}1", _X, (_NZ, _NY), (-20.0, 10.0, 90.0), mcp_abduction, (-5.0, 0.0, 5.0),
                     ("flexion", "radial_abduction", "twist"))
    pip = JointLimit(f"{name}2", _X, (_NZ, _NY), (0.0, 10.0, 100.0), (-3.0, 0.0, 3.0), (-3.0, 0.0, 3.0),
                     ("flexion", "deviation", "twist"))
    dip = JointLimit(f"{name}3", _X, (_NZ, _NY), (0.0, 5.0, 80.0), (-2.0, 0.0, 2.0), (-2.0, 0.0, 2.0),
                     ("flexion", "deviation", "twist"))
    return mcp, pip, dip


HAND_LIMITS: tuple[JointLimit, ...] = (
    *_finger("index", (-10.0, 0.0, 20.0)),
    *_finger("middle", (-10.0, 0.0, 10.0)),
    *_finger("pinky", (-20.0, 0.0, 10.0)),
    *_finger("ring", (-15.0, 0.0, 10.0)),
    # thumb CMC: palmar abduction (thumb in front of the palm, about the in-plane axis q), flexion across the palm
    # (in the palm plane, towards the fingers: about +y), pronation of the metacarpal (about the thumb bone).
    JointLimit("thumb1", _THUMB_U, (_THUMB_Q, _Y), (-10.0, 10.0, 60.0), (-20.0, 0.0, 25.0), (-10.0, 0.0, 45.0),
               ("palmar_abduction", "flexion", "opposition_pronation")),
    JointLimit("thumb2", _THUMB_U, (_THUMB_FLEX, _THUMB_SIDE), (-10.0, 10.0, 50.0), (-5.0, 0.0, 5.0),
               (-5.0, 0.0, 5.0), ("flexion", "deviation", "twist")),
    JointLimit("thumb3", _THUMB_U, (_THUMB_FLEX, _THUMB_SIDE), (-15.0, 5.0, 80.0), (-3.0, 0.0, 3.0),
               (-3.0, 0.0, 3.0), ("flexion", "deviation", "twist")),
)
# fmt: on
# Coupling of the distal joint to the middle one: DIP = r * PIP + e, r ~ U(0.55, 0.8), e ~ U(-5, 5) degrees,
# clipped to the DIP range (the classic DIP ~ 2/3 PIP rule).
DIP_RATIO = (0.55, 0.8)
DIP_NOISE = 5.0
# Opposition: a per-keypose amount o ~ U(0, 1) pulls the thumb CMC angles towards o * OPPOSITION (degrees of
# palmar abduction, flexion across the palm, pronation) with weight OPPOSITION_WEIGHT.
OPPOSITION = (40.0, 15.0, 40.0)  # inside the CMC swing ellipse, so the pull keeps the angles within limits
OPPOSITION_WEIGHT = 0.7
FINGER_ROWS = {"index": 0, "middle": 3, "pinky": 6, "ring": 9, "thumb": 12}

# Root: global orientation = base @ yaw(about +y) @ tilt(pitch about +x, roll about +z).
ROOT_TILT = 15.0  # degrees, pitch and roll limit of an upright body
ROOT_YAW_STEP = 60.0  # degrees, largest yaw change between keyposes
ROOT_FREE_FRACTION = 0.2  # sequences whose base orientation is uniformly random (lying, upside down, ...)


def _check_table(table: Sequence[JointLimit]) -> None:
    for lim in table:
        u = np.asarray(lim.twist_axis)
        e1, e2 = (np.asarray(e) for e in lim.swing_axes)
        if not np.isclose(np.linalg.norm(u), 1.0):
            raise ValueError(f"{lim.name}: twist axis must be a unit vector")
        if abs(u @ e1) > 1e-9 or abs(u @ e2) > 1e-9 or abs(e1 @ e2) > 1e-9:
            raise ValueError(f"{lim.name}: swing axes must be perpendicular to the twist axis and to each other")
        for lo, neutral, hi in lim.ranges():
            if not lo <= 0.0 <= hi or not lo <= neutral <= hi:
                raise ValueError(f"{lim.name}: each range needs low <= neutral <= high and must contain 0")


_check_table(SMPL_LIMITS)
_check_table(HAND_LIMITS)


class LimitTable:
    """A limit table as arrays: axes (J, 3, 3) [e1, e2, u], ranges (J, 3, 3) degrees, mirror (J,)."""

    def __init__(self, table: Sequence[JointLimit]):
        self.names = tuple(lim.name for lim in table)
        self.axes = np.stack([np.stack([lim.swing_axes[0], lim.swing_axes[1], lim.twist_axis]) for lim in table])
        self.ranges = np.stack([lim.ranges() for lim in table])
        self.mirror = np.array([lim.mirror for lim in table])

    def __len__(self) -> int:
        return len(self.names)


SMPL_TABLE = LimitTable(SMPL_LIMITS)  # rows are SMPL pose slots; SMPL-X body slots are the same joints
HAND_TABLE = LimitTable(HAND_LIMITS)  # rows are one hand's pose slots, in smplx's finger order
