"""Configuration defaults shared by the SMPL and SMPL-X solvers (yacs).

Every key has a one-line comment. Experiments are small YAML files that override these defaults; the command line
overrides any key with trailing ``KEY VALUE`` pairs. Relative paths resolve from the repository root.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import os
from pathlib import Path
from typing import Any

import yaml
from yacs.config import CfgNode as CN

REPO_ROOT = Path(__file__).resolve().parents[2]

_C = CN()
_C.OUTPUT_DIR = "output"  # where runs (logs, checkpoints, eval tables) are written
_C.EXP_NAME = "default"  # run name, appended to the timestamped run directory
_C.LOGDIR = ""  # explicit run directory; empty = <OUTPUT_DIR>/<timestamp>_<EXP_NAME>
_C.DEVICE = "cpu"  # 'cpu' or 'cuda' (falls back to cpu with a warning when no GPU is present)
_C.NUM_WORKERS = 0  # DataLoader worker processes
_C.SEED_VALUE = 1  # seed for python, numpy and torch
_C.THREADS = 1  # solver threads over batch chunks (0 = all cores); torch: 1 intra-op thread

_C.CUDNN = CN()
_C.CUDNN.BENCHMARK = True  # torch.backends.cudnn.benchmark
_C.CUDNN.DETERMINISTIC = False  # torch.backends.cudnn.deterministic
_C.CUDNN.ENABLED = True  # torch.backends.cudnn.enabled

_C.DATA = CN()
_C.DATA.BODY_MODEL = ""  # body model file (.pkl / .npz); set by the body-model config
_C.DATA.KID_TEMPLATE = ""  # optional kid template (.npy); non-empty adds the 11th beta
_C.DATA.SKELETON_2_BETA = ""  # skeleton_2_beta .npz (['lr'].item()['A1']); empty = fit from the body model
_C.DATA.DB_DIR = ""  # directory of <name>_<set>_db.pt databases
_C.DATA.SYNTHETIC_TRAIN_SIZE = 100000  # samples in a generated synthetic train db
_C.DATA.SYNTHETIC_TEST_SIZE = 10000  # samples in a generated synthetic test db
# seed of the generated synthetic test db: 2 is the project's test db; another seed is another draw of the sampler
# (give it its own DATA.DB_DIR: a db of another seed in the same directory is regenerated over it)
_C.DATA.SYNTHETIC_TEST_SEED = 2
# samples in the generated synthetic validation db (its own seed): training selects checkpoints and lowers its
# learning rate on it when TRAIN.DATASET_EVAL is SYNTHETIC, so the test db stays unseen until evaluation
_C.DATA.SYNTHETIC_VAL_SIZE = 2048

_C.TRAIN = CN()
_C.TRAIN.DATASETS_3D = ["SYNTHETIC"]  # training databases (SYNTHETIC, BANDAI, AMASS, ThreeDPW, AGORA, MOTIONX)
_C.TRAIN.DATASET_EVAL = "SYNTHETIC"  # database for validation / evaluation
_C.TRAIN.BATCH_SIZE = 1024  # samples per batch (per process under torchrun)
_C.TRAIN.START_EPOCH = 0  # first epoch index
_C.TRAIN.END_EPOCH = 30  # train until this epoch (exclusive)
_C.TRAIN.LR_PATIENCE = 3  # ReduceLROnPlateau patience (epochs) on the validation MixIK MPVE
_C.TRAIN.PRETRAINED_REGRESSOR = ""  # optional PAN weights to start from
_C.TRAIN.RESUME = ""  # checkpoint.pth.tar to continue from (epoch, optimizer, scheduler)
_C.TRAIN.GEN_OPTIM = "Adam"  # optimizer: Adam or SGD
_C.TRAIN.GEN_LR = 1e-4  # learning rate
_C.TRAIN.GEN_WD = 0.1  # weight decay
_C.TRAIN.GEN_MOMENTUM = 0.9  # SGD momentum (unused by Adam)
_C.TRAIN.MAX_STEPS_PER_EPOCH = 0  # cap on optimizer steps per epoch; 0 = the whole db
_C.TRAIN.VAL_MAX_SAMPLES = 0  # validate on the first N samples of the DATASET_EVAL db; 0 = all
_C.TRAIN.JOINT_NOISE_MM = 0.0  # sigma (mm, per axis) of Gaussian noise on the joints the PAN reads; 0 = none
_C.TRAIN.JOINT_NOISE_FRACTION = 0.5  # share of each batch that gets the noise (the rest keeps clean accuracy)

_C.DATASET = CN()
_C.DATASET.SEQLEN = 1  # frames per sample window (paper: 1)
_C.DATASET.OVERLAP = 0.0  # window overlap fraction; stride = SEQLEN * (1 - OVERLAP)

_C.LOSS = CN()
_C.LOSS.PHI_W = 1.0  # weight of the twist (cos, sin) MSE
_C.LOSS.THETA_W = 0.0  # weight of the part rotation MSE against the oracle
_C.LOSS.VERT_W = 1.0  # weight of the mean per-vertex distance

_C.MODEL = CN()
_C.MODEL.TEMPORAL_TYPE = "mlp"  # network type (only 'mlp', the Part-aware Network)
_C.MODEL.PRETRAINED = ""  # PAN checkpoint (model_best.pth.tar with 'gen_state_dict'); empty = no MixIK row
_C.MODEL.PR_VARIANT = "v1"  # pose refinement before IK: 'v1' (aim), 'v2' (two-bone moves), 'none'
_C.MODEL.ROBUST = CN()
_C.MODEL.ROBUST.ENABLED = False  # robust mode for noisy skeletons (docs/robust.md); False = the paper's pipeline
_C.MODEL.ROBUST.NOISE_MM = -1.0  # joint noise sigma per axis (mm) weighing the shape prior; < 0 = estimated
_C.MODEL.ROBUST.MAX_ABS_BETA = 5.0  # bound on every solved beta (robust Shape Inverse)
_C.MODEL.ROBUST.SUSPICIOUS = "warn"  # joints at the origin / bones < 0.5x or > 2x rest: 'warn', or 'fill' as missing
# Test-time mirror averaging: the PAN's twists are averaged with its reading of the mirrored skeleton (left <-> right;
# lib/solver/mirror.py). Needs a left-right symmetric body model (checked at start-up); doubles the network's batch.
# False = the paper's MixIK; the open configs and lib.api.load_solver turn it on (docs/motion_data.md measures it).
_C.MODEL.MIRROR_AVERAGE = False
_C.MODEL.MLP = CN()
_C.MODEL.MLP.EMBED_DIM = 256  # PAN hidden width H (the concat width 2H-256 must equal H: only 256 is valid)
# PAN inference matrix products: 'float32' (exact) or 'bfloat16' (about 4x faster network on CPUs with native
# bfloat16 products; twists within ~0.2 degrees on average, docs/speed.md). Training is unaffected.
_C.MODEL.MLP.MATMUL_PRECISION = "float32"
# Dropout after every dense layer of the PAN while training (0.2, the paper's). The open checkpoints' last runs use 0
# with millions of generated frames (configs/<body>/open_train.yaml). No weights depend on it.
_C.MODEL.MLP.DROPOUT = 0.2

_C.EVAL = CN()
_C.EVAL.MAX_SAMPLES = 0  # evaluate at most this many samples; 0 = all
_C.EVAL.ORACLE_ON_REFINED = False  # oracle MixIK aims at the PR-C joints (SMPL-X reference) or the input (SMPL)


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
    cfg.BODY = body  # which body model and kinematic tree: 'smpl' or 'smplx'
    cfg.DATA.BODY_MODEL = f"data/open/{body}/OPEN_{body.upper()}_NEUTRAL.npz"
    cfg.DATA.DB_DIR = f"data/open/{body}/db"
    cfg.MODEL.PRETRAINED = f"data/open/{body}/pretrained_model/model_best.pth.tar"
    return cfg


def config_factory(body: str):
    """The config layer's ``get_cfg`` of a body model ('smpl' or 'smplx'): ``lib.core.<body>.config.get_cfg``."""
    if body not in ("smpl", "smplx"):
        raise ValueError(f"body must be 'smpl' or 'smplx', got {body!r}")
    return importlib.import_module(f"lib.core.{body}.config").get_cfg


