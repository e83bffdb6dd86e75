"""Synthetic databases in the official layout: sample, label twists, write once (with a parameter sidecar)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lib.data.db import SMPLX_DB_POSE_KEYS, SPLITS, write_db
from lib.data.synthetic.sampler import sample_smpl_poses, sample_smplx_poses
from lib.data.synthetic.twist_labels import compute_twist_angles
from lib.io.safe_io import atomic_write, file_digest
from lib.kinematics.tree import TREES

SYNTHETIC_FORMAT_VERSION = 2  # 2: real-motion twist ranges (elbow pronation, no wrist twist)
# Default seeds per split; the split name is mixed into the random stream as well, so train and test differ even
# with equal seeds, and their vid_names carry the split, so they can never collide.
# 'val' is the validation split training selects its checkpoints on, so that the test split stays unseen.
DEFAULT_SEEDS = {split: k + 1 for k, split in enumerate(SPLITS)}  # train 1, test 2, val 3


def _load_body_model(body: str, body_model: Any, kid_template_path: str | os.PathLike | None):
    from lib.models.body_model import BodyModel  # imported here: sampling alone needs no body model

    if isinstance(body_model, BodyModel):
        if body_model.model_type != body:
            raise ValueError(f"body model is {body_model.model_type!r}, the db is {body!r}")
        return body_model
    return BodyModel.from_file(body_model, model_type=body, kid_template_path=kid_template_path, dtype=torch.float64)


def make_synthetic_db(
    body: str,
    n: int,
    seed: int,
    body_model: Any,
    *,
    split: str = "train",
    kids: float = 0.0,
    kid_template_path: str | os.PathLike | None = None,
    batch_size: int = 8192,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Sample ``n`` frames and return them in the official db layout (METHOD.md section 10), float32.

    ``body_model``: a BodyModel of the same type or a model file path. Poses are rounded to float32 before the
    twist angles are computed, so the stored twist matches the stored pose.
    """
    if body not in TREES:
        raise ValueError(f"body must be 'smpl' or 'smplx', got {body!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    model = _load_body_model(body, body_model, kid_template_path)
    with torch.no_grad():
        zero = torch.zeros(1, model.num_betas, dtype=model.dtype, device=model.device)
        rest = model.rest_joints(zero)[0].to(torch.float64).cpu().numpy()
    sampler = sample_smpl_poses if body == "smpl" else sample_smplx_poses
    poses = sampler(
        n,
        seed,
        kids=kids,
        vid_prefix=f"synthetic_{body}_{split}_s{seed}",
        salt=(SPLITS.index(split),),
        rest_joints=rest,
    )
    pose32 = poses.pose.astype(np.float32)
    betas32 = poses.betas.astype(np.float32)
    twist = compute_twist_angles(
        body,
        pose32.astype(np.float64),
        betas32.astype(np.float64),
        model,
        batch_size=batch_size,
        progress=progress,
        desc=f"synthetic {body} {split} db",
    ).astype(np.float32)
    vid = poses.vid_name
    if body == "smpl":  # the official SMPL layout: the whole pose as one theta vector
        theta = pose32.reshape(n, -1)
        return {"beta": betas32, "theta": theta, "orig_theta": theta.copy(), "twist_angle": twist, "vid_name": vid}
    tree = TREES[body]
    pose_fields = {key: pose32[:, tree.pose_slots(group)].reshape(n, -1) for key, group in SMPLX_DB_POSE_KEYS.items()}
    return {"betas": betas32, **pose_fields, "twist_angle": twist, "vid_name": vid}


def synthetic_db_path(db_dir: str | os.PathLike, split: str) -> Path:
    return Path(db_dir) / f"synthetic_{split}_db.pt"


def _file_tag(path: Any) -> str | None:
    """'<name>:<sha1 prefix>' of a model file, so a db made on another model is regenerated; None for objects."""
    if not isinstance(path, (str, os.PathLike)) or not Path(path).is_file():
        return None
    return f"{Path(path).name}:{file_digest(path)}"


def _meta_path(path: Path) -> Path:
    return path.with_suffix(".json")


def ensure_synthetic_db(
    body: str,
    split: str,
    db_dir: str | os.PathLike,
    body_model_path: Any,
    n: int,
    seed: int | None = None,
    *,
    kids: float = 0.0,
    kid_template_path: str | os.PathLike | None = None,
    batch_size: int = 8192,
    progress: bool = True,
) -> Path:
    """Path of ``<db_dir>/synthetic_<split>_db.pt``, generating it first when missing (seeded, with a progress bar).

    A generated db has a sidecar ``synthetic_<split>_db.json`` with its parameters; when they differ from the
    requested ones (n, seed, kids, body) the db is regenerated. A db without a sidecar (user supplied) is used as
    it is. The sidecar also records the body model file's digest, so a db made on a different model is
    regenerated. Writing is atomic (temporary file + rename), so concurrent callers never see a partial file.
    """
    seed = DEFAULT_SEEDS[split] if seed is None else int(seed)
    path = synthetic_db_path(db_dir, split)
    meta = {
        "generator": "lib.data.synthetic",
        "version": SYNTHETIC_FORMAT_VERSION,
        "body": body,
        "split": split,
        "n": int(n),
        "seed": seed,
        "kids": float(kids),
        "body_model": _file_tag(body_model_path),
        "kid_template": _file_tag(kid_template_path) if kids > 0 else None,
    }
    if path.is_file():
        meta_file = _meta_path(path)
        if not meta_file.is_file():
            return path
        try:
            old = json.loads(meta_file.read_text())
        except (OSError, ValueError):
            old = None
        if old == meta:
            return path
        print(f"[synthetic] {path} was generated with {old}; regenerating with {meta}")
    path.parent.mkdir(parents=True, exist_ok=True)
    _meta_path(path).unlink(missing_ok=True)
    if progress:
        print(f"[synthetic] generating {path} ({n} {body} frames, seed {seed}); done once, then reused")
    db = make_synthetic_db(
        body,
        n,
        seed,
        body_model_path,
        split=split,
        kids=kids,
        kid_template_path=kid_template_path,
        batch_size=batch_size,
        progress=progress,
    )
    write_db(path, db, body)
    with atomic_write(_meta_path(path), "w") as sidecar:
        sidecar.write(json.dumps(meta, indent=1))
    return path
