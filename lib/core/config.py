"""Configuration defaults shared by the SMPL and SMPL-X solvers (yacs).

Every key has a one-line comment. Experiments are small YAML files that override these defaults; the command line
overrides any key with trailing ``KEY VALUE`` pairs. Relative paths resolve from the repository root.
"""
from __future__ import annotations

import os
from pathlib import Path

from yacs.config import CfgNode as CN

REPO_ROOT = Path(__file__).resolve().parents[2]

_C = CN()
_C.OUTPUT_DIR = "output"            # where runs (logs, checkpoints, eval tables) are written
_C.EXP_NAME = "default"             # run name, appended to the timestamped run directory
_C.LOGDIR = ""                      # explicit run directory; empty = <OUTPUT_DIR>/<timestamp>_<EXP_NAME>
_C.DEVICE = "cpu"                   # 'cpu' or 'cuda' (falls back to cpu with a warning when no GPU is present)
_C.NUM_WORKERS = 0                  # DataLoader worker processes
_C.SEED_VALUE = 1                   # seed for python, numpy and torch

_C.CUDNN = CN()
_C.CUDNN.BENCHMARK = True           # torch.backends.cudnn.benchmark
_C.CUDNN.DETERMINISTIC = False      # torch.backends.cudnn.deterministic
_C.CUDNN.ENABLED = True             # torch.backends.cudnn.enabled

_C.DATA = CN()
_C.DATA.BODY_MODEL = ""             # body model file (.pkl / .npz); set by the body-model config
_C.DATA.KID_TEMPLATE = ""           # optional kid template (.npy); non-empty adds the 11th beta
_C.DATA.SKELETON_2_BETA = ""        # skeleton_2_beta .npz (['lr'].item()['A1']); empty = fit from the body model
_C.DATA.DB_DIR = ""                 # directory of <name>_<set>_db.pt databases
_C.DATA.SYNTHETIC_TRAIN_SIZE = 100000  # samples in a generated synthetic train db
_C.DATA.SYNTHETIC_TEST_SIZE = 10000    # samples in a generated synthetic test db

_C.TRAIN = CN()
_C.TRAIN.DATASETS_3D = ["SYNTHETIC"]  # training databases (SYNTHETIC, AMASS, ThreeDPW, AGORA, MOTIONX)
_C.TRAIN.DATASET_EVAL = "SYNTHETIC"   # database for validation / evaluation
_C.TRAIN.BATCH_SIZE = 1024          # samples per batch (per process under torchrun)
_C.TRAIN.START_EPOCH = 0            # first epoch index
_C.TRAIN.END_EPOCH = 30             # train until this epoch (exclusive)
_C.TRAIN.LR_PATIENCE = 3            # ReduceLROnPlateau patience (epochs) on the validation MixIK MPVE
_C.TRAIN.PRETRAINED_REGRESSOR = ""  # optional PAN weights to start from
_C.TRAIN.RESUME = ""                # checkpoint.pth.tar to continue from (epoch, optimizer, scheduler)
_C.TRAIN.GEN_OPTIM = "Adam"         # optimizer: Adam or SGD
_C.TRAIN.GEN_LR = 1e-4              # learning rate
_C.TRAIN.GEN_WD = 0.1               # weight decay
_C.TRAIN.GEN_MOMENTUM = 0.9         # SGD momentum (unused by Adam)
_C.TRAIN.MAX_STEPS_PER_EPOCH = 0    # cap on optimizer steps per epoch; 0 = the whole db
_C.TRAIN.VAL_MAX_SAMPLES = 0        # validate on the first N samples of the DATASET_EVAL db; 0 = all

_C.DATASET = CN()
_C.DATASET.SEQLEN = 1               # frames per sample window (paper: 1)
_C.DATASET.OVERLAP = 0.0            # window overlap fraction; stride = SEQLEN * (1 - OVERLAP)

_C.LOSS = CN()
_C.LOSS.PHI_W = 1.0                 # weight of the twist (cos, sin) MSE
_C.LOSS.THETA_W = 0.0               # weight of the part rotation MSE against the oracle
_C.LOSS.VERT_W = 1.0                # weight of the mean per-vertex distance

_C.MODEL = CN()
_C.MODEL.TEMPORAL_TYPE = "mlp"      # network type (only 'mlp', the Part-aware Network)
_C.MODEL.PRETRAINED = ""            # PAN checkpoint (model_best.pth.tar with 'gen_state_dict'); empty = no MixIK row
_C.MODEL.PR_VARIANT = "v1"          # pose refinement before IK: 'v1' (aim), 'v2' (two-bone moves), 'none'
_C.MODEL.MLP = CN()
_C.MODEL.MLP.EMBED_DIM = 256        # PAN hidden width H (the concat width 2H-256 must equal H: only 256 is valid)

_C.EVAL = CN()
_C.EVAL.MAX_SAMPLES = 0             # evaluate at most this many samples; 0 = all
_C.EVAL.ORACLE_ON_REFINED = False   # oracle MixIK aims at the PR-C joints (SMPL-X reference) or the input (SMPL)


def resolve_path(path: str) -> Path:
    """Absolute path for a config path: relative paths are taken from the repository root."""
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else REPO_ROOT / p


def defaults() -> CN:
    """A fresh copy of the shared defaults."""
    return _C.clone()


def body_defaults(body: str) -> CN:
    """Defaults for one body model ('smpl' or 'smplx'): the open model, synthetic dbs and shipped checkpoint."""
    cfg = defaults()
    cfg.BODY = body                                     # which body model and kinematic tree: 'smpl' or 'smplx'
    cfg.DATA.BODY_MODEL = f"data/open/{body}/OPEN_{body.upper()}_NEUTRAL.npz"
    cfg.DATA.DB_DIR = f"data/open/{body}/db"
    cfg.MODEL.PRETRAINED = f"data/open/{body}/pretrained_model/model_best.pth.tar"
    return cfg


def load_config(base: CN, cfg_file: str | None = None, opts: list[str] | None = None) -> CN:
    """Merge a YAML file and ``KEY VALUE`` overrides into ``base`` and freeze the result."""
    cfg = base.clone()
    if cfg_file:
        path = resolve_path(cfg_file)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        cfg.merge_from_file(str(path))
    if opts:
        if len(opts) % 2:
            raise ValueError(f"overrides must be KEY VALUE pairs, got an odd count: {opts}")
        cfg.merge_from_list(list(opts))
    validate(cfg)
    cfg.freeze()
    return cfg


def validate(cfg: CN) -> None:
    """Reject settings the method cannot run with, naming the key and the fix."""
    if cfg.MODEL.MLP.EMBED_DIM != 256:
        raise ValueError(
            f"MODEL.MLP.EMBED_DIM={cfg.MODEL.MLP.EMBED_DIM}: the Part-aware Network concatenates widths "
            "(H-64)+(H-192) = 2H-256, which equals H only for H=256 (the paper's value); set it to 256")
    if cfg.MODEL.PR_VARIANT not in ("v1", "v2", "none"):
        raise ValueError(f"MODEL.PR_VARIANT={cfg.MODEL.PR_VARIANT!r}: use 'v1', 'v2' or 'none'")
    if cfg.MODEL.TEMPORAL_TYPE != "mlp":
        raise ValueError(f"MODEL.TEMPORAL_TYPE={cfg.MODEL.TEMPORAL_TYPE!r}: only 'mlp' is implemented")
    if cfg.DATASET.SEQLEN < 1 or not 0.0 <= cfg.DATASET.OVERLAP < 1.0:
        raise ValueError("DATASET.SEQLEN must be >= 1 and DATASET.OVERLAP in [0, 1)")
