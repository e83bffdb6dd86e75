"""``fit.py``: a joints file in, smplx parameters, meshes, a report and pictures out (docs in ``fit.py --help``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lib.api import BODY_ALIASES, UNIT_SCALE, BodyFit, load_solver
from lib.data.user_joints import JOINT_ORDERS, read_joints, skeleton_bones

MESH_FORMATS = ("auto", "obj", "ply", "npz", "none")
MAX_MESH_FILES = 100  # --mesh auto: .obj per frame up to this many frames, else one vertices .npz
SHEET_FRAMES = 6  # frames on the contact sheet of a sequence
WARN_MPJPE_MM = 10.0  # a frame fitting worse than this gets a warning
WARN_BONE_SPREAD = 0.05  # relative spread of one bone's length over the sequence worth a warning
WARN_BETA = 4.0  # |beta| beyond this is an unusual body: wrong units or joint order?

EPILOG = """joint orders: {orders}, or a JSON file (a list naming every input column, e.g. a 29-joint HybrIK
skeleton's names, or an object {{"pelvis": 0, "left_hip": 4, ...}}); 'auto' picks a built-in order by the joint count.
SMPL-X needs the fingertips (smplx127, smplx76 or smplx65). Outputs in --out: params.npz (smplx-convention
parameters), meshes/ (or vertices.npz), fit_report.json, render*.png."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fit.py",
        description="Fit SMPL / SMPL-X bodies to 3D joints (SMPL-IKS: SI, PR-C, AnalyIK, MixIK).",
        epilog=EPILOG.format(orders=", ".join(JOINT_ORDERS)),
    )
    parser.add_argument("--body", default="smpl", help="smpl or smplx (default smpl)")
    parser.add_argument("--joints", required=True, help="joints file: .npy, .npz, .json or .csv, (J, 3) or (T, J, 3)")
    parser.add_argument("--key", default=None, help="the array's name in an .npz / .json holding several")
    parser.add_argument("--joint-order", default="auto", help="auto, a built-in order or a .json mapping")
    parser.add_argument(
        "--units",
        default="auto",
        choices=("auto", *UNIT_SCALE),
        help="auto: metres, with mm / cm detected and named; m, cm, mm: converted",
    )
    parser.add_argument("--out", default="fit_output", help="output directory (default ./fit_output)")
    parser.add_argument(
        "--mesh",
        default="auto",
        choices=MESH_FORMATS,
        help=f"obj / ply: a file per frame; npz: one vertices.npz; auto (default): obj up to "
        f"{MAX_MESH_FILES} frames, else npz; none",
    )
    parser.add_argument("--render", action="store_true", help="PNG pictures of the mesh with the input skeleton")
    parser.add_argument(
        "--frames", default=None, help="frames to render, e.g. 0,10,20 (one PNG each); default: a contact sheet"
    )
    parser.add_argument("--fps", type=float, default=None, help="frame rate, stored in params.npz")
    parser.add_argument("--model", default=None, help="body model file (default: the open model)")
    parser.add_argument("--checkpoint", default="default", help="PAN checkpoint; 'none' for AnalyIK only")
    parser.add_argument(
        "--no-mirror-average",
        action="store_true",
        help="the paper's MixIK: the network's twists without averaging them with its reading of the mirrored "
        "skeleton (MODEL.MIRROR_AVERAGE)",
    )
    parser.add_argument("--config", default=None, help="a YAML config of this body")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=1024, help="frames solved at once")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="worker threads over batch chunks (0 = all cores; default: the config's THREADS, 1); "
        "torch itself runs one intra-op thread",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def run(args: argparse.Namespace) -> dict:
    """Fit the file and write the outputs; returns the report."""
    if args.body.lower() not in BODY_ALIASES:
        raise ValueError(f"--body {args.body}: use smpl or smplx")
    if args.batch_size < 1:
        raise ValueError("--batch-size must be at least 1")
    joints_path = Path(args.joints).expanduser().absolute()
    out_dir = Path(args.out).expanduser().absolute()
    joints = read_joints(joints_path, args.key)
    frames_to_render = _parse_frames(args.frames, 1 if joints.ndim == 2 else len(joints)) if args.render else None

    started = time.perf_counter()
    solver = load_solver(
        args.body,
        model=args.model,
        checkpoint=None if args.checkpoint == "none" else args.checkpoint,
        config=args.config,
        mirror_average=not args.no_mirror_average,
        device=args.device,
        threads=args.threads,
    )
    loaded = time.perf_counter()
    fit = solver.fit(joints, units=args.units, joint_order=args.joint_order, batch_size=args.batch_size, progress=True)
    fitted = time.perf_counter()

    out_dir.mkdir(parents=True, exist_ok=True)
    written = [write_params(out_dir / "params.npz", fit, args.fps, args.joint_order)]
    if args.mesh != "none":
        written.append(write_meshes(out_dir, fit, args.mesh))
    meshed = time.perf_counter()
    if args.render:
        written += render_frames(out_dir, fit, frames_to_render)
    report = fit_report(fit, joints_path, args)
    report["seconds"] = {
        "load": round(loaded - started, 3),
        "fit": round(fitted - loaded, 3),
        "write": round(meshed - fitted, 3),
        "render": round(time.perf_counter() - meshed, 3),
    }
    (out_dir / "fit_report.json").write_text(json.dumps(report, indent=2) + "\n")
    written.append(out_dir / "fit_report.json")
    mpjpe = report["mpjpe_mm"]
    print(
        f"fitted {len(fit)} frame(s) with {fit.method} ({fit.body}): MPJPE to the input mean {mpjpe['mean']:.2f} "
        f"mm, max {mpjpe['max']:.2f} mm"
    )
    for warning in report["warnings"]:
        print(f"warning: {warning}")
    print("wrote " + ", ".join(str(p) for p in written))
    return report


