"""Pictures of fitted bodies: the mesh, shaded, with the input skeleton drawn over it, from the front and the side.

Orthographic projections drawn as 2D polygons (painter's algorithm, far faces first) with matplotlib's Agg backend:
no display, no OpenGL. The view follows the body, not the file's axes: "up" is the mean pelvis -> neck direction and
"front" the side the hips face, so skeletons in y-up or z-up files both stand upright.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection, PolyCollection  # noqa: E402

from lib.kinematics.tree import KinematicTree  # noqa: E402

MESH_RGB = np.array([0.72, 0.76, 0.82])
SKELETON_RGB = "#d62728"
LIGHT = np.array([0.3, 0.5, 1.0]) / np.linalg.norm([0.3, 0.5, 1.0])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(np.linalg.norm(v), 1e-12)


def body_views(tree: KinematicTree, joints: np.ndarray) -> dict[str, np.ndarray]:
    """World -> view rotations {'front', 'side'} (3, 3): rows are screen right, screen up, towards the camera.

    joints: (N, J, 3) the skeletons (tree slots) the view is chosen for (one view for a whole sequence).
    """
    name = {n: i for i, n in enumerate(tree.joint_names)}
    up = _unit((joints[:, name["neck"]] - joints[:, name["pelvis"]]).mean(axis=0))
    left = (joints[:, name["left_hip"]] - joints[:, name["right_hip"]]).mean(axis=0)
    left = _unit(left - left.dot(up) * up)
    forward = np.cross(left, up)
    return {
        "front": np.stack([left, up, forward]),  # facing the camera: the body's left on the screen's right
        "side": np.stack([forward, up, -left]),
    }  # from the body's right: it faces screen right


def draw_body(
    ax,
    vertices: np.ndarray,
    faces: np.ndarray,
    joints: np.ndarray,
    bones: list[tuple[int, int]],
    view: np.ndarray,
    centre: np.ndarray,
    half_size: float,
    title: str = "",
) -> None:
    """One orthographic view: mesh (V, 3) shaded, skeleton joints (J, 3) with ``bones`` (parent, child) over it."""
    v = (vertices - centre) @ view.T
    triangles = v[faces]  # (F, 3, 3)
    normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    shade = 0.35 + 0.65 * np.clip(normals @ LIGHT, 0.0, 1.0)
    order = np.argsort(triangles[:, :, 2].mean(axis=1))  # far first
    colours = np.clip(shade[order, None] * MESH_RGB, 0.0, 1.0)
    ax.add_collection(
        PolyCollection(
            triangles[order, :, :2], facecolors=colours, edgecolors="none", antialiased=False, rasterized=True, zorder=1
        )
    )
    j = (joints - centre) @ view.T
    ax.add_collection(LineCollection([j[[p, c], :2] for p, c in bones], colors=SKELETON_RGB, linewidths=1.4, zorder=3))
    used = sorted({k for bone in bones for k in bone})
    ax.scatter(j[used, 0], j[used, 1], s=6, c=SKELETON_RGB, zorder=4, linewidths=0)
    ax.set_xlim(-half_size, half_size)
    ax.set_ylim(-half_size, half_size)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def render(
    path: str | Path,
    tree: KinematicTree,
    vertices: np.ndarray,
    faces: np.ndarray,
    joints: np.ndarray,
    bones: list[tuple[int, int]],
    labels: list[str] | None = None,
    views: dict | None = None,
) -> Path:
    """A PNG of N frames: one frame's front and side views side by side, or one column per frame (front above side).

    vertices (N, V, 3), faces (F, 3), joints (N, J, 3) the input skeletons in tree slots.
    """
    views = views or body_views(tree, joints)
    count = len(vertices)
    centres = [(frame.min(axis=0) + frame.max(axis=0)) / 2 for frame in vertices]
    half = 0.55 * max(np.ptp(frame @ view.T, axis=0)[:2].max() for frame in vertices for view in views.values())
    rows, columns, panel = (1, 2, 3.4) if count == 1 else (2, count, 2.6)
    figure, axes = plt.subplots(rows, columns, figsize=(panel * columns, panel * rows), squeeze=False)
    for k in range(count):
        for v, (name, view) in enumerate(views.items()):
            ax = axes[0, v] if count == 1 else axes[v, k]
            label = (labels[k] + ", " if labels else "") + name
            draw_body(ax, vertices[k], faces, joints[k], bones, view, centres[k], half, label)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
