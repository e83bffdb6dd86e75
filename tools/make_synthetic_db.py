"""Write a synthetic database in the official SMPL-IKS layout (docs/synthetic_data.md).

    python tools/make_synthetic_db.py --body smpl --split test --n 10000 --out data/open/smpl/db
    python tools/make_synthetic_db.py --body smplx --split train --n 100000 --seed 1 --out data/open/smplx/db

Writes ``<out>/synthetic_<split>_db.pt`` (joblib: SMPL keys beta, theta, orig_theta, twist_angle, vid_name;
SMPL-X keys betas, global_orient, body_pose, lhand_pose, rhand_pose, twist_angle, vid_name) and a sidecar
``synthetic_<split>_db.json`` with the parameters. The eval / train scripts call the same generator
(``lib.data.synthetic.ensure_synthetic_db``) when the SYNTHETIC db is missing, so running this is optional.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from lib.data.db import SPLITS  # noqa: E402
from lib.data.synthetic import DEFAULT_SEEDS, ensure_synthetic_db, synthetic_db_path  # noqa: E402

DEFAULT_MODELS = {"smpl": "data/open/smpl/OPEN_SMPL_NEUTRAL.npz", "smplx": "data/open/smplx/OPEN_SMPLX_NEUTRAL.npz"}
DEFAULT_KIDS = {
    "smpl": "data/open/smpl/open_smpl_kid_template.npy",
    "smplx": "data/open/smplx/open_smplx_kid_template.npy",
}


def _resolve(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO / p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--body", choices=("smpl", "smplx"), required=True)
    parser.add_argument("--split", choices=SPLITS, required=True)
    parser.add_argument("--n", type=int, required=True, help="number of frames")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help=f"random seed (default: {DEFAULT_SEEDS['train']} for train, {DEFAULT_SEEDS['test']} "
        "for test; the split is mixed into the stream as well)",
    )
    parser.add_argument(
        "--kids",
        type=float,
        default=0.0,
        help="fraction of sequences that are children (adds the 11th beta; needs the kid template)",
    )
    parser.add_argument("--out", required=True, help="output directory (DATA.DB_DIR)")
    parser.add_argument("--body-model", default=None, help="body model file (default: the open model of --body)")
    parser.add_argument(
        "--kid-template",
        default=None,
        help="kid template .npy (default with --kids > 0: the open kid template of --body)",
    )
    parser.add_argument("--batch-size", type=int, default=8192, help="frames per twist-angle batch")
    parser.add_argument("--force", action="store_true", help="regenerate even if the db exists")
    args = parser.parse_args(argv)

    if args.n < 1:
        parser.error("--n must be >= 1")
    if not 0.0 <= args.kids <= 1.0:
        parser.error("--kids is a fraction in [0, 1]")
    model = _resolve(args.body_model or DEFAULT_MODELS[args.body])
    kid = args.kid_template or (DEFAULT_KIDS[args.body] if args.kids > 0 else None)
    out = _resolve(args.out)
    path = synthetic_db_path(out, args.split)
    if args.force and path.exists():
        path.unlink()
    start = time.time()
    path = ensure_synthetic_db(
        args.body,
        args.split,
        out,
        model,
        args.n,
        args.seed,
        kids=args.kids,
        kid_template_path=_resolve(kid) if kid else None,
        batch_size=args.batch_size,
    )
    print(f"{path}: {args.n} {args.body} frames ({time.time() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
