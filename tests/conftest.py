"""Shared fixtures: a plausible rest skeleton for each tree and random poses on it."""

import sys
from pathlib import Path

import pytest
import roma
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lib.kinematics.skeleton import forward_kinematics  # noqa: E402
from lib.kinematics.tree import SMPL_TREE, SMPLX_TREE  # noqa: E402

OPEN_SMPL = ROOT / "data/open/smpl/OPEN_SMPL_NEUTRAL.npz"


def write_amass_dbs(db_dir, train, test):
    """Tiny SMPL train and test dbs in the official layout, named as AMASS, from the synthetic sampler on the open
    model: ``train`` / ``test`` are (samples, seed). Returns ``db_dir``."""
    from lib.data.db import write_db
    from lib.data.synthetic import make_synthetic_db

    for split, (n, seed) in (("train", train), ("test", test)):
        write_db(
            db_dir / f"amass_{split}_db.pt", make_synthetic_db("smpl", n, seed, str(OPEN_SMPL), split=split), "smpl"
        )
    return db_dir


def amass_options(db_dir):
    """Config overrides that train and validate on the AMASS-named dbs of :func:`write_amass_dbs`."""
    return ["DATA.DB_DIR", str(db_dir), "TRAIN.DATASETS_3D", "['AMASS']", "TRAIN.DATASET_EVAL", "AMASS"]


def t_pose_skeleton(tree, dtype=torch.float64):
    """A T-pose-like rest skeleton built only from the tree: limbs straight along +-x / -y, trunk along +y.

    Straight limbs make parallel rest bones, the case where minimal rotations degenerate most easily.
    """
    rest = torch.zeros(tree.num_joints, 3, dtype=dtype)
    gen = torch.Generator().manual_seed(7)
    for level in tree.levels:
        for j in level:
            p = tree.parents[j]
            side = 1.0 if (rest[p, 0] > 0 or (rest[p, 0] == 0 and j % 2 == 1)) else -1.0
            if rest[p, 0].abs() > 0.15:  # arm and hand: straight out sideways
                step = torch.tensor([0.08 * side, 0.0, 0.0], dtype=dtype)
            elif rest[p, 1] < -0.05 or p in (1, 2):  # leg: straight down
                step = torch.tensor([0.0, -0.2, 0.0], dtype=dtype)
            else:  # trunk and its branches
                step = torch.tensor([0.07 * side * (j % 3 != 0), 0.1, 0.0], dtype=dtype)
            if j in (1, 2):
                step = torch.tensor([0.09 * side, -0.08, 0.0], dtype=dtype)
            step = step + 0.01 * torch.randn(3, generator=gen, dtype=dtype)
            rest[j] = rest[p] + step
    return rest


@pytest.fixture(params=[SMPL_TREE, SMPLX_TREE], ids=["smpl", "smplx"])
def tree(request):
    return request.param


def random_pose(tree, batch, scale=0.8, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    rotvec = torch.randn(batch, tree.num_pose_joints, 3, generator=gen, dtype=dtype) * scale
    return roma.rotvec_to_rotmat(rotvec)


def posed_skeleton(tree, rotmats, rest):
    return forward_kinematics(tree, rest.expand(rotmats.shape[0], -1, -1), rotmats)
