"""The kinematic trees own every body-specific index: the pose layout pinned against METHOD.md section 1 and smplx,
and no index literal of a specific body anywhere else in the code."""

import ast
from pathlib import Path

import pytest
import smplx

from lib.data import db
from lib.kinematics.tree import SMPL_TREE, SMPLX_TREE, TREES
from lib.models import body_model

ROOT = Path(__file__).resolve().parents[1]


def test_pose_groups_are_smplx_layout():
    """METHOD.md section 1: SMPL root + 23 body joints; SMPL-X root, body 1-21, jaw 22, eyes 23 / 24, left hand
    25-39, right hand 40-54 (smplx's full_pose order)."""
    assert [(g.name, g.start, g.stop) for g in SMPL_TREE.pose_groups] == [("global_orient", 0, 1), ("body_pose", 1, 24)]
    assert [(g.name, g.start, g.stop) for g in SMPLX_TREE.pose_groups] == [
        ("global_orient", 0, 1),
        ("body_pose", 1, 22),
        ("jaw_pose", 22, 23),
        ("leye_pose", 23, 24),
        ("reye_pose", 24, 25),
        ("left_hand_pose", 25, 40),
        ("right_hand_pose", 40, 55),
    ]
    assert (SMPL_TREE.num_pose_joints, SMPLX_TREE.num_pose_joints) == (24, 55)
    assert (SMPL_TREE.num_twists, SMPLX_TREE.num_twists) == (23, 54)
    # smplx's own body models agree on the sizes of their pose keywords
    assert smplx.SMPLX.NUM_BODY_JOINTS == len(SMPLX_TREE.pose_slots("body_pose"))
    assert smplx.SMPLX.NUM_HAND_JOINTS == len(SMPLX_TREE.pose_slots("left_hand_pose"))
    assert smplx.SMPL.NUM_BODY_JOINTS == len(SMPL_TREE.pose_slots("body_pose"))
    with pytest.raises(ValueError, match="no pose group"):
        SMPL_TREE.pose_slots("left_hand_pose")


def test_hand_pose_slots_are_the_hands_rotating_joints():
    """Each hand's pose slots are its skeleton joints below the wrist that carry a rotation (tips do not)."""
    assert SMPL_TREE.hand_pose_slots == ()
    for hand, slots in zip(SMPLX_TREE.hands, SMPLX_TREE.hand_pose_slots, strict=True):
        rotating = sorted(j for j in hand[1:] if j < SMPLX_TREE.num_pose_joints)
        assert list(slots) == rotating


def test_consumers_take_counts_from_the_tree():
    for name, tree in TREES.items():
        assert db.NUM_POSE_JOINTS[name] == tree.num_pose_joints
        assert body_model._SPECS[name].num_pose_joints == tree.num_pose_joints
        assert body_model._SPECS[name].vertex_joints == (name == "smplx")


# Integers that are slot indices or counts of one body (SMPL 24 / 23 twists / 72; SMPL-X body 21-22, jaw / eyes
# 22-24, hands 25 / 39 / 40 / 54 / 15 / 45, 55 / 63, fingertips 66-75 / 76).
BODY_INDEX_LITERALS = {15, 21, 22, 23, 24, 25, 39, 40, 45, 54, 55, 63, 66, 69, 70, 71, 72, 75, 76}
# Files allowed to know them: the trees, and the generator that builds the open body models.
OWNERS = {"lib/kinematics/tree.py", "tools/make_open_body_model.py"}
# (file, literal): uses of such a number that are not indices.
NOT_INDICES = {
    ("lib/io/safe_io.py", 22): "file digest read size, 1 << 22 bytes",
    ("lib/engine/evaluator.py", 40): "width of the results table rule",
}


def _int_literals(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Constant) and type(node.value) is int:
            yield node.value, node.lineno


def test_no_body_index_literals_outside_the_tree():
    """Slot ranges and joint counts of a specific body come from KinematicTree; docstrings and comments may name
    them (only code literals are checked). Tests may pin them, so tests/ is not scanned."""
    files = [
        *ROOT.glob("*.py"),
        *(ROOT / "lib").rglob("*.py"),
        *(ROOT / "tools").rglob("*.py"),
        *(ROOT / "bench").rglob("*.py"),
    ]
    assert len(files) > 20
    found = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        if rel in OWNERS:
            continue
        found += [
            f"{rel}:{line}: {value}"
            for value, line in _int_literals(path)
            if value in BODY_INDEX_LITERALS and (rel, value) not in NOT_INDICES
        ]
    assert not found, (
        "index literals of a specific body outside lib/kinematics/tree.py (take them from the "
        "KinematicTree: pose_slots, hands, num_pose_joints, ...):\n" + "\n".join(found)
    )


def test_literal_scan_sees_a_slice(tmp_path):
    """The scan finds the kind of literal it is for (so the test above can fail), and not text."""
    path = tmp_path / "probe.py"
    path.write_text("left_hand = pose[:, 25:40]  # 55\n'''docstring 25'''\n")
    assert [v for v, _ in _int_literals(path) if v in BODY_INDEX_LITERALS] == [25, 40]
