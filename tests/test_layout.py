"""The trees' layout pinned against METHOD.md sections 1, 2, 4, 6 and 7, written out literally (not from tree.py).

Official SMPL-X checkpoints and ``skeleton_2_beta`` files are read in this order, so a swapped pair of fingers
changes nothing on the open data but breaks every official file. The fitted ``skeleton_2_beta`` cache follows the
tree: a changed layout must not reuse a stale matrix.
"""

import dataclasses
import os
import subprocess
import sys

import pytest
import torch

from lib.core.config import REPO_ROOT, body_defaults, load_config
from lib.engine import build
from lib.kinematics.tree import SMPL_TREE, SMPLX_TREE, Part
from lib.models.body_model import BodyModel

# ---- METHOD.md section 1
SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
L_HAND = [20, 37, 38, 39, 66, 25, 26, 27, 67, 28, 29, 30, 68, 34, 35, 36, 69, 31, 32, 33, 70]
R_HAND = [21, 52, 53, 54, 71, 40, 41, 42, 72, 43, 44, 45, 73, 49, 50, 51, 74, 46, 47, 48, 75]
HAND_LOCAL_PARENTS = [-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19]
SMPLX_METRIC_JOINTS = list(range(22)) + [
    37,
    38,
    39,
    66,
    25,
    26,
    27,
    67,
    28,
    29,
    30,
    68,
    34,
    35,
    36,
    69,
    31,
    32,
    33,
    70,
    52,
    53,
    54,
    71,
    40,
    41,
    42,
    72,
    43,
    44,
    45,
    73,
    49,
    50,
    51,
    74,
    46,
    47,
    48,
    75,
]

# ---- METHOD.md section 2: bone-length groups (the rows of skeleton_2_beta), in file order
BODY_BONE_GROUPS = [
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
]
SMPL_BONE_GROUPS = BODY_BONE_GROUPS + [(22, 23)]
SMPLX_BONE_GROUPS = BODY_BONE_GROUPS + [
    (37, 52),
    (38, 53),
    (39, 54),
    (66, 71),  # thumb
    (25, 40),
    (26, 41),
    (27, 42),
    (67, 72),  # index
    (28, 43),
    (29, 44),
    (30, 45),
    (68, 73),  # middle
    (34, 49),
    (35, 50),
    (36, 51),
    (69, 74),  # ring
    (31, 46),
    (32, 47),
    (33, 48),
    (70, 75),
]  # pinky

# ---- METHOD.md section 4: (joint, primary children, secondary children)
SMPL_TWO_DIRECTION = [(0, (3,), (1, 2)), (9, (13,), (12, 14))]
SMPLX_TWO_DIRECTION = SMPL_TWO_DIRECTION + [(20, (25, 28), (34, 31)), (21, (40, 43), (49, 46))]

# ---- METHOD.md sections 6 and 7: part name -> (joints read, twist_angle indices predicted), checkpoint order
LEG = ("leg", [0, 1, 2, 3, 4, 5, 7, 8, 10, 11], [0, 3, 6, 1, 4, 7])
SPINE = ("spine", [0, 1, 2, 3, 6, 9, 12, 13, 14, 15], [2, 5, 11])
SMPL_PARTS = [LEG, SPINE, ("arm", [9, 12, 13, 14, 16, 17, 18, 19, 20, 21, 22, 23], [12, 15, 17, 19, 13, 16, 18, 20])]
SMPLX_PARTS = [
    LEG,
    SPINE,
    ("arm", [9, 12, 13, 14, 16, 17, 18, 19, 20, 37, 25, 28, 34, 31, 21, 52, 40, 43, 49, 46], [12, 15, 17, 13, 16, 18]),
    ("lhand", L_HAND, [36, 37, 38, 24, 25, 26, 27, 28, 29, 33, 34, 35, 30, 31, 32]),
    ("rhand", R_HAND, [51, 52, 53, 39, 40, 41, 42, 43, 44, 48, 49, 50, 45, 46, 47]),
]


def _parts(tree):
    return [(p.name, list(p.joints), list(p.twist_indices)) for p in tree.parts]


def _two_direction(tree):
    return [(s.joint, tuple(s.primary), tuple(s.secondary)) for s in tree.two_direction]


def test_smpl_layout_is_the_method_literal():
    assert list(SMPL_TREE.parents) == SMPL_PARENTS
    assert _parts(SMPL_TREE) == SMPL_PARTS
    assert [tuple(g) for g in SMPL_TREE.bone_groups] == SMPL_BONE_GROUPS
    assert _two_direction(SMPL_TREE) == SMPL_TWO_DIRECTION
    assert list(SMPL_TREE.metric_joints) == list(range(24))
    assert SMPL_TREE.twist_child[9] == 14  # the last child is spine3's twist axis (section 6)
    assert set(SMPL_TREE.refine_segments) == {
        (1, 4, 7),
        (2, 5, 8),
        (3, 6, 9),
        (13, 16, 18),
        (18, 20, 22),
        (14, 17, 19),
        (19, 21, 23),
    }  # section 3, V2


