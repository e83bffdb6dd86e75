"""Build real-motion databases from BVH motion capture (docs/motion_data.md).

    git clone https://github.com/BandaiNamcoResearchInc/Bandai-Namco-Research-Motiondataset
    python tools/make_motion_db.py --source Bandai-Namco-Research-Motiondataset/dataset

Reads every ``*.bvh`` under --source, retargets each frame's rotations to the open SMPL and SMPL-X skeletons
through a joint map (lib/data/joint_maps/<map>.yaml), and writes ``<out>/<name>_{train,test}_db.pt`` in the
official layout for each body (SMPL: beta, theta, orig_theta, twist_angle, vid_name; SMPL-X: betas,
global_orient, body_pose, lhand_pose, rhand_pose, twist_angle, vid_name). Recordings whose file name matches
--test-pattern form the test db (whole recordings, never split frames); betas are seeded, N(0, 1) per component,
one draw per recording; hands come from the synthetic hand sampler when the source has no fingers.
"""

from __future__ import annotations

import argparse
import re
import sys
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

DEFAULT_MODELS = {"smpl": "data/open/smpl/OPEN_SMPL_NEUTRAL.npz", "smplx": "data/open/smplx/OPEN_SMPLX_NEUTRAL.npz"}
DEFAULT_DB_DIRS = {"smpl": "data/open/smpl/db", "smplx": "data/open/smplx/db"}
# The Bandai split rule: every recording of the "feminine" style (both sub-datasets have it, across all their
# contents) is held out as the test set.
DEFAULT_TEST_PATTERN = r"_feminine_"
NUM_BETAS = 10