def _parse_frames(spec: str | None, count: int) -> list[int] | None:
    if spec is None:
        return None
    try:
        frames = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--frames {spec!r}: give frame numbers separated by commas, e.g. 0,10,20") from None
    bad = [f for f in frames if not 0 <= f < count]
    if bad or not frames:
        raise ValueError(f"--frames {spec!r}: the input has {count} frame(s), numbered 0 to {count - 1}")
    return frames


def write_params(path: Path, fit: BodyFit, fps: float | None, joint_order: str) -> Path:
    """params.npz: the smplx parameters (float32) plus body, method and fps (when given)."""
    arrays = {name: np.asarray(value, dtype=np.float32) for name, value in fit.to_numpy().items()}
    extra = {"body": np.array(fit.body), "method": np.array(fit.method), "joint_order": np.array(str(joint_order))}
    if fps is not None:
        extra["fps"] = np.array(fps, dtype=np.float32)
    np.savez(path, **arrays, **extra)
    return path


def write_meshes(out_dir: Path, fit: BodyFit, fmt: str) -> Path:
    """One mesh file per frame (trimesh), or vertices.npz (vertices (T, V, 3) float32, faces) for 'npz'."""
    import trimesh

    if fmt == "auto":
        fmt = "obj" if len(fit) <= MAX_MESH_FILES else "npz"
    if fmt == "npz":
        path = out_dir / "vertices.npz"
        np.savez(path, vertices=fit.vertex_tensor().cpu().numpy().astype(np.float32), faces=fit.faces)
        return path
    mesh_dir = out_dir / "meshes"
    mesh_dir.mkdir(exist_ok=True)
    faces = fit.faces
    for frame in tqdm(range(len(fit)), desc="meshes", unit="frame", dynamic_ncols=True):
        vertices = fit.vertex_tensor([frame])[0].cpu().numpy()
        trimesh.Trimesh(vertices, faces, process=False).export(mesh_dir / f"frame_{frame:05d}.{fmt}")
    return mesh_dir