def test_smplx_layout_is_the_method_literal():
    assert list(SMPLX_TREE.parents[:22]) == SMPL_PARENTS[:22]
    assert [list(h) for h in SMPLX_TREE.hands] == [L_HAND, R_HAND]
    for hand in (L_HAND, R_HAND):
        for k in range(1, 21):
            assert SMPLX_TREE.parents[hand[k]] == hand[HAND_LOCAL_PARENTS[k]], hand[k]
    assert _parts(SMPLX_TREE) == SMPLX_PARTS
    assert [tuple(g) for g in SMPLX_TREE.bone_groups] == SMPLX_BONE_GROUPS
    assert len(SMPLX_TREE.bone_groups) == 33
    assert _two_direction(SMPLX_TREE) == SMPLX_TWO_DIRECTION
    assert list(SMPLX_TREE.metric_joints) == SMPLX_METRIC_JOINTS
    assert SMPLX_TREE.relative_joints == frozenset(range(25, 55))  # finger joints (section 5)
    assert SMPLX_TREE.twist_child[9] == 14
    fingers = {tuple(hand[k : k + 3]) for hand in (L_HAND, R_HAND) for k in (1, 5, 9, 13, 17)}
    body = {(1, 4, 7), (2, 5, 8), (3, 6, 9), (13, 16, 18), (14, 17, 19)}
    assert set(SMPLX_TREE.refine_segments) == body | fingers


# ------------------------------------------------------------------------------------------------ the cache key
def _swap_ring_and_pinky(tree):
    """The same tree with ring and pinky exchanged in the hand parts and the bone groups (a plausible slip)."""
    swap = {}
    for hand in tree.hands:
        for k in range(13, 17):
            swap[hand[k]], swap[hand[k + 4]] = hand[k + 4], hand[k]
    parts = tuple(
        Part(p.name, tuple(swap.get(j, j) for j in p.joints), tuple(swap.get(j, j) for j in p.twist_joints))
        for p in tree.parts
    )
    groups = tuple(tuple(swap.get(j, j) for j in g) for g in tree.bone_groups)
    return dataclasses.replace(tree, parts=parts, bone_groups=groups)


def test_layout_digest_is_stable_and_follows_every_change():
    assert dataclasses.replace(SMPLX_TREE).layout_digest == SMPLX_TREE.layout_digest
    assert SMPL_TREE.layout_digest != SMPLX_TREE.layout_digest
    swapped = _swap_ring_and_pinky(SMPLX_TREE)
    assert swapped.layout_digest != SMPLX_TREE.layout_digest
    assert dataclasses.replace(SMPLX_TREE, parts=swapped.parts).layout_digest != SMPLX_TREE.layout_digest
    assert dataclasses.replace(SMPLX_TREE, bone_groups=swapped.bone_groups).layout_digest != SMPLX_TREE.layout_digest
    # the same in another process with another hash seed (the cache outlives the process)
    code = "from lib.kinematics.tree import SMPLX_TREE; print(SMPLX_TREE.layout_digest)"
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert out.stdout.strip() == SMPLX_TREE.layout_digest


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "CACHE_DIR", tmp_path)
    return tmp_path


def test_skeleton_2_beta_cache_is_keyed_on_the_tree_layout(cache_dir):
    cfg = load_config(body_defaults("smplx"))
    swapped = _swap_ring_and_pinky(SMPLX_TREE)
    assert build.skeleton_2_beta_cache_path(cfg, swapped, 10) != build.skeleton_2_beta_cache_path(cfg, SMPLX_TREE, 10)

    body = BodyModel.from_file(REPO_ROOT / cfg.DATA.BODY_MODEL, model_type="smplx", dtype=torch.float64)
    matrix = build.skeleton_2_beta_matrix(cfg, body, SMPLX_TREE)
    assert len(list(cache_dir.iterdir())) == 1
    torch.testing.assert_close(build.skeleton_2_beta_matrix(cfg, body, SMPLX_TREE), matrix)  # read back
    # a changed tree fits its own matrix (rows in its own order) instead of reading the stale one
    swapped_matrix = build.skeleton_2_beta_matrix(cfg, body, swapped)
    assert len(list(cache_dir.iterdir())) == 2
    rows = [SMPLX_BONE_GROUPS.index(tuple(g)) if tuple(g) in SMPLX_BONE_GROUPS else -1 for g in swapped.bone_groups]
    assert rows != list(range(33)) and -1 not in rows
    torch.testing.assert_close(swapped_matrix, matrix[rows])
