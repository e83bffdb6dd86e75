"""From a config to the objects a run needs: device, body model, Shape Inverse, solver, network, datasets.

The input files a config names (body model, databases, checkpoints) are resolved here, relative paths from the
repository root; the rooms below (``lib/data``, ``lib/models``, ``lib/solver``, ``lib/kinematics``) receive ready
paths and values, never a cfg.
"""

from __future__ import annotations

import copy
import logging
import random
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset
from yacs.config import CfgNode

from lib.core.config import REPO_ROOT, resolve_path, value_of
from lib.data.db import PoseDataset, db_path, db_stem
from lib.data.synthetic import ensure_synthetic_db
from lib.io.safe_io import file_digest
from lib.kinematics.tree import TREES, KinematicTree
from lib.models.body_model import BodyModel
from lib.models.checkpoint import load_checkpoint, load_pan_weights
from lib.models.pan import PartAwareNetwork
from lib.models.skeleton_2_beta import load_skeleton_2_beta, save_skeleton_2_beta
from lib.solver.mirror import MirrorAveragedNetwork
from lib.solver.pipeline import RobustOptions, SkeletonSolver, TwistNetwork
from lib.solver.shape_inverse import ShapeInverse, ShapePrior, fit_bone_length_model

log = logging.getLogger(__name__)

# Where skeleton_2_beta matrices fitted at start-up are cached (keyed by the body model file and the tree layout).
CACHE_DIR = REPO_ROOT / "data" / "cache"


def select_device(name: str) -> torch.device:
    """The configured device; 'cuda' without a GPU falls back to the CPU with one warning line."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        warnings.warn(f"DEVICE={name!r} but no CUDA device is available; running on the CPU", stacklevel=2)
        return torch.device("cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def random_states() -> dict:
    """This process's python, numpy and torch (CPU and CUDA) random states as plain data (lists, ints, tensors), so
    a checkpoint holding them stays loadable with weights-only unpickling."""
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": [version, list(internal), gauss_next],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached_gaussian)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_random_states(states: dict) -> None:
    """Restore what :func:`random_states` returned (CUDA states only when this process sees as many GPUs)."""
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached_gaussian))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def configure_cudnn(cfg: CfgNode) -> None:
    torch.backends.cudnn.benchmark = cfg.CUDNN.BENCHMARK
    torch.backends.cudnn.deterministic = cfg.CUDNN.DETERMINISTIC
    torch.backends.cudnn.enabled = cfg.CUDNN.ENABLED


def tree_for(cfg: CfgNode) -> KinematicTree:
    return TREES[cfg.BODY]


def build_body_model(cfg: CfgNode, device: torch.device, dtype: torch.dtype = torch.float32) -> BodyModel:
    kid = resolve_path(cfg.DATA.KID_TEMPLATE) if cfg.DATA.KID_TEMPLATE else None
    model = BodyModel.from_file(
        resolve_path(cfg.DATA.BODY_MODEL), model_type=cfg.BODY, kid_template_path=kid, dtype=dtype
    )
    return model.to(device)


def skeleton_2_beta_cache_path(cfg: CfgNode, tree: KinematicTree, num_betas: int) -> Path:
    """Cache file of a fitted skeleton_2_beta: keyed on the body model (and kid template) files, the tree layout
    (its rows follow ``tree.bone_groups``) and the number of betas."""
    key = file_digest(resolve_path(cfg.DATA.BODY_MODEL))
    if cfg.DATA.KID_TEMPLATE:
        key += "_kid" + file_digest(resolve_path(cfg.DATA.KID_TEMPLATE))
    return CACHE_DIR / f"skeleton_2_beta_{tree.name}_{tree.layout_digest}_{key}_{num_betas}.npz"


def skeleton_2_beta_matrix(cfg: CfgNode, body_model: BodyModel, tree: KinematicTree) -> torch.Tensor:
    """A (G, num_betas): from ``DATA.SKELETON_2_BETA`` when set, else fitted from the body model and cached."""
    num_betas = body_model.num_betas
    if cfg.DATA.SKELETON_2_BETA:
        matrix = load_skeleton_2_beta(resolve_path(cfg.DATA.SKELETON_2_BETA))
        if matrix.shape[1] < num_betas:
            raise ValueError(
                f"DATA.SKELETON_2_BETA has {matrix.shape[1]} columns; the body model has {num_betas} betas"
            )
        return torch.as_tensor(matrix[:, :num_betas])
    cached = skeleton_2_beta_cache_path(cfg, tree, num_betas)
    if cached.is_file():
        return torch.as_tensor(load_skeleton_2_beta(cached))
    matrix, residual = fit_skeleton_2_beta(body_model, tree)
    log.info("fitted skeleton_2_beta from the body model: RMS residual %.3f mm; cached at %s", residual, cached)
    save_skeleton_2_beta(cached, matrix.numpy())
    return matrix


def fit_skeleton_2_beta(
    body_model: BodyModel, tree: KinematicTree, num_samples: int = 10000, sigma: float = 1.5, seed: int = 0
) -> tuple[torch.Tensor, float]:
    """Least-squares A over sampled betas on the body model's rest-joint map (a float64 CPU copy)."""
    exact = copy.deepcopy(body_model).to(device="cpu", dtype=torch.float64)
    return fit_bone_length_model(tree, exact.rest_joints, body_model.num_betas, num_samples, sigma, seed)


