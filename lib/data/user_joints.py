"""Users' skeletons: joints files (.npy, .npz, .json, .csv) and joint orders mapped onto a tree's slots.

A joint order names the input's columns (joints) with the tree's joint names (smplx's names, ``tree.joint_names``):
- ``smpl24``: the 24 SMPL joints in SMPL order;
- ``smplx127``: the smplx package's SMPL-X output (127 joints; the first 76 are the solver's slots);
- ``smplx76``: the solver's 76-slot SMPL-X view (55 skeleton joints, 11 face / foot landmarks, 10 fingertips);
- ``smplx65``: the 55 SMPL-X skeleton joints followed by the 10 fingertips (left thumb, index, middle, ring, pinky,
  then the right ones);
- ``smplx55``: the 55 skeleton joints alone; SMPL-X fitting rejects it (the fingertips place the distal finger
  joints) with an error naming the missing joints;
- a JSON file: either a list naming every input column (``null`` or names the tree does not know are ignored, e.g.
  the five extra joints of a 29-joint HybrIK skeleton), or an object {joint name: column index}.
Pure functions over arrays, except :func:`read_joints` and :func:`load_joint_order`, which read files.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from lib.kinematics.tree import NO_PARENT, SMPL_TREE, SMPLX_OUTPUT_NAMES, SMPLX_TREE, KinematicTree

JOINT_FILE_SUFFIXES = (".npy", ".npz", ".json", ".csv")


def _fingertip_names(tree: KinematicTree) -> tuple[str, ...]:
    """The tips of each hand (every 4th slot of the hand's local order after the wrist), left hand first."""
    return tuple(tree.joint_names[hand[k]] for hand in tree.hands for k in range(4, len(hand), 4))


_SMPLX_SKELETON = SMPLX_TREE.joint_names[: SMPLX_TREE.num_pose_joints]
JOINT_ORDERS: dict[str, tuple[str, ...]] = {
    "smpl24": SMPL_TREE.joint_names,
    "smplx127": tuple(SMPLX_OUTPUT_NAMES[:127]),
    "smplx76": SMPLX_TREE.joint_names,
    "smplx65": _SMPLX_SKELETON + _fingertip_names(SMPLX_TREE),
    "smplx55": _SMPLX_SKELETON,
}


def order_for_count(num_joints: int) -> str | None:
    """The built-in joint order with this many joints, if any."""
    return next((name for name, names in JOINT_ORDERS.items() if len(names) == num_joints), None)


def load_joint_order(spec: str) -> tuple[str | None, ...] | dict[str, int]:
    """A built-in order's names, or a JSON mapping file's content (list of column names or {name: column})."""
    if spec in JOINT_ORDERS:
        return JOINT_ORDERS[spec]
    path = Path(spec)
    if path.suffix.lower() != ".json":
        raise ValueError(f"unknown joint order {spec!r}: use one of {', '.join(JOINT_ORDERS)} or a .json mapping file")
    if not path.is_file():
        raise FileNotFoundError(f"joint order file not found: {path}")
    try:
        mapping = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"joint order file {path} is not valid JSON ({err})") from None
    if isinstance(mapping, list) and all(n is None or isinstance(n, str) for n in mapping):
        return tuple(mapping)
    if isinstance(mapping, dict) and all(isinstance(c, int) and not isinstance(c, bool) for c in mapping.values()):
        return {str(k): int(v) for k, v in mapping.items()}
    raise ValueError(
        f"joint order file {path}: expected a list of joint names (one per input column) or an "
        "object {joint name: column index}"
    )


