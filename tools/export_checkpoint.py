"""Strip a training checkpoint to what evaluation needs (weights, epoch, score, config) for shipping.

python tools/export_checkpoint.py <run>/model_best.pth.tar data/open/smpl/pretrained_model/model_best.pth.tar
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402

KEEP = ("epoch", "gen_state_dict", "performace", "best_performance", "config")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("target")
    args = parser.parse_args()
    state = load_checkpoint(args.source, hint="(the source argument)")
    path = save_checkpoint(args.target, {k: state[k] for k in KEEP if k in state})
    print(
        f"{path}: {path.stat().st_size / 1e6:.1f} MB (epoch {state.get('epoch')}, MixIK MPVE {state.get('performace')})"
    )


if __name__ == "__main__":
    main()