def _resolve(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO / p


def _retarget_files(files, joint_map, target, fps, unit):
    """Per file: (name, local rotmats (F', P, 3, 3)); frames subsampled to about ``fps``."""
    from tqdm import tqdm

    from lib.data.mocap import BvhError, JointMapError, detect_unit_scale, forward_kinematics, read_bvh, retarget

    out = []
    for path in tqdm(files, desc="retarget", unit="file"):
        try:
            skeleton, motion = read_bvh(path)
            if unit is None:
                detect_unit_scale(skeleton)  # refuses a skeleton of no plausible size
            step = 1 if fps is None else max(1, int(round(1.0 / (skeleton.frame_time * fps))))
            rot, _ = forward_kinematics(skeleton, motion[::step])
            out.append((path, retarget(skeleton, rot, joint_map, target)))
        except (BvhError, JointMapError, ValueError) as err:
            raise SystemExit(f"error: {err}") from None
    return out


def build_db(body: str, recordings, model_path: Path, seed: int) -> dict:
    """Official-layout db (float32) for one body from [(vid_name, local rotmats (F, P, 3, 3))]."""
    import roma
    import torch

    from lib.data.db import SMPLX_DB_POSE_KEYS
    from lib.data.synthetic import compute_twist_angles, sample_hand_poses
    from lib.kinematics.tree import TREES
    from lib.models.body_model import BodyModel

    tree = TREES[body]
    model = BodyModel.from_file(model_path, model_type=body, dtype=torch.float64)
    poses, betas, names = [], [], []
    for vid, local in recordings:
        rng = np.random.default_rng([seed, zlib.crc32(vid.encode())])
        poses.append(roma.rotmat_to_rotvec(torch.as_tensor(local)).numpy())
        betas.append(np.repeat(rng.standard_normal((1, NUM_BETAS)), len(local), 0))
        names += [vid] * len(local)
    pose = np.concatenate(poses).astype(np.float32)
    beta = np.concatenate(betas).astype(np.float32)
    n = len(pose)
    if tree.hands:  # no fingers in the source: hands from the synthetic hand sampler (seeded)
        with torch.no_grad():
            rest = model.rest_joints(torch.zeros(1, model.num_betas, dtype=model.dtype))[0].numpy()
        hands = sample_hand_poses(n, seed, rest_joints=rest).astype(np.float32)
        for slots, hand in zip(tree.hand_pose_slots, (hands[:, 0], hands[:, 1]), strict=True):
            pose[:, slots] = hand
    twist = compute_twist_angles(
        body, pose.astype(np.float64), beta.astype(np.float64), model, progress=True, desc=f"{body} twist"
    ).astype(np.float32)
    vid_name = np.array(names)
    if body == "smpl":
        theta = pose.reshape(n, -1)
        return {"beta": beta, "theta": theta, "orig_theta": theta.copy(), "twist_angle": twist, "vid_name": vid_name}
    fields = {key: pose[:, tree.pose_slots(group)].reshape(n, -1) for key, group in SMPLX_DB_POSE_KEYS.items()}
    return {"betas": beta, **fields, "twist_angle": twist, "vid_name": vid_name}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, help="directory searched recursively for *.bvh files")
    parser.add_argument("--joint-map", default="lib/data/joint_maps/bandai.yaml", help="joint map YAML")
    parser.add_argument("--name", default="bandai", help="db name: writes <out>/<name>_{train,test}_db.pt")
    parser.add_argument("--body", choices=("smpl", "smplx", "both"), default="both")
    parser.add_argument("--out", default=None, help="output directory (default: the open configs' DB_DIR)")
    parser.add_argument(
        "--test-pattern",
        default=DEFAULT_TEST_PATTERN,
        help="regular expression on the file name: matching recordings form the test db",
    )
    parser.add_argument("--fps", type=float, default=10.0, help="frames per second kept (0: all frames)")
    parser.add_argument(
        "--unit",
        choices=("m", "cm", "mm", "inch"),
        default=None,
        help="length unit of the files (default: detected; only positions use it)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the betas and of the hand sampler")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N files (0: all)")
    args = parser.parse_args(argv)

    from lib.data.db import write_db
    from lib.data.mocap import JointMapError, RetargetTarget, load_joint_map
    from lib.kinematics.tree import SMPL_JOINT_NAMES, TREES
    from lib.models.body_model import BodyModel

    source = _resolve(args.source)
    if not source.is_dir():
        parser.error(f"--source {source} is not a directory (clone the dataset; pass its dataset/ folder)")
    files = sorted(source.rglob("*.bvh"))
    if args.limit > 0:
        files = files[: args.limit]
    if not files:
        parser.error(f"no *.bvh files under {source}")
    try:
        joint_map = load_joint_map(_resolve(args.joint_map))
        pattern = re.compile(args.test_pattern)
    except (JointMapError, re.error) as err:
        parser.error(str(err))
    bodies = ("smpl", "smplx") if args.body == "both" else (args.body,)
    fps = args.fps if args.fps > 0 else None
    import torch

    for body in bodies:
        model_path = _resolve(DEFAULT_MODELS[body])
        model = BodyModel.from_file(model_path, model_type=body, dtype=torch.float64)
        with torch.no_grad():
            rest = model.rest_joints(torch.zeros(1, model.num_betas, dtype=model.dtype))[0].numpy()
        body_names = SMPL_JOINT_NAMES[: TREES[body].pose_slots("body_pose").stop]  # SMPL-X: no SMPL hand joints
        target = RetargetTarget.from_rest(TREES[body], body_names, rest)
        recordings = [
            (str(p.relative_to(source)), local)
            for p, local in _retarget_files(files, joint_map, target, fps, args.unit)
        ]
        out = _resolve(args.out or DEFAULT_DB_DIRS[body])
        for split in ("train", "test"):
            chosen = [r for r in recordings if bool(pattern.search(Path(r[0]).name)) == (split == "test")]
            if not chosen:
                print(f"[motion] {body} {split}: no recordings (test pattern {args.test_pattern!r}); not written")
                continue
            db = build_db(body, chosen, model_path, args.seed + (split == "test"))
            path = write_db(out / f"{args.name}_{split}_db.pt", db, body)
            print(f"[motion] {path}: {len(db['twist_angle'])} frames from {len(chosen)} recordings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