def to_slots(joints: np.ndarray, order: tuple[str | None, ...] | dict[str, int], tree: KinematicTree) -> np.ndarray:
    """(B, N, 3) joints in a user's order -> (B, tree.num_joints, 3) slots.

    Slots outside the tree's skeleton that the input lacks (e.g. SMPL-X eyes, face landmarks) get the root's
    position; they do not enter the solver. A missing skeleton joint is an error listing all of them.
    """
    num_columns = joints.shape[1]
    if isinstance(order, dict):
        unknown = sorted(set(order) - set(tree.joint_names))
        if unknown:
            raise ValueError(
                f"joint order names joints the {tree.name} skeleton does not have: {unknown}; "
                f"use names from: {', '.join(tree.joint_names)}"
            )
        columns = dict(order)
    else:
        if len(order) != num_columns:
            raise ValueError(f"the joint order names {len(order)} joints but the input has {num_columns} per frame")
        known = set(tree.joint_names)
        columns = {name: c for c, name in enumerate(order) if name in known}
    bad = {name: c for name, c in columns.items() if not 0 <= c < num_columns}
    if bad:
        raise ValueError(f"joint order columns out of range for {num_columns} input joints: {bad}")
    slot_of = {name: s for s, name in enumerate(tree.joint_names)}
    missing = [tree.joint_names[s] for s in tree.skeleton if tree.joint_names[s] not in columns]
    if missing:
        hint = ""
        if set(missing) <= set(_fingertip_names(tree)):
            hint = (
                " (SMPL-X fitting needs the 10 fingertips: give smplx's 127-joint output, the 76-slot view or "
                "55 joints + 10 fingertips, --joint-order smplx127 | smplx76 | smplx65)"
            )
        raise ValueError(
            f"the skeleton lacks {len(missing)} joint(s) the {tree.name} solver needs: {', '.join(missing)}{hint}"
        )
    root = columns[tree.joint_names[tree.root]]
    out = np.repeat(joints[:, root : root + 1], tree.num_joints, axis=1)
    for name, column in columns.items():
        out[:, slot_of[name]] = joints[:, column]
    return out


def default_order(tree: KinematicTree, num_joints: int) -> tuple[str, ...]:
    """The built-in order a (B, num_joints, 3) input is taken to have, or one error naming the choices."""
    name = order_for_count(num_joints)
    if name is None:
        counts = ", ".join(f"{len(v)} ({k})" for k, v in JOINT_ORDERS.items())
        raise ValueError(
            f"{num_joints} joints per frame matches no built-in joint order ({counts}); pass a JSON "
            "joint order mapping your joints to SMPL / SMPL-X names (--joint-order my_order.json)"
        )
    return JOINT_ORDERS[name]


def read_joints(path: str | Path, key: str | None = None) -> np.ndarray:
    """A joints file -> float array (T, J, 3) or (J, 3).

    .npy: the array; .npz: ``key`` or the only array; .json: nested lists (or an object with ``key`` / one list);
    .csv: one frame per row, x y z per joint (a header row is skipped).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in JOINT_FILE_SUFFIXES:
        raise ValueError(f"{path}: unsupported joints file type {suffix!r}; use {', '.join(JOINT_FILE_SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"joints file not found: {path}")
    if suffix == ".npy":
        array = np.load(path, allow_pickle=False)
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            array = data[_pick_key(path, list(data.files), key)]
    elif suffix == ".json":
        try:
            content = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err})") from None
        if isinstance(content, dict):
            content = content[_pick_key(path, [k for k, v in content.items() if isinstance(v, list)], key)]
        array = np.asarray(content, dtype=np.float64)
    else:
        array = _read_csv(path)
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{path}: joints must be numbers, got {array.dtype}")
    return array


def _pick_key(path: Path, keys: list[str], key: str | None) -> str:
    if key is not None:
        if key not in keys:
            raise ValueError(f"{path} has no array {key!r}; it has: {', '.join(keys) or 'none'}")
        return key
    if len(keys) != 1:
        raise ValueError(f"{path} holds {len(keys)} arrays ({', '.join(keys)}); name one with --key")
    return keys[0]


def _read_csv(path: Path) -> np.ndarray:
    with path.open(newline="") as handle:
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    try:
        float(rows[0][0])
    except (ValueError, IndexError):
        rows = rows[1:]  # a header
    try:
        frames = np.array([[float(cell) for cell in row if cell.strip()] for row in rows])
    except ValueError as err:
        raise ValueError(f"{path}: every row must hold x, y, z numbers for each joint ({err})") from None
    if frames.ndim != 2 or frames.shape[1] % 3:
        raise ValueError(f"{path}: every row must hold 3 numbers per joint (x, y, z), same count in every row")
    return frames.reshape(len(frames), -1, 3)


def skeleton_bones(tree: KinematicTree) -> list[tuple[int, int]]:
    """(parent, child) slot pairs of the tree's skeleton, for drawing and bone-length reports."""
    return [(tree.parents[j], j) for j in tree.skeleton if tree.parents[j] != NO_PARENT]
