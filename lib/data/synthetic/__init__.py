"""Synthetic training / test data: anatomically plausible SMPL and SMPL-X poses in short smooth sequences.

One module a job:
    limits        the joint-limit tables (idealised axes, angle ranges, hand coupling, root limits), as data
    axes          anatomical angles -> axis-angle, on idealised axes or aligned to a body model's rest bones
    sampler       sequences of poses and shapes (seeded; slots from the body's kinematic tree)
    twist_labels  ground-truth twist angles of sampled poses (METHOD.md section 6)
    writer        databases in the official layout, generated once and reused (a JSON sidecar holds the parameters)

Public API:
    sample_smpl_poses(n, seed, ...)   -> SyntheticPoses, pose (n, 24, 3) axis-angle incl. the root
    sample_smplx_poses(n, seed, ...)  -> SyntheticPoses, pose (n, 55, 3): body as SMPL, jaw / eyes zero, hands
    sample_hand_poses(n, seed)        -> (n, 2, 15, 3) independent left / right hand poses
    make_synthetic_db(body, n, seed, body_model, ...)   -> dict in the official db layout (twist angles computed)
    ensure_synthetic_db(body, split, db_dir, body_model_path, n, ...) -> path; generates a missing db once
"""

from lib.data.synthetic.axes import dofs_to_rotvec, mirror_rotvec
from lib.data.synthetic.limits import DIP_NOISE, DIP_RATIO, HAND_LIMITS, SMPL_LIMITS, JointLimit
from lib.data.synthetic.sampler import (
    SequenceConfig,
    SyntheticPoses,
    sample_hand_poses,
    sample_smpl_poses,
    sample_smplx_poses,
)
from lib.data.synthetic.twist_labels import compute_twist_angles
from lib.data.synthetic.writer import (
    DEFAULT_SEEDS,
    SYNTHETIC_FORMAT_VERSION,
    ensure_synthetic_db,
    make_synthetic_db,
    synthetic_db_path,
)

__all__ = [
    "JointLimit",
    "SMPL_LIMITS",
    "HAND_LIMITS",
    "DIP_RATIO",
    "DIP_NOISE",
    "SyntheticPoses",
    "SequenceConfig",
    "DEFAULT_SEEDS",
    "sample_smpl_poses",
    "sample_smplx_poses",
    "sample_hand_poses",
    "dofs_to_rotvec",
    "mirror_rotvec",
    "compute_twist_angles",
    "make_synthetic_db",
    "ensure_synthetic_db",
    "synthetic_db_path",
    "SYNTHETIC_FORMAT_VERSION",
]