class ConfigError(ValueError):
    """A config mistake (unknown key, unreadable YAML, wrong value type or value), described on one line."""


def config_keys(cfg: CN, prefix: str = "") -> list[str]:
    """Every leaf key of ``cfg`` as a dotted name ('MODEL.MLP.EMBED_DIM'), in definition order."""
    keys = []
    for name, value in cfg.items():
        if isinstance(value, CN):
            keys += config_keys(value, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _closest_keys(key: str, cfg: CN) -> str:
    """'; did you mean A?' (or 'A or B?') naming the nearest valid keys, by the full name or by its last part."""
    keys = config_keys(cfg)
    close = difflib.get_close_matches(key, keys, n=2, cutoff=0.75)
    if not close:
        by_leaf = {}
        for full in keys:
            by_leaf.setdefault(full.rsplit(".", 1)[-1], full)
        close = [by_leaf[leaf] for leaf in difflib.get_close_matches(key.rsplit(".", 1)[-1], by_leaf, n=2, cutoff=0.75)]
    return f"; did you mean {' or '.join(close)}?" if close else "; see lib/core/config.py for the valid keys"


def _decode(value: Any) -> Any:
    """A Python literal from a string ('256' -> 256, "['AMASS']" -> ['AMASS'], 'AMASS' stays), as yacs decodes."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return value


_TYPE_NAMES = {
    bool: "True or False",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    tuple: "a list",
}


def _coerced(key: str, value: Any, default: Any, source: str) -> Any:
    """``value`` in the type of the key's default; an int is accepted for a float key, a tuple for a list key."""
    value = _decode(value)
    kind = type(default)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if kind is float and type(value) is int:
        return float(value)
    if kind in (list, tuple) and isinstance(value, (list, tuple)):
        return kind(value)
    expected = _TYPE_NAMES.get(kind, kind.__name__)
    raise ConfigError(
        f"{key} ({source}) expects {expected} (default {default!r}), got {value!r} ({type(value).__name__})"
    )


def set_key(cfg: CN, key: str, value: Any, source: str) -> None:
    """Set the dotted ``key`` of ``cfg`` to ``value`` (type-checked against the default), or raise ConfigError."""
    node, parts = cfg, key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, CN) or part not in node:
            raise ConfigError(f"unknown config key {key} ({source}){_closest_keys(key, cfg)}")
        if depth < len(parts) - 1:
            node = node[part]
    leaf = parts[-1]
    if isinstance(node[leaf], CN):
        raise ConfigError(
            f"{key} ({source}) is a group of keys, not a value; set one of "
            f"{', '.join(config_keys(node[leaf], key + '.')[:4])}, ..."
        )
    node[leaf] = _coerced(key, value, node[leaf], source)


