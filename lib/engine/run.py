"""Evaluation run from a config: build everything, evaluate the DATASET_EVAL db, print the table, write JSON and
the merged config beside it (``eval_<DATASET>.json``, ``eval_<DATASET>_config.yaml``)."""

from __future__ import annotations

import logging

import torch
from torch.utils.data import DataLoader
from yacs.config import CfgNode

from lib.core.config import resolve_path
from lib.engine.build import (
    build_body_model,
    build_dataset,
    build_inference_network,
    build_solver,
    configure_cudnn,
    seed_everything,
    select_device,
)
from lib.engine.evaluator import evaluate, format_table, results_record, write_record
from lib.engine.threads import apply_thread_policy

log = logging.getLogger(__name__)


def evaluate_from_config(cfg: CfgNode) -> dict:
    workers = apply_thread_policy(cfg.THREADS)
    device = select_device(cfg.DEVICE)
    seed_everything(cfg.SEED_VALUE)
    configure_cudnn(cfg)
    body_model = build_body_model(cfg, device)
    solver = build_solver(cfg, body_model)
    network = build_inference_network(cfg, body_model)

    dataset = build_dataset(cfg, cfg.TRAIN.DATASET_EVAL, "test")
    if cfg.EVAL.MAX_SAMPLES:
        dataset = torch.utils.data.Subset(dataset, range(min(cfg.EVAL.MAX_SAMPLES, len(dataset))))
    loader = DataLoader(dataset, batch_size=cfg.TRAIN.BATCH_SIZE, shuffle=False, num_workers=cfg.NUM_WORKERS)
    means = evaluate(
        body_model,
        solver,
        loader,
        device,
        network,
        oracle_on_refined=cfg.EVAL.ORACLE_ON_REFINED,
        desc=f"eval {cfg.TRAIN.DATASET_EVAL}",
        workers=workers,
    )
    record = results_record(cfg.TRAIN.DATASET_EVAL, cfg.BODY, means)
    print(format_table(record))
    path = write_record(record, resolve_path(cfg.OUTPUT_DIR))
    config_path = path.with_name(f"{path.stem}_config.yaml")
    config_path.write_text(cfg.dump())
    print(f"wrote {path} and {config_path.name} (the merged config)")
    return record
