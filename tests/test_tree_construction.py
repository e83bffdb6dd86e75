"""How the trees are built and validated: the SMPL-X hand builder against METHOD.md's literal slot lists, and the
checks that refuse an inconsistent tree description.

The module-level trees are built once at import; these tests call the builders again so that a wrong builder (or a
mutation of it) shows up here, not only in the data it produced at import time.
"""

import dataclasses

import pytest

from lib.kinematics import tree as tree_module
from lib.kinematics.tree import NO_PARENT, SMPL_TREE, SMPLX_TREE, Part, TwoDirectionJoint

# METHOD.md section 1: each hand in local order wrist, thumb, index, middle, ring, pinky (3 joints + tip each).
LEFT_HAND = (20, 37, 38, 39, 66, 25, 26, 27, 67, 28, 29, 30, 68, 34, 35, 36, 69, 31, 32, 33, 70)
RIGHT_HAND = (21, 52, 53, 54, 71, 40, 41, 42, 72, 43, 44, 45, 73, 49, 50, 51, 74, 46, 47, 48, 75)
HAND_LOCAL_PARENTS = (-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19)
# METHOD.md section 6: hand twists in local finger order thumb, index, middle, ring, pinky.
LEFT_TWIST_JOINTS = (37, 38, 39, 25, 26, 27, 28, 29, 30, 34, 35, 36, 31, 32, 33)


@pytest.mark.parametrize(
    ("wrist", "first_finger", "first_tip", "expected"), [(20, 25, 66, LEFT_HAND), (21, 40, 71, RIGHT_HAND)]
)
def test_hand_builder_gives_the_method_slots(wrist, first_finger, first_tip, expected):
    local, parents, wrist_spec, twist_joints, segments = tree_module._smplx_hand(wrist, first_finger, first_tip)
    assert local == expected
    assert parents == {expected[k]: expected[p] for k, p in enumerate(HAND_LOCAL_PARENTS) if p >= 0}
    # wrist: primary = index and middle bases (local 5, 9), secondary = ring and pinky bases (local 13, 17)
    assert wrist_spec == TwoDirectionJoint(
        wrist, primary=(expected[5], expected[9]), secondary=(expected[13], expected[17])
    )
    fingers = [expected[1 + 4 * f : 4 + 4 * f] for f in range(5)]  # thumb, index, middle, ring, pinky (no tips)
    assert twist_joints == sum(fingers, ())
    assert segments == tuple(fingers)
    if wrist == 20:
        assert twist_joints == LEFT_TWIST_JOINTS


def test_parent_table_is_the_method_one():
    parents = tree_module._smplx_parents()
    assert len(parents) == 76
    assert parents[:22] == (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19)
    assert parents[22:25] == (15, 15, 15)  # jaw, eyes hang from the head
    for hand in (LEFT_HAND, RIGHT_HAND):
        for k, p in enumerate(HAND_LOCAL_PARENTS):
            if p >= 0:
                assert parents[hand[k]] == hand[p]
    used = set(range(25)) | set(LEFT_HAND) | set(RIGHT_HAND)
    assert all(parents[j] == NO_PARENT for j in range(76) if j not in used)  # the 11 landmark slots
    assert parents == SMPLX_TREE.parents


def test_rebuilding_the_trees_passes_validation():
    for tree in (SMPL_TREE, SMPLX_TREE):
        assert dataclasses.replace(tree) == tree


def _broken(tree, **changes):
    with pytest.raises(ValueError) as error:
        dataclasses.replace(tree, **changes)
    return str(error.value)


def test_a_child_before_its_parent_is_refused():
    parents = list(SMPL_TREE.parents)
    parents[4] = 7  # left knee under the left ankle
    assert "slot 4 must have a skeleton parent" in _broken(SMPL_TREE, parents=tuple(parents))


def test_a_parent_outside_the_skeleton_is_refused():
    skeleton = tuple(j for j in SMPL_TREE.skeleton if j != 18)  # left elbow missing, wrist still hangs from it
    assert "slot 20 must have a skeleton parent" in _broken(SMPL_TREE, skeleton=skeleton)


def test_pose_groups_must_be_consecutive():
    groups = SMPL_TREE.pose_groups
    gap = (groups[0], dataclasses.replace(groups[1], start=groups[1].start + 1))
    assert "consecutive" in _broken(SMPL_TREE, pose_groups=gap)


@pytest.mark.parametrize("field", ["primary", "secondary"])
def test_a_two_direction_joint_must_use_its_own_children(field):
    pelvis = SMPL_TREE.two_direction[0]
    wrong = dataclasses.replace(pelvis, **{field: (4,)})  # the left knee is a grandchild of the pelvis
    message = _broken(SMPL_TREE, two_direction=(wrong,) + SMPL_TREE.two_direction[1:])
    assert "two-direction joint 0 must use its own children" in message


@pytest.mark.parametrize("joint", [9, 10])  # spine3 has three children, the left foot none
def test_a_part_may_only_twist_joints_with_one_child(joint):
    leg = SMPL_TREE.parts[0]
    wrong = Part(leg.name, leg.joints, leg.twist_joints + (joint,))
    message = _broken(SMPL_TREE, parts=(wrong,) + SMPL_TREE.parts[1:])
    assert f"part leg twists joint {joint}, which has no single child" in message


def test_pose_groups_are_laid_out_consecutively():
    groups = tree_module._consecutive_groups(("global_orient", 1), ("body_pose", 3), ("jaw_pose", 2))
    assert [(g.name, g.start, g.stop) for g in groups] == [
        ("global_orient", 0, 1),
        ("body_pose", 1, 4),
        ("jaw_pose", 4, 6),
    ]


def test_a_joint_that_is_its_own_parent_is_refused():
    parents = list(SMPL_TREE.parents)
    parents[4] = 4
    assert "slot 4 must have a skeleton parent with a smaller index" in _broken(SMPL_TREE, parents=tuple(parents))


@pytest.mark.parametrize("tree, joint", [(SMPL_TREE, 10), (SMPLX_TREE, 55)], ids=["leaf", "outside-skeleton"])
def test_a_two_direction_joint_without_children_is_refused(tree, joint):
    # the SMPL left foot has no child; SMPL-X slot 55 is not in the skeleton at all
    spec = dataclasses.replace(tree.two_direction[0], joint=joint)
    message = _broken(tree, two_direction=tree.two_direction + (spec,))
    assert f"two-direction joint {joint} must use its own children" in message


def test_joint_names_must_name_every_slot():
    message = _broken(SMPL_TREE, joint_names=SMPL_TREE.joint_names[:-1])
    assert message == "smpl: 23 joint names for 24 slots"