def build_solver(cfg: CfgNode, body_model: BodyModel) -> SkeletonSolver:
    tree = tree_for(cfg)
    matrix = skeleton_2_beta_matrix(cfg, body_model, tree)
    zero = body_model.rest_joints(
        torch.zeros(1, body_model.num_betas, dtype=body_model.dtype, device=body_model.device)
    )[0]
    shape_inverse = ShapeInverse(tree, matrix, zero.double()).to(body_model.device)
    return SkeletonSolver(
        tree,
        body_model.rest_joints,
        shape_inverse,
        cfg.MODEL.PR_VARIANT,
        posed_joints=body_model.posed_joints,
        robust=robust_options(cfg),
    )


def robust_options(cfg: CfgNode) -> RobustOptions | None:
    """The solver's robust mode from ``MODEL.ROBUST`` (None when disabled: the paper's pipeline)."""
    robust = cfg.MODEL.ROBUST
    if not robust.ENABLED:
        return None
    prior = ShapePrior(noise_mm=None if robust.NOISE_MM < 0 else robust.NOISE_MM, max_abs_beta=robust.MAX_ABS_BETA)
    return RobustOptions(prior=prior, suspicious=robust.SUSPICIOUS)


def checkpoint_hint(cfg: CfgNode, config_key: str) -> str:
    """What to say when the checkpoint named by ``config_key`` is missing: where the path came from, how to get one."""
    if config_key == "TRAIN.RESUME":
        return (
            f"(from {config_key}). Set it to the checkpoint.pth.tar a training run writes every epoch in its "
            "directory under OUTPUT_DIR"
        )
    return (
        f"(from {config_key}). Train the open model with `python train_{cfg.BODY}.py --cfg "
        f"configs/{cfg.BODY}/open_train.yaml`, or download the official pretrained_model/model_best.pth.tar "
        f"and place it under data/{cfg.BODY}/pretrained_model/, then set {config_key} to its path"
    )


def load_config_checkpoint(cfg: CfgNode, config_key: str) -> dict:
    """The checkpoint dict named by a config key (e.g. 'TRAIN.RESUME'), its path resolved from the repository root."""
    value = value_of(cfg, config_key)
    return load_checkpoint(resolve_path(value) if value else "", hint=checkpoint_hint(cfg, config_key))


