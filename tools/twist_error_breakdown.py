"""Which twists cost MixIK the most mesh error: MPVE with the network's twist of one joint (or one part, or all)
replaced by the ground truth, on the first samples of a database.

python tools/twist_error_breakdown.py --body smpl --db data/open/smpl/db/bandai_test_db.pt --samples 1024
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from lib.core.config import config_factory  # noqa: E402
from lib.data.db import PoseDataset  # noqa: E402
from lib.engine.build import build_body_model, build_inference_network, build_solver, resolve_db  # noqa: E402
from lib.engine.evaluator import MESH_CHUNK, twist_error_breakdown  # noqa: E402
from lib.engine.metrics import MeanMeter  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--body", choices=("smpl", "smplx"), default="smpl")
    parser.add_argument("--cfg", help="config (default configs/<body>/open_eval.yaml: open model, shipped checkpoint)")
    parser.add_argument("--db", help="database file (default: the config's SYNTHETIC test db, generated if missing)")
    parser.add_argument("--samples", type=int, default=1024, help="first N samples of the db")
    parser.add_argument("opts", nargs="*", default=[], help="KEY VALUE config overrides, e.g. MODEL.PRETRAINED <path>")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    get_cfg = config_factory(args.body)
    cfg = get_cfg(args.cfg or f"configs/{args.body}/open_eval.yaml", args.opts)
    cpu = torch.device("cpu")
    body_model = build_body_model(cfg, cpu)
    solver = build_solver(cfg, body_model)
    network = build_inference_network(cfg, body_model)
    db = Path(args.db) if args.db else resolve_db(cfg, "SYNTHETIC", "test")
    data = PoseDataset(db, body=args.body, num_betas=body_model.num_betas)
    count = min(args.samples, len(data))
    meter = MeanMeter()
    for start in tqdm(range(0, count, MESH_CHUNK), desc="breakdown", unit="chunk"):
        batch = data.batch(list(range(start, min(start + MESH_CHUNK, count))))
        meter.update(twist_error_breakdown(body_model, solver, batch, network))
    means = meter.means()
    print(f"{args.body}, {db.name}, first {count} samples: MixIK MPVE (mm) with ground-truth twists for ...")
    print("| ground truth for | MPVE | change |")
    print("|---|---:|---:|")
    for name, value in means.items():
        change = "" if name == "network" else f"{value - means['network']:+.2f}"
        print(f"| {'none (MixIK)' if name == 'network' else name} | {value:.2f} | {change} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
