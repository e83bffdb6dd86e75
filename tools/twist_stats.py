"""Per-joint twist statistics (radians, mean / std) of databases and of the synthetic sampler (docs/synthetic_data.md).

python tools/twist_stats.py --body smpl --db data/open/smpl/db/bandai_train_db.pt --synthetic 20000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from lib.data.db import load_db  # noqa: E402
from lib.data.synthetic import make_synthetic_db  # noqa: E402
from lib.kinematics.tree import SMPL_JOINT_NAMES, TREES  # noqa: E402

MODELS = {"smpl": "data/open/smpl/OPEN_SMPL_NEUTRAL.npz", "smplx": "data/open/smplx/OPEN_SMPLX_NEUTRAL.npz"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--body", choices=("smpl", "smplx"), default="smpl")
    parser.add_argument("--db", action="append", default=[], help="a database file (repeatable)")
    parser.add_argument("--synthetic", type=int, default=0, help="also sample this many synthetic frames")
    args = parser.parse_args(argv)
    columns = {}
    for path in args.db:
        columns[Path(path).stem] = load_db(REPO / path if not Path(path).is_absolute() else path, args.body)[
            "twist_angle"
        ]
    if args.synthetic:
        sampled = make_synthetic_db(args.body, args.synthetic, 1, str(REPO / MODELS[args.body]))
        columns["synthetic"] = sampled["twist_angle"]
    tree = TREES[args.body]
    joints = sorted(tree.twist_child)
    names = [SMPL_JOINT_NAMES[j] if j < len(SMPL_JOINT_NAMES) else f"slot{j}" for j in joints]
    print("| joint | " + " | ".join(f"{c} mean / std" for c in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for j, name in zip(joints, names, strict=True):
        cells = [f"{np.mean(t[:, j - 1]):+.2f} / {np.std(t[:, j - 1]):.2f}" for t in columns.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