def build_network(cfg: CfgNode, device: torch.device, weights_key: str | None = None) -> PartAwareNetwork:
    """The Part-aware Network, with the weights of the checkpoint named by the config key ``weights_key``
    (e.g. 'MODEL.PRETRAINED') when given."""
    network = PartAwareNetwork(tree_for(cfg), embed_dim=cfg.MODEL.MLP.EMBED_DIM, dropout=cfg.MODEL.MLP.DROPOUT)
    network.set_matmul_precision(cfg.MODEL.MLP.MATMUL_PRECISION)
    if weights_key:
        load_pan_weights(network, load_config_checkpoint(cfg, weights_key))
    return network.to(device)


def build_inference_network(cfg: CfgNode, body_model: BodyModel) -> TwistNetwork | None:
    """The twist network evaluation and fitting run: the ``MODEL.PRETRAINED`` PAN in eval mode on the body model's
    device, averaged with its mirror reading when ``MODEL.MIRROR_AVERAGE`` (lib/solver/mirror.py); None without a
    checkpoint (AnalyIK only)."""
    if not cfg.MODEL.PRETRAINED:
        return None
    network = build_network(cfg, body_model.v_template.device, "MODEL.PRETRAINED").eval()
    return mirror_averaged(cfg, network, body_model)


def mirror_averaged(cfg: CfgNode, network: PartAwareNetwork, body_model: BodyModel) -> TwistNetwork:
    """``network`` itself, or wrapped in :class:`MirrorAveragedNetwork` when ``MODEL.MIRROR_AVERAGE`` is on."""
    if not cfg.MODEL.MIRROR_AVERAGE:
        return network
    rest = body_model.rest_joints(body_model.v_template.new_zeros(1, body_model.num_betas))[0]
    return MirrorAveragedNetwork(network, tree_for(cfg), rest)


def resolve_db(cfg: CfgNode, name: str, split: str, progress: bool = True) -> Path:
    """Database path for a config (``BODY``, ``DATA.DB_DIR``, ...): SYNTHETIC is generated when missing
    (``DATA.SYNTHETIC_{TRAIN,TEST,VAL}_SIZE`` frames on ``DATA.BODY_MODEL``), other names must exist."""
    if not cfg.DATA.DB_DIR:
        raise FileNotFoundError("DATA.DB_DIR is empty: set it to the directory of the <name>_<set>_db.pt databases")
    db_dir = resolve_path(cfg.DATA.DB_DIR)
    if db_stem(name) == "synthetic":
        size = {
            "train": cfg.DATA.SYNTHETIC_TRAIN_SIZE,
            "test": cfg.DATA.SYNTHETIC_TEST_SIZE,
            "val": cfg.DATA.SYNTHETIC_VAL_SIZE,
        }[split]
        seed = cfg.DATA.SYNTHETIC_TEST_SEED if split == "test" else None  # None: the split's default seed
        return ensure_synthetic_db(
            cfg.BODY, split, db_dir, resolve_path(cfg.DATA.BODY_MODEL), int(size), seed, progress=progress
        )
    return db_path(db_dir, name, split)


def validation_split(cfg: CfgNode) -> str:
    """The split training validates on: 'val' for SYNTHETIC (a db of its own seed, so the test db is never used to
    select checkpoints), 'test' for the licensed databases, which have no validation split (as the reference)."""
    return "val" if db_stem(cfg.TRAIN.DATASET_EVAL) == "synthetic" else "test"


def build_dataset(cfg: CfgNode, names: str | list[str], split: str, progress: bool = True) -> Dataset:
    """PoseDataset (or a ConcatDataset of several) for the config's body, SEQLEN and OVERLAP; betas have 10
    columns, 11 when DATA.KID_TEMPLATE is set (the body model's count)."""
    names = [names] if isinstance(names, str) else list(names)
    num_betas = 11 if cfg.DATA.KID_TEMPLATE else 10
    sets = [
        PoseDataset(
            resolve_db(cfg, n, split, progress),
            body=cfg.BODY,
            seqlen=cfg.DATASET.SEQLEN,
            overlap=cfg.DATASET.OVERLAP,
            num_betas=num_betas,
        )
        for n in names
    ]
    return sets[0] if len(sets) == 1 else ConcatDataset(sets)
