"""Command-line entry points shared by the four scripts: parse ``--cfg`` and ``KEY VALUE`` overrides, build, run.

Expected user errors (config mistakes, missing files, bad values) end with one ``error: ...`` line on stderr and
exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from yacs.config import CfgNode

# get_cfg(cfg_file, opts, saved=(yaml_text, where_from)) of lib/core/<body>/config.py
ConfigFactory = Callable[..., CfgNode]
EXIT_USAGE = 2


def parse_args(argv: list[str], description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cfg", default=None, help="YAML config (overrides the defaults)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides as KEY VALUE pairs")
    return parser.parse_args(argv)


def parse_config(get_cfg: ConfigFactory, argv: list[str], description: str) -> CfgNode:
    args = parse_args(argv, description)
    return get_cfg(args.cfg, args.opts)


def train_config(get_cfg: ConfigFactory, argv: list[str], description: str) -> tuple[CfgNode, dict | None]:
    """The training config and, with ``TRAIN.RESUME``, the checkpoint: its saved config under ``--cfg`` and the
    overrides, so ``TRAIN.RESUME <ckpt>`` alone continues the run as it was configured."""
    from lib.engine.build import load_config_checkpoint

    args = parse_args(argv, description)
    cfg = get_cfg(args.cfg, args.opts)
    if not cfg.TRAIN.RESUME:
        return cfg, None
    checkpoint = load_config_checkpoint(cfg, "TRAIN.RESUME")
    if "config" not in checkpoint:
        return cfg, checkpoint
    saved = (checkpoint["config"], f"{cfg.TRAIN.RESUME} (saved config)")
    return get_cfg(args.cfg, args.opts, saved=saved), checkpoint


def _fail(err: Exception) -> None:
    """Print one clear line for expected user errors instead of a stack trace."""
    print("error: " + " ".join(str(err).split()), file=sys.stderr)
    sys.exit(EXIT_USAGE)


def main_eval(get_cfg: ConfigFactory, argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = parse_config(get_cfg, sys.argv[1:] if argv is None else argv, "Evaluate AnalyIK / MixIK / oracle")
        from lib.engine.run import evaluate_from_config  # torch and the rest only once the config is good

        return evaluate_from_config(cfg)
    except (FileNotFoundError, ValueError) as err:  # ConfigError is a ValueError
        _fail(err)


def main_train(get_cfg: ConfigFactory, argv: list[str] | None = None) -> float:
    try:
        cfg, checkpoint = train_config(get_cfg, sys.argv[1:] if argv is None else argv, "Train the Part-aware Network")
        from lib.engine.trainer import Trainer  # torch and the rest only once the config is good

        trainer = Trainer(cfg, checkpoint)
    except (FileNotFoundError, ValueError) as err:  # ConfigError is a ValueError
        _fail(err)
    try:
        return trainer.fit()
    except FloatingPointError as err:
        _fail(err)