def render_frames(out_dir: Path, fit: BodyFit, frames: list[int] | None) -> list[Path]:
    """render_<frame>.png for the requested frames; by default one picture (a contact sheet for a sequence)."""
    from lib.vis import body_views, render

    tree = fit.owner.tree
    bones = skeleton_bones(tree)
    joints = fit.input_joints.cpu().numpy()
    views = body_views(tree, joints)
    if frames is None:
        sheet = np.unique(np.linspace(0, len(fit) - 1, min(SHEET_FRAMES, len(fit))).round().astype(int)).tolist()
        name = "render.png" if len(fit) == 1 else "render_sheet.png"
        groups = [(name, sheet)]
    else:
        groups = [(f"render_{frame:05d}.png", [frame]) for frame in frames]
    paths = []
    for name, group in groups:
        vertices = fit.vertex_tensor(group).cpu().numpy()
        labels = [f"frame {f}" for f in group]
        paths.append(render(out_dir / name, tree, vertices, fit.faces, joints[group], bones, labels, views))
    return paths


def fit_report(fit: BodyFit, joints_path: Path, args: argparse.Namespace) -> dict:
    """Per-frame MPJPE to the input, bone-length residuals (input - fitted body) and warnings."""
    tree = fit.owner.tree
    mpjpe = fit.mpjpe_mm()
    residuals = fit.bone_residuals_mm()
    bones = [tree.joint_names[child] for _, child in skeleton_bones(tree)]
    warnings = []
    if fit.method == "analyik":
        warnings.append("no PAN checkpoint: AnalyIK only (twists about the bones are zero)")
    worst = int(mpjpe.argmax())
    bad = int((mpjpe > WARN_MPJPE_MM).sum())
    if bad:
        warnings.append(
            f"{bad} frame(s) fit worse than {WARN_MPJPE_MM:.0f} mm MPJPE (worst: frame {worst}, "
            f"{mpjpe[worst]:.1f} mm): the input's bone lengths are not those of one body of this model"
        )
    input_lengths = _bone_lengths(fit)
    if len(fit) > 1:
        spread = input_lengths.std(axis=0) / np.maximum(input_lengths.mean(axis=0), 1e-9)
        k = int(spread.argmax())
        if spread[k] > WARN_BONE_SPREAD:
            warnings.append(
                f"bone lengths change over the sequence (the {bones[k]} bone by {100 * spread[k]:.0f} % "
                "std / mean): noisy joints or a mix of people"
            )
    beta_max = float(np.abs(fit.to_numpy()["betas"]).max())
    if beta_max > WARN_BETA:
        warnings.append(f"unusual body shape (|beta| up to {beta_max:.1f}): check --units and --joint-order")
    return {
        "input": str(joints_path),
        "body": fit.body,
        "method": fit.method,
        "mirror_average": fit.method == "mixik" and bool(fit.owner.cfg.MODEL.MIRROR_AVERAGE),
        "frames": len(fit),
        "joint_order": args.joint_order,
        "units": args.units,
        "mpjpe_mm": {
            "mean": float(mpjpe.mean()),
            "max": float(mpjpe.max()),
            "per_frame": mpjpe.astype(float).round(4).tolist(),
        },
        "bone_length_residual_mm": {
            "mean_abs": float(np.abs(residuals).mean()),
            "max_abs": float(np.abs(residuals).max()),
            "per_bone_mean": {name: round(float(v), 4) for name, v in zip(bones, residuals.mean(axis=0), strict=True)},
            "per_frame_mean_abs": np.abs(residuals).mean(axis=1).astype(float).round(4).tolist(),
        },
        "warnings": warnings,
    }


def _bone_lengths(fit: BodyFit) -> np.ndarray:
    """(T, n_bones) the input's bone lengths (m)."""
    bones = skeleton_bones(fit.owner.tree)
    joints = fit.input_joints.cpu().numpy()
    return np.linalg.norm(joints[:, [c for _, c in bones]] - joints[:, [p for p, _ in bones]], axis=-1)