def _flatten(mapping: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """Dotted (key, value) pairs of a nested YAML mapping."""
    items = []
    for name, value in mapping.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            items += _flatten(value, key + ".")
        else:
            items.append((key, value))
    return items


def merge_yaml(cfg: CN, text: str, source: str) -> None:
    """Merge YAML text (a mapping of config keys, nested as the defaults) into ``cfg``, or raise ConfigError."""
    try:
        mapping = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(f"{source}:{where}: not valid YAML ({problem})") from None
    if mapping is None:
        return
    if not isinstance(mapping, dict):
        raise ConfigError(f"{source}: expected a mapping of config keys, got {type(mapping).__name__}")
    for key, value in _flatten(mapping):
        set_key(cfg, str(key), value, source)


def merge_overrides(cfg: CN, opts: list) -> None:
    """Merge command-line ``KEY VALUE`` pairs into ``cfg``, or raise ConfigError."""
    if len(opts) % 2:
        raise ConfigError(f"overrides must be KEY VALUE pairs, got an odd count: {' '.join(map(str, opts))}")
    for key, value in zip(opts[0::2], opts[1::2], strict=True):
        set_key(cfg, str(key), value, "command line")


def load_config(
    base: CN, cfg_file: str | None = None, opts: list | None = None, saved: tuple[str, str] | None = None
) -> CN:
    """Merge, in this order, a saved config (``(yaml_text, where_from)``, e.g. a checkpoint's), a YAML file and
    ``KEY VALUE`` overrides into ``base``; validate and freeze the result. Mistakes raise ConfigError."""
    cfg = base.clone()
    cfg.defrost()
    if saved is not None:
        merge_yaml(cfg, *saved)
        if cfg.get("BODY") != base.get("BODY"):
            raise ConfigError(f"{saved[1]} is a {cfg.get('BODY')} config; use train_{cfg.get('BODY')}.py for it")
    if cfg_file:
        path = resolve_path(cfg_file)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        merge_yaml(cfg, path.read_text(), cfg_file)
    merge_overrides(cfg, list(opts or []))
    validate(cfg)
    cfg.freeze()
    return cfg


def value_of(cfg: CN, key: str) -> Any:
    """The value of a dotted key ('TRAIN.RESUME')."""
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def changed_keys(before: CN, after: CN) -> list[str]:
    """'KEY: old -> new' for every leaf key of ``after`` whose value differs in ``before`` (or is absent there)."""
    lines = []
    for key in config_keys(after):
        try:
            old = value_of(before, key)
        except (KeyError, TypeError):  # a key the saved config did not have yet
            old = "<absent>"
        if old != value_of(after, key):
            lines.append(f"{key}: {old!r} -> {value_of(after, key)!r}")
    return lines


def validate(cfg: CN) -> None:
    """Reject settings the method cannot run with, naming the key and the fix."""
    if cfg.MODEL.MLP.EMBED_DIM != 256:
        raise ConfigError(
            f"MODEL.MLP.EMBED_DIM={cfg.MODEL.MLP.EMBED_DIM}: the Part-aware Network concatenates widths "
            "(H-64)+(H-192) = 2H-256, which equals H only for H=256 (the paper's value); set it to 256"
        )
    if cfg.MODEL.MLP.MATMUL_PRECISION not in ("float32", "bfloat16"):
        raise ConfigError(f"MODEL.MLP.MATMUL_PRECISION={cfg.MODEL.MLP.MATMUL_PRECISION!r}: use 'float32' or 'bfloat16'")
    if not 0.0 <= cfg.MODEL.MLP.DROPOUT < 1.0:
        raise ConfigError(f"MODEL.MLP.DROPOUT={cfg.MODEL.MLP.DROPOUT}: a probability in [0, 1) (the paper's is 0.2)")
    if cfg.MODEL.PR_VARIANT not in ("v1", "v2", "none"):
        raise ConfigError(f"MODEL.PR_VARIANT={cfg.MODEL.PR_VARIANT!r}: use 'v1', 'v2' or 'none'")
    if cfg.MODEL.TEMPORAL_TYPE != "mlp":
        raise ConfigError(f"MODEL.TEMPORAL_TYPE={cfg.MODEL.TEMPORAL_TYPE!r}: only 'mlp' is implemented")
    if cfg.MODEL.ROBUST.SUSPICIOUS not in ("warn", "fill") or cfg.MODEL.ROBUST.MAX_ABS_BETA <= 0:
        raise ConfigError(
            f"MODEL.ROBUST.SUSPICIOUS={cfg.MODEL.ROBUST.SUSPICIOUS!r} must be 'warn' or 'fill' and "
            "MODEL.ROBUST.MAX_ABS_BETA > 0"
        )
    if cfg.TRAIN.JOINT_NOISE_MM < 0 or not 0.0 <= cfg.TRAIN.JOINT_NOISE_FRACTION <= 1.0:
        raise ConfigError("TRAIN.JOINT_NOISE_MM must be >= 0 and TRAIN.JOINT_NOISE_FRACTION in [0, 1]")
    if cfg.DATASET.SEQLEN < 1 or not 0.0 <= cfg.DATASET.OVERLAP < 1.0:
        raise ConfigError("DATASET.SEQLEN must be >= 1 and DATASET.OVERLAP in [0, 1)")
