"""Command-line entry points shared by the four scripts: parse ``--cfg`` and ``KEY VALUE`` overrides, build, run."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from yacs.config import CfgNode


ConfigFactory = Callable[[str | None, list[str] | None], CfgNode]


def parse_config(get_cfg: ConfigFactory, argv: list[str], description: str) -> CfgNode:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cfg", default=None, help="YAML config (overrides the defaults)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides as KEY VALUE pairs")
    args = parser.parse_args(argv)
    return get_cfg(args.cfg, args.opts)


def _fail(err: Exception) -> None:
    """Print one clear line for expected user errors instead of a stack trace."""
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)


def main_eval(get_cfg: ConfigFactory, argv: list[str] | None = None) -> dict:
    from lib.engine.run import evaluate_from_config

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = parse_config(get_cfg, sys.argv[1:] if argv is None else argv, "Evaluate AnalyIK / MixIK / oracle")
        return evaluate_from_config(cfg)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)


def main_train(get_cfg: ConfigFactory, argv: list[str] | None = None) -> float:
    from lib.engine.trainer import Trainer

    try:
        cfg = parse_config(get_cfg, sys.argv[1:] if argv is None else argv, "Train the Part-aware Network")
        trainer = Trainer(cfg)
    except (FileNotFoundError, ValueError) as err:
        _fail(err)
    try:
        return trainer.fit()
    except FloatingPointError as err:
        _fail(err)
