"""Motion capture import: BVH reading, rotation retargeting to SMPL, the db tool. BVH files are written here from
known SMPL rotations (scipy makes their Euler angles), with a rest pose that is not a T-pose and mixed channel
orders, so every expected value comes from the writer, not from the code under test."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.spatial.transform import Rotation

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lib.data.db import load_db  # noqa: E402
from lib.data.mocap import (  # noqa: E402
    BvhError,
    JointMapError,
    RetargetTarget,
    detect_unit_scale,
    forward_kinematics,
    joint_map_from_dict,
    load_joint_map,
    parse_bvh,
    read_bvh,
    retarget,
)
from lib.kinematics.tree import SMPL_JOINT_NAMES, SMPL_TREE  # noqa: E402

ORDERS = ("ZXY", "YZX", "XYZ", "ZYX", "XZY", "YXZ")
N = SMPL_TREE.num_pose_joints


def _rest_joints(seed: int = 0) -> np.ndarray:
    """Plausible SMPL-like rest joints (T-pose, y up, +x left) with some noise, metres."""
    rng = np.random.default_rng(seed)
    rest = np.zeros((N, 3))
    step = {
        "hip": (0.07, -0.09, 0),
        "knee": (0.03, -0.38, 0),
        "ankle": (0, -0.40, -0.03),
        "foot": (0.02, -0.06, 0.12),
        "spine1": (0, 0.1, 0),
        "spine2": (0, 0.13, 0),
        "spine3": (0, 0.05, 0),
        "neck": (0, 0.22, 0),
        "collar": (0.08, 0.12, 0),
        "head": (0, 0.09, 0.05),
        "shoulder": (0.11, -0.02, 0),
        "elbow": (0.26, 0, 0),
        "wrist": (0.25, 0, 0),
        "hand": (0.08, 0, 0),
    }
    for j, name in enumerate(SMPL_JOINT_NAMES):
        if j == 0:
            continue
        key = name.split("_")[-1]
        d = np.array(step[key], dtype=float) + rng.normal(0, 0.005, 3)
        if name.startswith("right_"):
            d[0] = -d[0]
        rest[j] = rest[SMPL_TREE.parents[j]] + d
    return rest


def _random_rotations(rng, shape, scale: float) -> np.ndarray:
    return Rotation.from_rotvec(rng.normal(0, scale, shape + (3,)).reshape(-1, 3)).as_matrix().reshape(shape + (3, 3))


def _write_bvh(
    path: Path,
    rest: np.ndarray,
    frame_rot: np.ndarray,
    local_frames: np.ndarray,
    root_pos: np.ndarray,
    skip: tuple[str, ...] = (),
    bone_noise: np.ndarray | None = None,
) -> None:
    """A BVH of SMPL-named joints (minus ``skip``) whose joint s has the local frame ``frame_rot[s]`` (rest pose:
    bone offsets C_parent @ (t_c - t_p), not a T-pose) and global rotations G_smpl C^T, from SMPL local rotations
    ``local_frames`` (F, P, 3, 3). Channel orders cycle through ORDERS; the root and spine2 carry positions."""
    parents = list(SMPL_TREE.parents[:N])
    kept = [j for j in range(N) if SMPL_JOINT_NAMES[j] not in skip]
    src_parent = {}
    for j in kept:
        p = parents[j]
        while p >= 0 and p not in kept:
            p = parents[p]
        src_parent[j] = p
    glob = np.zeros_like(local_frames)
    for j in range(N):
        glob[:, j] = local_frames[:, j] if parents[j] < 0 else glob[:, parents[j]] @ local_frames[:, j]
    rest_src = rest + (0 if bone_noise is None else bone_noise)
    order = {j: ORDERS[k % len(ORDERS)] for k, j in enumerate(kept)}
    with_pos = {0, SMPL_JOINT_NAMES.index("spine2")}
    lines, cols = ["HIERARCHY"], []

    def offset(j):
        p = src_parent[j]
        return np.zeros(3) if p < 0 else frame_rot[p] @ (rest_src[j] - rest_src[p])

    def emit(j, depth):
        pad = "  " * depth
        head = "ROOT" if src_parent[j] < 0 else "JOINT"
        lines.append(f"{pad}{head} {SMPL_JOINT_NAMES[j]}")
        lines.append(pad + "{")
        lines.append(pad + "  OFFSET " + " ".join(f"{v:.9f}" for v in offset(j)))
        chans = [f"{a}rotation" for a in order[j]]
        if j in with_pos:
            chans = ["Xposition", "Yposition", "Zposition"] + chans
        lines.append(pad + f"  CHANNELS {len(chans)} " + " ".join(chans))
        cols.append(j)
        kids = [c for c in kept if src_parent[c] == j]
        for c in kids:
            emit(c, depth + 1)
        if not kids:
            lines.append(pad + "  End Site")
            lines.append(pad + "  {")
            lines.append(pad + "    OFFSET 0.0 0.05 0.0")
            lines.append(pad + "  }")
        lines.append(pad + "}")

    emit(0, 0)
    frames = len(local_frames)
    lines += ["MOTION", f"Frames: {frames}", "Frame Time: 0.0333333"]
    for f in range(frames):
        row = []
        for j in cols:
            g_src = glob[f, j] @ frame_rot[j].T
            p = src_parent[j]
            local = g_src if p < 0 else (glob[f, p] @ frame_rot[p].T).T @ g_src
            if j in with_pos:
                row += list(root_pos[f] if j == 0 else offset(j))
            row += list(Rotation.from_matrix(local).as_euler(order[j], degrees=True))
        lines.append(" ".join(f"{v:.9f}" for v in row))
    path.write_text("\n".join(lines) + "\n")


def _joint_map(rest: np.ndarray, frame_rot: np.ndarray, rng, skip=(), interpolated=None) -> dict:
    """The joint map of a BVH from :func:`_write_bvh`: bones to the SMPL child (a local vector for leaves, the
    source child otherwise), a random reference direction r (local C r; target r)."""
    joints = {}
    for j, name in enumerate(SMPL_JOINT_NAMES[:N]):
        if name in skip:
            continue
        kids = [c for c in range(N) if SMPL_TREE.parents[c] == j]
        spec = {"source": name}
        child = kids[0] if kids else None
        if child is not None and SMPL_JOINT_NAMES[child] not in skip:
            spec.update(bone=SMPL_JOINT_NAMES[child], target_child=SMPL_JOINT_NAMES[child])
            bone = rest[child] - rest[j]
        else:
            bone = rng.normal(size=3)
            spec.update(bone=(frame_rot[j] @ bone).tolist(), target_bone=bone.tolist())
        r = np.cross(bone, rng.normal(size=3))  # a reference direction across the bone
        spec.update(reference=(frame_rot[j] @ r).tolist(), target_reference=r.tolist())
        joints[name] = spec
    return {"name": "test", "joints": joints, "interpolated": interpolated or {}}


def _scene(seed=0, frames=6):
    rng = np.random.default_rng(seed)
    rest = _rest_joints(seed)
    frame_rot = _random_rotations(rng, (N,), 1.5)  # arbitrary local frames: the rest is no T-pose
    local = _random_rotations(rng, (frames, N), 0.5)
    root_pos = rng.normal(0, 50, (frames, 3))
    return rng, rest, frame_rot, local, root_pos


def test_bvh_round_trips_known_smpl_rotations(tmp_path):
    rng, rest, frame_rot, local, root_pos = _scene()
    path = tmp_path / "known.bvh"
    _write_bvh(path, rest, frame_rot, local, root_pos)
    skeleton, motion = read_bvh(path)
    assert sorted(skeleton.names) == sorted(SMPL_JOINT_NAMES[:N]) and motion.shape[0] == len(local)
    rest_pos = skeleton.rest_positions()
    thigh = rest_pos[skeleton.index("left_knee")] - rest_pos[skeleton.index("left_hip")]
    assert thigh @ np.array([0, -1.0, 0]) / np.linalg.norm(thigh) < np.cos(np.radians(10)), "rest must not be T"
    rot, pos = forward_kinematics(skeleton, motion)
    np.testing.assert_allclose(pos[:, 0], root_pos, atol=1e-6)
    jmap = joint_map_from_dict(_joint_map(rest, frame_rot, rng))
    out = retarget(skeleton, rot, jmap, RetargetTarget.from_rest(SMPL_TREE, SMPL_JOINT_NAMES, rest))
    np.testing.assert_allclose(out, local, atol=1e-6)


def _posed_directions(rest, local, parents, bones):
    glob = np.zeros_like(local)
    pos = np.zeros(local.shape[:2] + (3,))
    for j, p in enumerate(parents):
        glob[:, j] = local[:, j] if p < 0 else glob[:, p] @ local[:, j]
        pos[:, j] = 0 if p < 0 else pos[:, p] + np.einsum("fab,b->fa", glob[:, p], rest[j] - rest[p])
    d = np.stack([pos[:, c] - pos[:, a] for a, c in bones], 1)
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def test_retargeted_bone_directions_follow_the_source_with_fewer_joints(tmp_path):
    """A source with other proportions (bones up to ~25 degrees off SMPL's) and a 2-segment spine: mapped bones
    point where the source's do (within 2 degrees); spine1 takes half the pelvis -> spine2 rotation."""
    rng, rest, frame_rot, local, root_pos = _scene(seed=3, frames=8)
    spine1, spine2 = SMPL_JOINT_NAMES.index("spine1"), SMPL_JOINT_NAMES.index("spine2")
    local[:, spine1] = local[:, spine2]  # then the half-way rule is exact for spine1 too
    noise = rng.normal(0, 0.04, rest.shape)
    path = tmp_path / "fewer.bvh"
    _write_bvh(path, rest, frame_rot, local, root_pos, skip=("spine1",), bone_noise=noise)
    skeleton, motion = read_bvh(path)
    rot, pos = forward_kinematics(skeleton, motion)
    jmap = joint_map_from_dict(
        _joint_map(
            rest + noise, frame_rot, rng, skip=("spine1",), interpolated={"spine1": {"between": ["pelvis", "spine2"]}}
        )
    )
    out = retarget(skeleton, rot, jmap, RetargetTarget.from_rest(SMPL_TREE, SMPL_JOINT_NAMES, rest))
    bones = [(SMPL_TREE.parents[c], c) for c in range(1, N) if SMPL_TREE.parents[c] != spine1 and c != spine1]
    ours = _posed_directions(rest, out, SMPL_TREE.parents[:N], bones)
    src = np.stack(
        [pos[:, skeleton.index(SMPL_JOINT_NAMES[c])] - pos[:, skeleton.index(SMPL_JOINT_NAMES[a])] for a, c in bones], 1
    )
    src /= np.linalg.norm(src, axis=-1, keepdims=True)
    angle = np.degrees(np.arccos(np.clip((ours * src).sum(-1), -1, 1)))
    siblings = {
        c
        for a, c in bones
        if len([k for k in range(N) if SMPL_TREE.parents[k] == a]) > 1
        and c != [k for k in range(N) if SMPL_TREE.parents[k] == a][0]
    }
    mapped = [i for i, (a, c) in enumerate(bones) if c not in siblings]
    assert angle[:, mapped].max() < 2.0
    # Same proportions as SMPL: every rotation comes back, spine1's through the half-way rule.
    _write_bvh(path, rest, frame_rot, local, root_pos, skip=("spine1",))
    skeleton, motion = read_bvh(path)
    jmap = joint_map_from_dict(
        _joint_map(rest, frame_rot, rng, skip=("spine1",), interpolated={"spine1": {"between": ["pelvis", "spine2"]}})
    )
    out = retarget(
        skeleton,
        forward_kinematics(skeleton, motion)[0],
        jmap,
        RetargetTarget.from_rest(SMPL_TREE, SMPL_JOINT_NAMES, rest),
    )
    np.testing.assert_allclose(out, local, atol=1e-6)


def test_bad_bvh_names_file_and_line(tmp_path):
    rng, rest, frame_rot, local, root_pos = _scene(frames=3)
    path = tmp_path / "bad.bvh"
    _write_bvh(path, rest, frame_rot, local, root_pos)
    lines = path.read_text().splitlines()
    lines[-2] = lines[-2].replace(lines[-2].split()[5], "oops", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BvhError, match=rf"bad\.bvh, line {len(lines) - 1}: frame 1"):
        read_bvh(path)
    with pytest.raises(BvhError, match=r"line 3: unknown channel"):
        parse_bvh("HIERARCHY\nROOT a\n{ OFFSET 0 0 0 CHANNELS 1 Wrotation }\n", "x.bvh")
    with pytest.raises(BvhError, match=r"x\.bvh.*end of file"):
        parse_bvh("HIERARCHY\nROOT a\n{ OFFSET 0 0", "x.bvh")


def test_unit_detection_and_joint_map_errors(tmp_path):
    rng, rest, frame_rot, local, root_pos = _scene(frames=2)
    path = tmp_path / "u.bvh"
    _write_bvh(path, rest * 100.0, frame_rot, local, root_pos)  # centimetres
    skeleton, _ = read_bvh(path)
    assert detect_unit_scale(skeleton) == ("cm", 0.01)
    with pytest.raises(JointMapError, match="reference"):
        joint_map_from_dict({"joints": {"pelvis": {"source": "pelvis"}}})
    with pytest.raises(JointMapError, match="no joint"):
        jmap = joint_map_from_dict(
            {"joints": {"pelvis": {"source": "Hips", "bone": [1, 0, 0], "reference": [0, 0, 1]}}}
        )
        retarget(
            skeleton,
            np.tile(np.eye(3), (1, N, 1, 1)),
            jmap,
            RetargetTarget.from_rest(SMPL_TREE, SMPL_JOINT_NAMES, rest),
        )


def test_bandai_joint_map_is_valid_data():
    jmap = load_joint_map(ROOT / "lib" / "data" / "joint_maps" / "bandai.yaml")
    targets = {j.target for j in jmap.joints} | {i[0] for i in jmap.interpolated}
    assert targets <= set(SMPL_JOINT_NAMES) and len({j.source for j in jmap.joints}) == len(jmap.joints)


def test_make_motion_db_tool_splits_whole_recordings(tmp_path):
    from tools.make_motion_db import main

    rng, rest, frame_rot, local, root_pos = _scene(frames=9)
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a_walk_normal_001.bvh", "a_walk_feminine_001.bvh", "a_run_normal_002.bvh"):
        _write_bvh(src / name, rest, frame_rot, local, root_pos)
    (tmp_path / "map.yaml").write_text(yaml.safe_dump(_joint_map(rest, frame_rot, rng)))
    out = tmp_path / "db"
    assert (
        main(
            [
                "--source",
                str(src),
                "--joint-map",
                str(tmp_path / "map.yaml"),
                "--body",
                "smpl",
                "--out",
                str(out),
                "--fps",
                "10",
            ]
        )
        == 0
    )
    train, test = load_db(out / "bandai_train_db.pt", "smpl"), load_db(out / "bandai_test_db.pt", "smpl")
    assert sorted(set(train["vid_name"])) == ["a_run_normal_002.bvh", "a_walk_normal_001.bvh"]
    assert list(set(test["vid_name"])) == ["a_walk_feminine_001.bvh"] and len(test["theta"]) == 3  # 30 Hz -> 10
    run, walk = (train["beta"][train["vid_name"] == name] for name in ("a_run_normal_002.bvh", "a_walk_normal_001.bvh"))
    assert np.all(run == run[0]) and np.all(walk == walk[0]) and not np.allclose(run[0], walk[0])  # one per recording


def test_make_motion_db_tool_names_a_bad_file_and_its_line(tmp_path):
    from tools.make_motion_db import main

    rng, rest, frame_rot, local, root_pos = _scene(frames=3)
    src = tmp_path / "src"
    src.mkdir()
    _write_bvh(src / "broken_take.bvh", rest, frame_rot, local, root_pos)
    text = (src / "broken_take.bvh").read_text().splitlines()
    text[-1] = " ".join(text[-1].split()[:-1])  # the last frame misses a value
    (src / "broken_take.bvh").write_text("\n".join(text) + "\n")
    (tmp_path / "map.yaml").write_text(yaml.safe_dump(_joint_map(rest, frame_rot, rng)))
    with pytest.raises(SystemExit, match=rf"broken_take\.bvh, line {len(text)}: frame 2 has"):
        main(
            [
                "--source",
                str(src),
                "--joint-map",
                str(tmp_path / "map.yaml"),
                "--body",
                "smpl",
                "--out",
                str(tmp_path / "db"),
            ]
        )
