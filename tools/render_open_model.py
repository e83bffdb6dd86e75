"""Draw the open SMPL-format model: front and side views of the template (T-pose) and of a posed example, with the
24 joints, the skeleton and smplx's landmark vertices. Loads the file through plain `smplx.SMPL` (data_struct).

    python tools/render_open_model.py                      # data/open/smpl/OPEN_SMPL_NEUTRAL.npz -> docs/open_smpl.png
    python tools/render_open_model.py --model X.npz --out X.png --betas 2 0 ...
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt                                            # noqa: E402
import numpy as np                                                          # noqa: E402
import smplx                                                                # noqa: E402
import torch                                                                # noqa: E402
from matplotlib.collections import LineCollection, PolyCollection          # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# An example pose (axis-angle per SMPL joint, radians): left hip flexed and knee bent, right arm lowered with the
# elbow bent forward, left arm raised with the elbow bent up, head turned, trunk slightly bent.
EXAMPLE_POSE = {
    1: (-1.0, 0.0, 0.0),     # L_hip: thigh forward
    4: (1.4, 0.0, 0.0),      # L_knee: shin back
    2: (0.2, 0.0, 0.15),     # R_hip
    16: (0.0, 0.0, 0.6),     # L_shoulder: arm up
    18: (0.0, 0.0, 1.3),     # L_elbow: forearm up
    17: (0.0, 0.0, 1.0),     # R_shoulder: arm down
    19: (0.0, 1.5, 0.0),     # R_elbow: forearm forward
    6: (0.25, 0.0, 0.0),     # spine2: bend forward
    12: (0.0, 0.4, 0.0),     # neck: turn left
    20: (0.0, 0.0, 0.5),     # L_wrist
}


def load_smpl(path: Path) -> smplx.SMPL:
    d = np.load(path, allow_pickle=False)
    return smplx.SMPL(model_path='', data_struct=smplx.utils.Struct(**d),
                      vertex_ids={k[4:]: int(d[k]) for k in d if k.startswith('vid_')})


def forward(model: smplx.SMPL, pose: dict, betas: np.ndarray):
    body_pose = torch.zeros(1, 69)
    for j, rv in pose.items():
        body_pose[0, 3 * (j - 1):3 * j] = torch.tensor(rv)
    b = torch.zeros(1, model.num_betas)
    b[0, :len(betas)] = torch.as_tensor(betas[:model.num_betas])
    with torch.no_grad():
        out = model(betas=b, body_pose=body_pose, global_orient=torch.zeros(1, 3))
    return out.vertices[0].numpy(), out.joints[0].numpy()


def draw_view(ax, verts, faces, joints, parents, view: str, title: str):
    """view 'front' (camera at +z, the body's left on the right) or 'side' (camera at -x, forward to the right)."""
    if view == 'front':
        h, depth, cam = verts[:, 0], verts[:, 2], np.array([0.0, 0.0, 1.0])
        jh = joints[:, 0]
    else:
        h, depth, cam = verts[:, 2], -verts[:, 0], np.array([-1.0, 0.0, 0.0])
        jh = joints[:, 2]
    tri = verts[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    facing = n @ cam > 0
    light = cam + np.array([0.3, 0.6, 0.0])
    light /= np.linalg.norm(light)
    shade = 0.25 + 0.75 * np.clip(n[facing] @ light, 0, 1)
    f = faces[facing]
    order = np.argsort(depth[f].mean(axis=1))                               # far to near (painter's algorithm)
    poly = np.stack([h[f], verts[f][..., 1]], axis=-1)[order]
    colors = np.clip(shade[order, None] * np.array([0.72, 0.76, 0.86]), 0, 1)
    ax.add_collection(PolyCollection(poly, facecolors=colors, edgecolors='none', antialiased=False))
    segs = [[(jh[j], joints[j, 1]), (jh[p], joints[p, 1])] for j, p in enumerate(parents) if p >= 0]
    ax.add_collection(LineCollection(segs, colors='k', linewidths=1.0, zorder=3))
    ax.scatter(jh[:24], joints[:24, 1], s=9, c='red', zorder=4)
    ax.scatter(jh[24:], joints[24:, 1], s=5, c='tab:blue', zorder=4)
    ax.set_aspect('equal')
    ax.autoscale_view()
    ax.set_title(title, fontsize=9)
    ax.axis('off')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', type=Path, default=ROOT / 'data/open/smpl/OPEN_SMPL_NEUTRAL.npz')
    parser.add_argument('--out', type=Path, default=ROOT / 'docs/open_smpl.png')
    parser.add_argument('--betas', type=float, nargs='*', default=[], help='shape of the posed example')
    parser.add_argument('--dpi', type=int, default=110)
    args = parser.parse_args(argv)
    model = load_smpl(args.model)
    faces = model.faces.astype(np.int64)
    parents = model.parents.numpy()
    rest_v, rest_j = forward(model, {}, np.zeros(0))
    pose_v, pose_j = forward(model, EXAMPLE_POSE, np.asarray(args.betas))
    fig, axes = plt.subplots(1, 4, figsize=(16, 6.2), gridspec_kw={'width_ratios': [1.9, 0.8, 1.9, 0.8]})
    draw_view(axes[0], rest_v, faces, rest_j, parents, 'front', 'template (zero pose, zero betas): front')
    draw_view(axes[1], rest_v, faces, rest_j, parents, 'side', 'side')
    btxt = f', betas {args.betas}' if args.betas else ''
    draw_view(axes[2], pose_v, faces, pose_j, parents, 'front', f'posed example{btxt}: front')
    draw_view(axes[3], pose_v, faces, pose_j, parents, 'side', 'side')
    fig.suptitle(f'{args.model.name}: {len(rest_v)} vertices, {len(faces)} faces, 24 joints (red), '
                 f'smplx landmark vertices (blue)', fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=args.dpi)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
