"""Write the short example skeleton sequences fit.py and the README use (data/examples/), from the open models.

    python tools/make_example_skeletons.py            # data/examples/smpl_sequence.npy, smplx_sequence.npy

Each is one synthetic sequence of 16 frames (the eval db's pose sampler, seeded) with a translation walking along
+x, in metres, y up, float32: SMPL (16, 24, 3) in SMPL order; SMPL-X (16, 65, 3): the 55 skeleton joints, then the
10 fingertips (``--joint-order smplx65``). Noise-free, so fitting them reproduces them to a fraction of a mm.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lib.core.config import body_defaults, resolve_path  # noqa: E402
from lib.data.synthetic import SequenceConfig, sample_smpl_poses, sample_smplx_poses  # noqa: E402
from lib.data.user_joints import JOINT_ORDERS  # noqa: E402
from lib.kinematics.tree import TREES  # noqa: E402
from lib.models.body_model import BodyModel  # noqa: E402

SAMPLERS = {"smpl": (sample_smpl_poses, "smpl24"), "smplx": (sample_smplx_poses, "smplx65")}


def example_sequence(body: str, frames: int = 16, seed: int = 3) -> np.ndarray:
    """(frames, J, 3) float32 joints of one sampled sequence, walking 4 cm a frame along +x, pelvis ~1 m up."""
    sampler, order = SAMPLERS[body]
    poses = sampler(frames, seed, sequence=SequenceConfig(length=(frames, frames)))
    model = BodyModel.from_file(resolve_path(body_defaults(body).DATA.BODY_MODEL), model_type=body, dtype=torch.float64)
    pose = torch.as_tensor(poses.pose)
    pose[:, 0] = 0.0  # upright, facing +z
    joints = model.posed_joints(pose, torch.as_tensor(poses.betas[:, :10])).numpy()
    joints += np.stack([0.04 * np.arange(frames), np.full(frames, 1.0), np.zeros(frames)], axis=1)[:, None]
    names = TREES[body].joint_names
    return joints[:, [names.index(n) for n in JOINT_ORDERS[order]]].astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "data" / "examples"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for body in SAMPLERS:
        path = out / f"{body}_sequence.npy"
        np.save(path, example_sequence(body))
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
