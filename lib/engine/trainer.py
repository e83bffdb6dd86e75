"""Training the Part-aware Network (METHOD.md section 8), in one process or under ``torchrun`` with DDP.

Outputs go to ``<OUTPUT_DIR>/<timestamp>_<EXP_NAME>/`` (or the directory of ``TRAIN.RESUME``): the merged config
(``config.yaml``; a resumed run keeps it and writes ``config_resume_epoch<N>.yaml`` beside it), ``train.log``,
tensorboard events, ``checkpoint.pth.tar`` every epoch (written atomically), ``model_best.pth.tar`` and ``best.txt``
when the validation MixIK MPVE improves. Rank 0 alone logs and writes.

A checkpoint holds everything a run needs to continue bit-exactly: weights, optimizer and scheduler states, the
merged config (YAML text) and every rank's random states (python, numpy, torch). The shuffle of epoch ``e`` is a
permutation drawn from ``SEED_VALUE + e`` alone (``DistributedSampler``, also for a single process), so a resumed
run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm
from yacs.config import CfgNode

from lib.core.config import changed_keys, resolve_path
from lib.engine.build import (
    build_body_model,
    build_dataset,
    build_network,
    configure_cudnn,
    load_config_checkpoint,
    mirror_averaged,
    random_states,
    robust_options,
    seed_everything,
    select_device,
    set_random_states,
    tree_for,
    validation_split,
)
from lib.engine.losses import training_step
from lib.engine.threads import apply_thread_policy
from lib.io.safe_io import atomic_write
from lib.models.checkpoint import load_pan_weights, save_checkpoint

log = logging.getLogger("smpliks.train")


class Distributed:
    """Rank, world size and the process group, set up from torchrun's environment (or a single process)."""

    def __init__(self, device_name: str):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world_size > 1
        device = select_device(device_name)
        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        self.device = device
        if self.enabled:
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: list[float]) -> list[float]:
        if not self.enabled:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def all_gather(self, obj) -> list:
        """``obj`` of every rank, in rank order (a picklable object)."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        # A barrier before tearing down keeps ranks from aborting at exit on small machines.
        if self.enabled:
            dist.barrier()
            dist.destroy_process_group()


def run_directory(cfg: CfgNode) -> Path:
    if cfg.TRAIN.RESUME:
        return resolve_path(cfg.TRAIN.RESUME).parent
    if cfg.LOGDIR:
        return resolve_path(cfg.LOGDIR)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return resolve_path(cfg.OUTPUT_DIR) / f"{stamp}_{cfg.EXP_NAME}"


def _setup_logging(logdir: Path, is_main: bool) -> None:
    log.setLevel(logging.INFO if is_main else logging.WARNING)
    log.propagate = False
    log.handlers.clear()
    if is_main:
        fmt = logging.Formatter("%(asctime)s %(message)s")
        for handler in (logging.FileHandler(logdir / "train.log"), logging.StreamHandler()):
            handler.setFormatter(fmt)
            log.addHandler(handler)


class Trainer:
    def __init__(self, cfg: CfgNode, resume_state: dict | None = None):
        """``resume_state``: the ``TRAIN.RESUME`` checkpoint when the caller already loaded it (read here if not)."""
        self.cfg = cfg
        if cfg.TRAIN.RESUME and resume_state is None:
            resume_state = load_config_checkpoint(cfg, "TRAIN.RESUME")
        apply_thread_policy(cfg.THREADS)  # one intra-op thread (the solver's small ops); see lib/engine/threads.py
        self.dist = Distributed(cfg.DEVICE)
        self.device = self.dist.device
        seed_everything(cfg.SEED_VALUE + self.dist.rank)
        configure_cudnn(cfg)
        self.tree = tree_for(cfg)

        self.logdir = run_directory(cfg)
        if self.dist.is_main:
            self.logdir.mkdir(parents=True, exist_ok=True)
            resumed_at = None if resume_state is None else int(resume_state["epoch"]) + 1
            name = "config.yaml" if resumed_at is None else f"config_resume_epoch{resumed_at}.yaml"
            (self.logdir / name).write_text(cfg.dump())
        self.dist.barrier()
        _setup_logging(self.logdir, self.dist.is_main)
        self.writer = SummaryWriter(str(self.logdir)) if self.dist.is_main else None

        self.body_model = build_body_model(cfg, self.device)
        self.network = build_network(
            cfg, self.device, "TRAIN.PRETRAINED_REGRESSOR" if cfg.TRAIN.PRETRAINED_REGRESSOR else None
        )
        self.model = self.network
        # validation scores what evaluation will run: with MODEL.MIRROR_AVERAGE, the mirror-averaged twists
        self.validation_network = mirror_averaged(cfg, self.network, self.body_model)
        if self.dist.enabled:
            self.model = torch.nn.parallel.DistributedDataParallel(
                self.network, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.optimizer = self._optimizer()
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=0.1, patience=cfg.TRAIN.LR_PATIENCE
        )
        self.loss_weights = {"phi": cfg.LOSS.PHI_W, "theta": cfg.LOSS.THETA_W, "vert": cfg.LOSS.VERT_W}
        self.start_epoch = cfg.TRAIN.START_EPOCH
        self.best = math.inf
        if resume_state is not None:
            self._resume(resume_state)

        # rank 0 first: it generates a missing synthetic db while the other ranks wait, then they read it
        for turn in (True, False):
            if self.dist.is_main == turn:
                self.train_set = build_dataset(cfg, list(cfg.TRAIN.DATASETS_3D), "train", progress=turn)
                self.val_set = build_dataset(cfg, cfg.TRAIN.DATASET_EVAL, validation_split(cfg), progress=turn)
            self.dist.barrier()
        # the shuffle of epoch e depends on (seed, e) only, in one process as under torchrun
        self.sampler = DistributedSampler(
            self.train_set, num_replicas=self.dist.world_size, rank=self.dist.rank, shuffle=True, seed=cfg.SEED_VALUE
        )
        self.loader = DataLoader(
            self.train_set,
            batch_size=cfg.TRAIN.BATCH_SIZE,
            sampler=self.sampler,
            num_workers=cfg.NUM_WORKERS,
            drop_last=True,
        )
        if len(self.loader) == 0:
            raise ValueError(
                f"the training db has {len(self.train_set)} samples, fewer than one batch of "
                f"TRAIN.BATCH_SIZE={cfg.TRAIN.BATCH_SIZE} per process; lower the batch size"
            )
        if resume_state is not None:
            self._restore_random_states(resume_state)

    def _optimizer(self) -> torch.optim.Optimizer:
        cfg = self.cfg.TRAIN
        params = self.network.parameters()
        if cfg.GEN_OPTIM == "Adam":
            return torch.optim.Adam(params, lr=cfg.GEN_LR, weight_decay=cfg.GEN_WD)
        if cfg.GEN_OPTIM == "SGD":
            return torch.optim.SGD(params, lr=cfg.GEN_LR, weight_decay=cfg.GEN_WD, momentum=cfg.GEN_MOMENTUM)
        raise ValueError(f"TRAIN.GEN_OPTIM={cfg.GEN_OPTIM!r}: use 'Adam' or 'SGD'")

    def _resume(self, state: dict) -> None:
        load_pan_weights(self.network, state)
        self.optimizer.load_state_dict(state["gen_optimizer"])
        if "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        self.start_epoch = int(state["epoch"]) + 1
        self.best = float(state.get("best_performance", state.get("performace", math.inf)))
        log.info(
            "resumed from %s at epoch %d (best MixIK MPVE %.2f mm)",
            resolve_path(self.cfg.TRAIN.RESUME),
            self.start_epoch,
            self.best,
        )
        if "config" in state:
            saved = CfgNode.load_cfg(state["config"])
            for line in changed_keys(saved, self.cfg):
                if not line.startswith("TRAIN.RESUME:"):
                    log.info("resume override %s", line)

    def _restore_random_states(self, state: dict) -> None:
        """Every rank's python / numpy / torch random states and the shuffle seed, as saved after the last epoch."""
        states = state.get("random_states") or []
        if len(states) == self.dist.world_size:
            set_random_states(states[self.dist.rank])
        else:
            log.warning(
                "the checkpoint holds random states for %d processes, this run has %d: continuing with "
                "fresh ones (not bit-identical to an uninterrupted run)",
                len(states),
                self.dist.world_size,
            )
        self.sampler.seed = int(state.get("shuffle_seed", self.sampler.seed))

    # ------------------------------------------------------------------------------------------------ epochs
    def fit(self) -> float:
        try:
            for epoch in range(self.start_epoch, self.cfg.TRAIN.END_EPOCH):
                train_loss = self.train_epoch(epoch)
                score, analyik = self.validate(epoch)
                self.scheduler.step(score)
                states = self.dist.all_gather(random_states())
                if self.dist.is_main:
                    self._save(epoch, score, states)
                    log.info(
                        "epoch %d: train loss %.4f, val MixIK MPVE %.2f mm (AnalyIK %.2f), best %.2f, lr %.1e",
                        epoch,
                        train_loss,
                        score,
                        analyik,
                        self.best,
                        self.optimizer.param_groups[0]["lr"],
                    )
            return self.best
        finally:
            if self.writer is not None:
                self.writer.close()
            self.dist.close()

    def train_epoch(self, epoch: int) -> float:
        self.model.train()
        self.sampler.set_epoch(epoch)
        max_steps = self.cfg.TRAIN.MAX_STEPS_PER_EPOCH or len(self.loader)
        steps = min(max_steps, len(self.loader))
        bar = tqdm(self.loader, total=steps, desc=f"train {epoch}", disable=not self.dist.is_main, dynamic_ncols=True)
        total, count = 0.0, 0
        for step, batch in enumerate(bar):
            if step >= steps:
                break
            batch = self._to_device(batch)
            out = training_step(
                self.tree,
                self.body_model,
                self.model,
                batch,
                self.loss_weights,
                joint_noise_mm=self.cfg.TRAIN.JOINT_NOISE_MM,
                noise_fraction=self.cfg.TRAIN.JOINT_NOISE_FRACTION,
                robust=robust_options(self.cfg),
            )
            if not torch.isfinite(out.loss):
                raise FloatingPointError(
                    f"loss became {out.loss.item()} at epoch {epoch}, step {step} "
                    f"({', '.join(f'{k}={v.item():.4g}' for k, v in out.terms.items())}); lower TRAIN.GEN_LR or "
                    "check the db for NaN poses"
                )
            self.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            self.optimizer.step()
            total, count = total + out.loss.item(), count + 1
            bar.set_postfix(
                loss=f"{total / count:.4f}",
                **({} if out.mixik_mpve is None else {"mpve": f"{out.mixik_mpve.mean().item():.1f}"}),
            )
            if self.writer is not None:
                global_step = epoch * steps + step
                self.writer.add_scalar("train/loss", out.loss.item(), global_step)
                for name, value in out.terms.items():
                    self.writer.add_scalar(f"train/loss_{name}", value.item(), global_step)
                if out.mixik_mpve is not None:
                    self.writer.add_scalar("train/mixik_mpve_mm", out.mixik_mpve.mean().item(), global_step)
        return total / max(count, 1)

    @torch.no_grad()
    def validate(self, epoch: int) -> tuple[float, float]:
        """Per-sample MixIK and AnalyIK MPVE (mm) on this rank's shard, summed over ranks."""
        self.model.eval()
        size = min(self.cfg.TRAIN.VAL_MAX_SAMPLES or len(self.val_set), len(self.val_set))
        indices = list(range(self.dist.rank, size, self.dist.world_size))
        shard = torch.utils.data.Subset(self.val_set, indices)
        loader = DataLoader(
            shard, batch_size=self.cfg.TRAIN.BATCH_SIZE, shuffle=False, num_workers=self.cfg.NUM_WORKERS
        )
        sums = [0.0, 0.0, 0.0]
        for batch in tqdm(loader, desc=f"val {epoch}", disable=not self.dist.is_main, dynamic_ncols=True):
            out = training_step(
                self.tree,
                self.body_model,
                self.validation_network,
                self._to_device(batch),
                self.loss_weights,
                with_analyik=True,
            )
            sums[0] += out.mixik_mpve.sum().item()
            sums[1] += out.analyik_mpve.sum().item()
            sums[2] += out.mixik_mpve.shape[0]
        mixik, analyik, n = self.dist.all_sum(sums)
        mixik, analyik = mixik / max(n, 1), analyik / max(n, 1)
        if self.writer is not None:
            self.writer.add_scalar("val/mixik_mpve_mm", mixik, epoch)
            self.writer.add_scalar("val/analyik_mpve_mm", analyik, epoch)
            self.writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], epoch)
        return mixik, analyik

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items() if torch.is_tensor(v)}

    def _save(self, epoch: int, score: float, random_states: list[dict]) -> None:
        improved = score < self.best
        self.best = min(self.best, score)
        state = {
            "epoch": epoch,
            "gen_state_dict": self.network.state_dict(),
            "gen_optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "performace": float(score),
            "best_performance": float(self.best),
            "config": self.cfg.dump(),
            "random_states": random_states,
            "shuffle_seed": int(self.sampler.seed),
        }
        checkpoint = save_checkpoint(self.logdir / "checkpoint.pth.tar", state)
        if improved:
            with open(checkpoint, "rb") as source, atomic_write(self.logdir / "model_best.pth.tar") as target:
                shutil.copyfileobj(source, target)
            (self.logdir / "best.txt").write_text(f"epoch {epoch}\nmixik_mpve_mm {score:.4f}\n")
