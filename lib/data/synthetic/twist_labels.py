"""Ground-truth twist labels of sampled poses: the project's twist function on a body model's rest joints."""

from __future__ import annotations

from typing import Any

import numpy as np
import roma
import torch
from tqdm import tqdm

from lib.kinematics.tree import TREES
from lib.solver.twist import twist_angles


def compute_twist_angles(
    body: str,
    pose: np.ndarray,
    betas: np.ndarray,
    body_model: Any,
    batch_size: int = 8192,
    progress: bool = False,
    desc: str = "twist",
) -> np.ndarray:
    """Ground-truth twist angles (N, P-1) of poses (N, P, 3) for shapes (N, B) with the project's twist function
    (METHOD.md section 6) on the body model's rest joints."""
    tree = TREES[body]
    model_betas = body_model.num_betas
    if betas.shape[1] > model_betas:
        if np.any(betas[:, model_betas:] != 0):
            raise ValueError(
                f"the poses use {betas.shape[1]} betas but the body model has {model_betas}: kids "
                "need the kid template (DATA.KID_TEMPLATE / --kid-template)"
            )
        betas = betas[:, :model_betas]
    elif betas.shape[1] < model_betas:
        betas = np.concatenate([betas, np.zeros((len(betas), model_betas - betas.shape[1]))], 1)
    out = np.zeros((len(pose), tree.num_twists))
    starts = range(0, len(pose), batch_size)
    for s in tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=False):
        b = torch.as_tensor(betas[s : s + batch_size], dtype=body_model.dtype, device=body_model.device)
        with torch.no_grad():
            rest = body_model.rest_joints(b).to(torch.float64).cpu()
            rot = roma.rotvec_to_rotmat(torch.as_tensor(pose[s : s + batch_size], dtype=torch.float64))
            out[s : s + batch_size] = twist_angles(tree, rest, rot).numpy()
    return out
