"""From a config to the objects a run needs: device, body model, Shape Inverse, solver, network."""
from __future__ import annotations

import copy
import hashlib
import logging
import random
import warnings
from pathlib import Path

import numpy as np
import torch
from yacs.config import CfgNode

from lib.core.config import REPO_ROOT, resolve_path
from lib.kinematics.tree import TREES, KinematicTree
from lib.models.body_model import BodyModel
from lib.models.checkpoint import load_pan_weights
from lib.models.pan import PartAwareNetwork
from lib.models.skeleton_2_beta import load_skeleton_2_beta, save_skeleton_2_beta
from lib.solver.pipeline import SkeletonSolver
from lib.solver.shape_inverse import ShapeInverse, fit_bone_length_model

log = logging.getLogger(__name__)

# Where skeleton_2_beta matrices fitted at start-up are cached (keyed by the body model file's content).
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


def configure_cudnn(cfg: CfgNode) -> None:
    torch.backends.cudnn.benchmark = cfg.CUDNN.BENCHMARK
    torch.backends.cudnn.deterministic = cfg.CUDNN.DETERMINISTIC
    torch.backends.cudnn.enabled = cfg.CUDNN.ENABLED


def tree_for(cfg: CfgNode) -> KinematicTree:
    return TREES[cfg.BODY]


def build_body_model(cfg: CfgNode, device: torch.device, dtype: torch.dtype = torch.float32) -> BodyModel:
    kid = resolve_path(cfg.DATA.KID_TEMPLATE) if cfg.DATA.KID_TEMPLATE else None
    model = BodyModel.from_file(resolve_path(cfg.DATA.BODY_MODEL), model_type=cfg.BODY, kid_template_path=kid,
                                dtype=dtype)
    return model.to(device)


def _file_digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()[:12]


def skeleton_2_beta_matrix(cfg: CfgNode, body_model: BodyModel, tree: KinematicTree) -> torch.Tensor:
    """A (G, num_betas): from ``DATA.SKELETON_2_BETA`` when set, else fitted from the body model and cached."""
    num_betas = body_model.num_betas
    if cfg.DATA.SKELETON_2_BETA:
        matrix = load_skeleton_2_beta(resolve_path(cfg.DATA.SKELETON_2_BETA))
        if matrix.shape[1] < num_betas:
            raise ValueError(f"DATA.SKELETON_2_BETA has {matrix.shape[1]} columns; the body model has "
                             f"{num_betas} betas")
        return torch.as_tensor(matrix[:, :num_betas])
    key = _file_digest(resolve_path(cfg.DATA.BODY_MODEL))
    if cfg.DATA.KID_TEMPLATE:
        key += "_kid" + _file_digest(resolve_path(cfg.DATA.KID_TEMPLATE))
    cached = CACHE_DIR / f"skeleton_2_beta_{tree.name}_{key}_{num_betas}.npz"
    if cached.is_file():
        return torch.as_tensor(load_skeleton_2_beta(cached))
    matrix, residual = fit_skeleton_2_beta(body_model, tree)
    log.info("fitted skeleton_2_beta from the body model: RMS residual %.3f mm; cached at %s", residual, cached)
    save_skeleton_2_beta(cached, matrix.numpy())
    return matrix


def fit_skeleton_2_beta(body_model: BodyModel, tree: KinematicTree, num_samples: int = 10000, sigma: float = 1.5,
                        seed: int = 0) -> tuple[torch.Tensor, float]:
    """Least-squares A over sampled betas on the body model's rest-joint map (a float64 CPU copy)."""
    exact = copy.deepcopy(body_model).to(device="cpu", dtype=torch.float64)
    return fit_bone_length_model(tree, exact.rest_joints, body_model.num_betas, num_samples, sigma, seed)


def build_solver(cfg: CfgNode, body_model: BodyModel) -> SkeletonSolver:
    tree = tree_for(cfg)
    matrix = skeleton_2_beta_matrix(cfg, body_model, tree)
    zero = body_model.rest_joints(torch.zeros(1, body_model.num_betas, dtype=body_model.dtype,
                                              device=body_model.device))[0]
    shape_inverse = ShapeInverse(tree, matrix, zero.double()).to(body_model.device)
    return SkeletonSolver(tree, body_model.rest_joints, shape_inverse, cfg.MODEL.PR_VARIANT,
                          posed_joints=body_model.posed_joints)


def build_network(cfg: CfgNode, device: torch.device, weights: str | None = None) -> PartAwareNetwork:
    """The Part-aware Network, with weights from ``weights`` (a checkpoint path) when given."""
    network = PartAwareNetwork(tree_for(cfg), embed_dim=cfg.MODEL.MLP.EMBED_DIM)
    if weights:
        load_pan_weights(network, resolve_path(weights))
    return network.to(device)
