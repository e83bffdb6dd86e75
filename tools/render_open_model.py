"""Draw the open body models.

SMPL (24 joints): front and side views of the template (T-pose) and of a posed example, with the joints, the skeleton
and smplx's landmark vertices; loaded through plain `smplx.SMPL` (data_struct).
SMPL-X (55 joints, picked when the file has 55): the template (front, side), a face close-up with the 51 face
landmarks, and close-ups of both hands, flat (zero pose) and in a fist, from above and from the front, with the
finger joints and the fingertip vertex joints; loaded through plain `smplx.SMPLX` (use_pca=False,
flat_hand_mean=True) with its vertex-joint selector rebuilt from the file's `vid_` keys.

    python tools/render_open_model.py                      # data/open/smpl/OPEN_SMPL_NEUTRAL.npz -> docs/open_smpl.png
    python tools/render_open_model.py --model data/open/smplx/OPEN_SMPLX_NEUTRAL.npz     # -> docs/open_smplx.png
    python tools/render_open_model.py --model X.npz --out X.png --betas 2 0 ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import smplx  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import LineCollection, PolyCollection  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lib.kinematics.tree import SMPL_TREE, SMPLX_TREE  # noqa: E402

LEFT, RIGHT = 0, 1  # indices into the tree's hands

# An example pose (axis-angle per SMPL joint, radians): left hip flexed and knee bent, right arm lowered with the
# elbow bent forward, left arm raised with the elbow bent up, head turned, trunk slightly bent.
EXAMPLE_POSE = {
    1: (-1.0, 0.0, 0.0),  # L_hip: thigh forward
    4: (1.4, 0.0, 0.0),  # L_knee: shin back
    2: (0.2, 0.0, 0.15),  # R_hip
    16: (0.0, 0.0, 0.6),  # L_shoulder: arm up
    18: (0.0, 0.0, 1.3),  # L_elbow: forearm up
    17: (0.0, 0.0, 1.0),  # R_shoulder: arm down
    19: (0.0, 1.5, 0.0),  # R_elbow: forearm forward
    6: (0.25, 0.0, 0.0),  # spine2: bend forward
    12: (0.0, 0.4, 0.0),  # neck: turn left
    20: (0.0, 0.0, 0.5),  # L_wrist
}


def load_smpl(path: Path) -> smplx.SMPL:
    d = np.load(path, allow_pickle=False)
    return smplx.SMPL(
        model_path="",
        data_struct=smplx.utils.Struct(**d),
        vertex_ids={k[4:]: int(d[k]) for k in d if k.startswith("vid_")},
    )


def forward(model: smplx.SMPL, pose: dict, betas: np.ndarray):
    body_pose = torch.zeros(1, 3 * len(SMPL_TREE.pose_slots("body_pose")))
    for j, rv in pose.items():
        body_pose[0, 3 * (j - 1) : 3 * j] = torch.tensor(rv)
    b = torch.zeros(1, model.num_betas)
    b[0, : len(betas)] = torch.as_tensor(betas[: model.num_betas])
    with torch.no_grad():
        out = model(betas=b, body_pose=body_pose, global_orient=torch.zeros(1, 3))
    return out.vertices[0].numpy(), out.joints[0].numpy()


def draw_view(ax, verts, faces, joints, parents, view: str, title: str):
    """view 'front' (camera at +z, the body's left on the right) or 'side' (camera at -x, forward to the right)."""
    if view == "front":
        h, depth, cam = verts[:, 0], verts[:, 2], np.array([0.0, 0.0, 1.0])
        jh = joints[:, 0]
    else:
        h, depth, cam = verts[:, 2], -verts[:, 0], np.array([-1.0, 0.0, 0.0])
        jh = joints[:, 2]
    draw_mesh(ax, verts, faces, h, verts[:, 1], depth, cam)
    segs = [[(jh[j], joints[j, 1]), (jh[p], joints[p, 1])] for j, p in enumerate(parents) if p >= 0]
    ax.add_collection(LineCollection(segs, colors="k", linewidths=1.0, zorder=3))
    num_body = SMPL_TREE.num_pose_joints
    ax.scatter(jh[:num_body], joints[:num_body, 1], s=9, c="red", zorder=4)
    ax.scatter(jh[num_body:], joints[num_body:, 1], s=5, c="tab:blue", zorder=4)
    ax.set_aspect("equal")
    ax.autoscale_view()
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def draw_mesh(ax, verts, faces, h, v, depth, cam):
    """Flat-shaded faces facing the camera `cam` (a unit vector), painted far to near; h, v: image coordinates of
    the vertices, depth: their distance towards the camera."""
    tri = verts[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    facing = n @ cam > 0
    light = cam + np.array([0.3, 0.6, 0.0])
    light /= np.linalg.norm(light)
    shade = 0.25 + 0.75 * np.clip(n[facing] @ light, 0, 1)
    f = faces[facing]
    order = np.argsort(depth[f].mean(axis=1))  # far to near (painter's algorithm)
    poly = np.stack([h[f], v[f]], axis=-1)[order]
    colors = np.clip(shade[order, None] * np.array([0.72, 0.76, 0.86]), 0, 1)
    ax.add_collection(PolyCollection(poly, facecolors=colors, edgecolors="none", antialiased=False))


# ------------------------------------------------------------------------------------------------------- SMPL-X
# Views: image coordinates (horizontal, vertical), camera direction. 'top' looks down at the back of the hands with
# the body's back up in the image (so +x stays on the right).
VIEWS = {
    "front": ((0, 1.0), (1, 1.0), np.array([0.0, 0.0, 1.0])),
    "side": ((2, 1.0), (1, 1.0), np.array([-1.0, 0.0, 0.0])),
    "top": ((0, 1.0), (2, -1.0), np.array([0.0, 1.0, 0.0])),
}
SMPLX_FINGERS = ("index", "middle", "pinky", "ring", "thumb")  # SMPL-X slot order, 3 joints each
TIPS = ("thumb", "index", "middle", "ring", "pinky")  # the tree's hand order (4 slots a finger)
# Fist: flexion (radians) of the three joints of each finger (thumb: CMC, MCP, IP), and for the thumb also its swing
# across the palm towards the fingers (about the vertical axis).
FIST = {
    "index": (1.3, 1.7, 1.1),
    "middle": (1.3, 1.7, 1.1),
    "ring": (1.3, 1.7, 1.1),
    "pinky": (1.3, 1.7, 1.1),
    "thumb": (0.2, 0.5, 0.7),
}
THUMB_ACROSS = (0.7, 0.3, 0.0)


def load_smplx(path: Path) -> smplx.SMPLX:
    """Plain smplx.SMPLX on the file, with full-rotation hand poses (zero = the file's flat hand) and its vertex
    joints taken from the file's `vid_` keys (smplx's own SMPL-X ids belong to the licensed topology)."""
    d = np.load(path, allow_pickle=False)
    model = smplx.SMPLX(
        model_path=str(path), use_pca=False, flat_hand_mean=True, num_betas=10, num_expression_coeffs=10
    )
    model.vertex_joint_selector = smplx.vertex_joint_selector.VertexJointSelector(
        vertex_ids={k[4:]: int(d[k]) for k in d.files if k.startswith("vid_")}
    )
    return model


def hand_index(side: str) -> int:
    return LEFT if side == "L" else RIGHT


def finger_slots(side: str) -> dict:
    first = SMPLX_TREE.hand_pose_slots[hand_index(side)].start
    return {name: [first + 3 * k + i for i in range(3)] for k, name in enumerate(SMPLX_FINGERS)}


def fist_pose(rest_joints: np.ndarray, side: str) -> np.ndarray:
    """(15, 3) axis-angle hand pose: every finger joint flexed about the axis that turns the finger's rest direction
    (first -> third joint) towards the palm (-y); the thumb also swings across the palm. (The zero-pose frames are
    the world axes; the fingers' joints all turn about one axis, so their local rotations are these world ones.)"""
    hand_slots = SMPLX_TREE.hand_pose_slots[hand_index(side)]
    pose = np.zeros((len(hand_slots), 3))
    for name, slots in finger_slots(side).items():
        d = rest_joints[slots[2]] - rest_joints[slots[0]]
        axis = np.cross(d, [0.0, -1.0, 0.0])
        axis /= np.linalg.norm(axis)
        across = np.array([0.0, 1.0 if side == "L" else -1.0, 0.0])  # turns the thumb towards the fingers
        for i, slot in enumerate(slots):
            pose[slot - hand_slots.start] = FIST[name][i] * axis + (
                THUMB_ACROSS[i] * across if name == "thumb" else 0.0
            )
    return pose


def smplx_forward(model: smplx.SMPLX, left=None, right=None):
    kw = {group.name: torch.zeros(1, 3 * group.size) for group in SMPLX_TREE.pose_groups}
    for name, hand in (("left_hand_pose", left), ("right_hand_pose", right)):
        if hand is not None:
            kw[name] = torch.as_tensor(hand, dtype=torch.float32).reshape(1, -1)
    kw.update(betas=torch.zeros(1, model.num_betas), expression=torch.zeros(1, model.num_expression_coeffs))
    with torch.no_grad():
        out = model(**kw)
    return out.vertices[0].numpy().astype(np.float64), out.joints[0].numpy().astype(np.float64)


def draw_close(ax, verts, faces, joints, parents, view, box, title, joint_ids, tip_ids=(), landmark_ids=()):
    """A close-up: the mesh inside `box` ((lo, hi) 3D corners), the bones among `joint_ids`, the joints (red),
    fingertip vertex joints (green) and face landmarks (orange)."""
    (hi_, hs), (vi, vs), cam = VIEWS[view]
    lo, hi = np.asarray(box[0]), np.asarray(box[1])
    keep = np.all((verts >= lo) & (verts <= hi), axis=1)
    f = faces[keep[faces].all(axis=1)]
    depth = verts @ cam
    draw_mesh(ax, verts, f, hs * verts[:, hi_], vs * verts[:, vi], depth, cam)
    J = np.stack([hs * joints[:, hi_], vs * joints[:, vi]], axis=1)
    ids = set(joint_ids)
    segs = [[J[j], J[parents[j]]] for j in joint_ids if parents[j] in ids]
    segs += [[J[t], J[d]] for t, d in tip_ids]
    ax.add_collection(LineCollection(segs, colors="k", linewidths=0.9, zorder=3))
    ax.scatter(J[list(joint_ids), 0], J[list(joint_ids), 1], s=12, c="red", zorder=4)
    if tip_ids:
        t = [t for t, _ in tip_ids]
        ax.scatter(J[t, 0], J[t, 1], s=16, c="limegreen", edgecolors="k", linewidths=0.4, zorder=5)
    if len(landmark_ids):
        ax.scatter(J[list(landmark_ids), 0], J[list(landmark_ids), 1], s=7, c="darkorange", zorder=5)
    ax.set_xlim(*sorted((hs * lo[hi_], hs * hi[hi_])))
    ax.set_ylim(*sorted((vs * lo[vi], vs * hi[vi])))
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def render_smplx(path: Path, out: Path, dpi: int) -> None:
    model = load_smplx(path)
    faces = model.faces.astype(np.int64)
    parents = model.parents.numpy()
    rest_v, rest_j = smplx_forward(model)
    fist_v, fist_j = smplx_forward(model, fist_pose(rest_j, "L"), fist_pose(rest_j, "R"))
    fig = plt.figure(figsize=(16, 13.5))
    grid = fig.add_gridspec(3, 4, height_ratios=[1.35, 1, 1])
    ax = fig.add_subplot(grid[0, :2])
    num_pose, num_slots = SMPLX_TREE.num_pose_joints, SMPLX_TREE.num_joints  # slots past the pose: vertex joints
    draw_view(ax, rest_v, faces, rest_j[:num_pose], parents, "front", "template (zero pose, zero betas): front")
    ax.scatter(rest_j[num_pose:num_slots, 0], rest_j[num_pose:num_slots, 1], s=5, c="tab:blue", zorder=4)
    ax = fig.add_subplot(grid[0, 2])
    draw_view(ax, rest_v, faces, rest_j[:num_pose], parents, "side", "side")
    ax = fig.add_subplot(grid[0, 3])
    face = [slot for group in ("jaw_pose", "leye_pose", "reye_pose") for slot in SMPLX_TREE.pose_slots(group)]
    head_slot = SMPLX_TREE.parents[face[0]]
    head = rest_j[head_slot]
    # smplx's joint output: the tree's slots, then 51 face landmarks; its first 5 vertex joints are nose, eyes, ears
    draw_close(
        ax,
        rest_v,
        faces,
        rest_j,
        parents,
        "front",
        (head + [-0.1, -0.09, -0.2], head + [0.1, 0.1, 0.2]),
        "face: jaw, eyes (red), 51 landmarks (orange), nose / eye / ear vertex joints",
        [head_slot] + face,
        landmark_ids=list(range(num_slots, len(rest_j))) + list(range(num_pose, num_pose + 5)),
    )
    for r, side in enumerate(("L", "R")):
        hand = SMPLX_TREE.hands[hand_index(side)]  # wrist, then per finger (TIPS order) 3 joints, tip
        wrist = hand[0]
        sx = 1.0 if side == "L" else -1.0
        tips = [(hand[4 + 4 * k], finger_slots(side)[name][2]) for k, name in enumerate(TIPS)]
        joint_ids = [wrist] + sum(finger_slots(side).values(), [])
        c = rest_j[wrist]
        box = (c + [min(-0.03 * sx, 0.22 * sx), -0.12, -0.1], c + [max(-0.03 * sx, 0.22 * sx), 0.08, 0.12])
        box = (np.minimum(box[0], box[1]), np.maximum(box[0], box[1]))
        for k, (verts, joints, what) in enumerate(
            ((rest_v, rest_j, "flat (zero hand pose)"), (fist_v, fist_j, "fist"))
        ):
            name = "left" if side == "L" else "right"
            for m, view in enumerate(("top", "front")):
                ax = fig.add_subplot(grid[1 + r, 2 * k + m])
                vb = box if view == "top" else (box[0] + [0, 0.04, 0], box[1] - [0, 0.04, 0])
                draw_close(
                    ax,
                    verts,
                    faces,
                    joints,
                    parents,
                    view,
                    vb,
                    f"{name} hand, {what}: " + ("from above" if view == "top" else "from the front"),
                    joint_ids,
                    tip_ids=tips,
                )
    fig.suptitle(
        f"{path.name}: {len(rest_v)} vertices, {len(faces)} faces, {num_pose} joints (red), vertex joints "
        f"(blue; fingertips green); hands from above: the back of the hand, the body behind it at the top",
        fontsize=10,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    print(f"wrote {out}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "data/open/smpl/OPEN_SMPL_NEUTRAL.npz")
    parser.add_argument("--out", type=Path, default=None, help="default: docs/open_smpl.png or docs/open_smplx.png")
    parser.add_argument("--betas", type=float, nargs="*", default=[], help="shape of the posed example")
    parser.add_argument("--dpi", type=int, default=110)
    args = parser.parse_args(argv)
    with np.load(args.model, allow_pickle=False) as d:
        is_smplx = d["kintree_table"].shape[1] == SMPLX_TREE.num_pose_joints
    if is_smplx:
        render_smplx(args.model, args.out or ROOT / "docs/open_smplx.png", args.dpi)
        return
    args.out = args.out or ROOT / "docs/open_smpl.png"
    model = load_smpl(args.model)
    faces = model.faces.astype(np.int64)
    parents = model.parents.numpy()
    rest_v, rest_j = forward(model, {}, np.zeros(0))
    pose_v, pose_j = forward(model, EXAMPLE_POSE, np.asarray(args.betas))
    fig, axes = plt.subplots(1, 4, figsize=(16, 6.2), gridspec_kw={"width_ratios": [1.9, 0.8, 1.9, 0.8]})
    draw_view(axes[0], rest_v, faces, rest_j, parents, "front", "template (zero pose, zero betas): front")
    draw_view(axes[1], rest_v, faces, rest_j, parents, "side", "side")
    btxt = f", betas {args.betas}" if args.betas else ""
    draw_view(axes[2], pose_v, faces, pose_j, parents, "front", f"posed example{btxt}: front")
    draw_view(axes[3], pose_v, faces, pose_j, parents, "side", "side")
    fig.suptitle(
        f"{args.model.name}: {len(rest_v)} vertices, {len(faces)} faces, "
        f"{SMPL_TREE.num_pose_joints} joints (red), smplx landmark vertices (blue)",
        fontsize=10,
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=args.dpi)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
