"""Speed of the solver against honest baselines measured in the same run, idle and under a background load.

Rows (skeletons/s, or meshes/s), each with its ratio to the published-structure baseline:
  published   the published algorithm's structure re-implemented plainly (bench/published_baseline.py): rest joints
              from mesh forwards, PR-C V1 and AnalyIK one joint at a time, swing/twist split, axis-angle out
  published ik only   its PR-C V1 + AnalyIK alone, on rest joints given (no Shape Inverse, no mesh forwards)
  adam        an optimisation-based fit as users run instead (SMPLify-style without an image term): Adam on pose
              and shape to the target joints through the mesh forward, with a shape prior; its MPVE is reported
  analyik     the project's SI + PR-C + AnalyIK (SkeletonSolver.solve without a network)
  mixik       the project's full path: SI + PR-C + AnalyIK + canonical skeleton + PAN + MixIK (no mesh)
  mixik xN    the same over N batch chunks side by side (the thread policy, lib/engine/threads.py)
  mixik low-latency   the same recorded once per batch size (lib/solver/low_latency.py), for live capture
  ... bf16    the same with the network's matrix products in bfloat16 (MODEL.MLP.MATMUL_PRECISION), whose MPVE is
              printed beside float32's
  mesh        the project's body model forward vs smplx.lbs.lbs on the same inputs
Every figure is measured on an idle machine and again under a load the bench starts itself (one busy process per
core, ended by the bench). Timing loops run torch on one intra-op thread (the policy); the 'intra-op' row shows
what torch's default threads do under the same load. Float32. Writes the table and a JSON file.

Usage: python bench/bench_solver.py [--full] [--device cpu|cuda] [--json PATH] [--no-load]
  quick (default, well under a minute idle): batches 1 and 1024, Adam on 16 skeletons x 100 iterations, the
          published baselines measured idle only
  --full: batches 1, 1024 and 16384, Adam on 64 skeletons x 200 iterations, meshes at 256, peak RSS streaming
          100,000 frames
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import published_baseline as published  # noqa: E402

from lib.core.smpl.config import get_cfg  # noqa: E402
from lib.engine.build import build_body_model, build_network, build_solver, select_device  # noqa: E402
from lib.engine.metrics import mpve  # noqa: E402
from lib.kinematics.rotations import rotmat_to_axis_angle  # noqa: E402

try:  # absent in versions before the thread policy / the low-latency path: the bench then skips those rows
    from lib.engine.threads import available_cores, map_chunks
    from lib.solver.low_latency import LowLatencySolver
except ImportError:  # pragma: no cover
    map_chunks = LowLatencySolver = None
try:  # absent before test-time mirror averaging: the bench then skips its row
    from lib.solver.mirror import MirrorAveragedNetwork
except ImportError:  # pragma: no cover
    MirrorAveragedNetwork = None

    def available_cores() -> int:
        return len(os.sched_getaffinity(0))


def best_time(fn, device: torch.device, min_seconds: float, min_repeats: int = 2) -> float:
    """Seconds of one call: the best of repeated calls after a warm-up, repeated for at least ``min_seconds``."""
    start = time.perf_counter()
    fn()  # warm-up
    if time.perf_counter() - start > 2 * min_seconds:
        min_repeats = 1  # slow rows (the baselines at large batches): one timed call after the warm-up
    times, spent = [], 0.0
    while len(times) < min_repeats or spent < min_seconds:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        spent += times[-1]
    return min(times)


@contextmanager
def background_load(processes: int):
    """``processes`` busy Python processes (one per core) for the duration; ended (by their ids) on exit."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    time.sleep(0.5)
    try:
        yield
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()


@contextmanager
def intra_op_threads(count: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def sample_bodies(body, batch: int, seed: int, device: torch.device):
    """Random poses (0.3 rad per axis) (B, P, 3), shapes (B, K) and their root-relative posed joints (B, J, 3)."""
    gen = torch.Generator().manual_seed(seed)
    pose = (torch.randn(batch, body.num_pose_joints, 3, generator=gen) * 0.3).to(device)
    betas = torch.randn(batch, body.num_betas, generator=gen).to(device)
    with torch.no_grad():
        joints = torch.cat([body.posed_joints(p, b) for p, b in zip(pose.split(1024), betas.split(1024), strict=True)])
    return pose, betas, joints - joints[:, :1]


def adam_fit(body, tree, joints: torch.Tensor, iterations: int, prior: float = 1e-3, lr: float = 0.05):
    """SMPLify-style fit without an image term: axis-angle pose and betas from zero, Adam on the squared joint error
    (joints from the full mesh forward, root-relative) plus ``prior * |betas|^2``. Returns pose (B, P, 3), betas."""
    batch = joints.shape[0]
    pose = joints.new_zeros(batch, body.num_pose_joints, 3, requires_grad=True)
    betas = joints.new_zeros(batch, body.num_betas, requires_grad=True)
    optimizer = torch.optim.Adam([pose, betas], lr=lr)
    skeleton = list(tree.skeleton)
    for _ in range(iterations):
        optimizer.zero_grad()
        posed = body(pose, betas).joints
        posed = posed - posed[:, :1]
        loss = (posed[:, skeleton] - joints[:, skeleton]).pow(2).sum(-1).mean() + prior * betas.pow(2).mean()
        loss.backward()
        optimizer.step()
    return pose.detach(), betas.detach()


def stream_child(frames: int) -> None:
    """Fit ``frames`` skeletons through the user API (``load_solver().fit``: full MixIK in chunks of 1024, no meshes)
    and print the process's peak RSS in MB."""
    from lib.api import load_solver

    solver = load_solver("smpl")
    body = solver.body_model
    joints = torch.cat(
        [
            sample_bodies(body, min(1024, frames - start), start, torch.device("cpu"))[2]
            for start in range(0, frames, 1024)
        ]
    )
    fit = solver.fit(joints.numpy(), batch_size=1024)
    print(json.dumps({"frames": len(fit), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full", action="store_true", help="the issue's complete table (minutes)")
    parser.add_argument("--json", default="output/bench_solver.json", help="where the figures are written")
    parser.add_argument("--no-load", action="store_true", help="skip the measurements under background load")
    parser.add_argument("--stream-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stream_child:
        return stream_child(args.stream_child)

    torch.set_num_threads(1)  # the thread policy; the 'intra-op' rows set torch's default count themselves
    default_threads = available_cores()
    cfg = get_cfg(None, ["DEVICE", args.device])
    device = select_device(cfg.DEVICE)
    body = build_body_model(cfg, device)
    solver = build_solver(cfg, body)
    network = build_network(cfg, device, "MODEL.PRETRAINED").eval()
    # the same weights with bfloat16 matrix products (MODEL.MLP.MATMUL_PRECISION); absent in older commits of this
    # code, which the bench also measures (before/after)
    network_bf16 = copy.deepcopy(network)
    has_bf16 = hasattr(network_bf16, "set_matmul_precision")
    if has_bf16:
        network_bf16.set_matmul_precision("bfloat16")
    tree = solver.tree
    pinv = solver.shape_inverse.pinv
    # MODEL.MIRROR_AVERAGE (the open eval configs and load_solver): the network also reads the mirrored skeleton
    network_mirror = (
        None
        if MirrorAveragedNetwork is None
        else MirrorAveragedNetwork(network, tree, body.rest_joints(torch.zeros(1, body.num_betas, device=device))[0])
    )
    min_seconds = 1.0 if args.full else 0.25
    batches = (1, 1024, 16384) if args.full else (1, 1024)
    workers = available_cores()

    low_latency = LowLatencySolver(solver, network) if LowLatencySolver is not None else None
    low_latency_bf16 = LowLatencySolver(solver, network_bf16) if LowLatencySolver is not None else None

    def skeleton_rows(batch: int, joints: torch.Tensor) -> dict:
        with torch.no_grad():
            rest = solver.rest_skeleton(solver.shape_inverse(joints))  # given to the 'ik only' row
        rows = {
            "published": lambda: published.solve(tree, body, pinv, joints),
            "published ik only": lambda: published.analytic_ik(tree, rest, published.refine_v1(tree, rest, joints)),
            "analyik": lambda: solver.solve(joints),
            "mixik": lambda: solver.solve(joints, network),
        }
        if has_bf16:
            rows["mixik bf16"] = lambda: solver.solve(joints, network_bf16)
        if network_mirror is not None:
            rows["mixik mirror-averaged"] = lambda: solver.solve(joints, network_mirror)
        if LowLatencySolver is not None and batch <= 16:
            rows["mixik low-latency"] = lambda: low_latency.solve(joints)
            if has_bf16:
                rows["mixik low-latency bf16"] = lambda: low_latency_bf16.solve(joints)
        if map_chunks is not None and batch >= 512 and workers > 1:
            rows[f"mixik x{workers}"] = lambda: map_chunks(lambda j: solver.solve(j, network), (joints,), workers)
            if has_bf16:
                rows[f"mixik bf16 x{workers}"] = lambda: map_chunks(
                    lambda j: solver.solve(j, network_bf16), (joints,), workers
                )
            rows[f"analyik x{workers}"] = lambda: map_chunks(lambda j: solver.solve(j), (joints,), workers)
        return rows

    results: dict[str, dict] = {}

    def measure(batch: int, fns: dict, loaded: bool) -> None:
        with torch.no_grad():
            for name, fn in fns.items():
                seconds = best_time(fn, device, min_seconds)
                entry = results.setdefault(f"{name} @{batch}", {"name": name, "batch": batch})
                entry["load" if loaded else "idle"] = {"per_s": batch / seconds, "ms": seconds * 1e3}

    skeletons = {batch: sample_bodies(body, batch, 1, device) for batch in batches}
    mesh_batch = 256 if args.full else 64
    pose_m, betas_m, _ = sample_bodies(body, mesh_batch, 2, device)
    flat_pose = pose_m.reshape(mesh_batch, -1)

    def mesh_fns() -> dict:
        return {
            "mesh smplx.lbs": lambda: published.smplx_lbs(body, betas_m, flat_pose),
            "mesh ours": lambda: body(pose_m, betas_m),
        }

    def run_all(loaded: bool) -> None:
        for batch, (_, _, joints) in skeletons.items():
            fns = skeleton_rows(batch, joints)
            if loaded and not args.full:  # quick mode: the baselines (seconds per call) only idle, for the ratios
                fns = {name: fn for name, fn in fns.items() if not name.startswith("published")}
            measure(batch, fns, loaded)
        measure(mesh_batch, mesh_fns(), loaded)
        if 1024 in skeletons:  # torch's default intra-op threads, the way the solver ran before the policy
            with intra_op_threads(default_threads):
                joints = skeletons[1024][2]
                measure(
                    1024,
                    {
                        f"analyik intra-op {default_threads}": lambda: solver.solve(joints),
                        f"mixik intra-op {default_threads}": lambda: solver.solve(joints, network),
                        **(
                            {f"mixik bf16 intra-op {default_threads}": lambda: solver.solve(joints, network_bf16)}
                            if has_bf16
                            else {}
                        ),
                    },
                    loaded,
                )

    load_before = os.getloadavg()
    run_all(loaded=False)
    if not args.no_load:
        with background_load(available_cores()):
            run_all(loaded=True)

    # Accuracy beside speed: the optimisation baseline and MixIK on the same noise-free skeletons.
    adam_batch, iterations = (64, 200) if args.full else (16, 100)
    pose_a, betas_a, joints_a = sample_bodies(body, adam_batch, 3, device)
    with torch.no_grad():
        truth = body(pose_a, betas_a).vertices
    start = time.perf_counter()
    fit_pose, fit_betas = adam_fit(body, tree, joints_a, iterations)
    adam_seconds = time.perf_counter() - start
    with torch.no_grad():
        solution = solver.solve(joints_a, network)
        accuracy = {
            "adam": mpve(body(fit_pose, fit_betas).vertices, truth).mean().item(),
            "mixik": mpve(body(solution.rotmats, solution.betas).vertices, truth).mean().item(),
            "mixik bf16": mpve(body(solver.solve(joints_a, network_bf16).rotmats, solution.betas).vertices, truth)
            .mean()
            .item(),
            "analyik": mpve(body(solution.analytic_rotmats, solution.betas).vertices, truth).mean().item(),
        }
        _, published_pose = published.solve(tree, body, pinv, joints_a)
        agreement = (rotmat_to_axis_angle(solution.analytic_rotmats) - published_pose).abs().max().item()
    results[f"adam @{adam_batch}"] = {
        "name": f"adam {iterations} it",
        "batch": adam_batch,
        "idle": {"per_s": adam_batch / adam_seconds, "ms": adam_seconds * 1e3},
    }

    stream = None
    if args.full:
        child = subprocess.run([sys.executable, __file__, "--stream-child", "100000"], capture_output=True, text=True)
        stream = json.loads(child.stdout.strip().splitlines()[-1]) if child.returncode == 0 else {"error": child.stderr}

    report(results, accuracy, stream, load_before, device, Path(args.json), args.full)
    print(f"published baseline vs the project's AnalyIK: largest axis-angle difference {agreement:.1e} rad")


def report(
    results: dict, accuracy: dict, stream: dict | None, load_before: tuple, device: torch.device, path: Path, full: bool
) -> None:
    def by_batch(name: str) -> dict:
        return {r["batch"]: r["idle"] for r in results.values() if r["name"] == name}

    published_full, published_ik, smplx_mesh = (
        by_batch("published"),
        by_batch("published ik only"),
        by_batch("mesh smplx.lbs"),
    )
    print(
        f"device {device}, torch {torch.__version__}, cores {available_cores()}, "
        f"load average before {load_before[0]:.2f}; ratios: idle rate over the published baseline's (meshes: over "
        "smplx.lbs) and over its PR-C + AnalyIK alone"
    )
    print(
        f"{'row':<24}{'batch':>6} | {'idle /s':>9} {'ms':>9} {'x pub':>7} {'x ik':>6} | {'load /s':>9} {'ms':>9} "
        f"{'load/idle':>9}"
    )
    for entry in results.values():
        idle, batch = entry["idle"], entry["batch"]
        if entry["name"].startswith("mesh"):
            ratios = (smplx_mesh.get(batch), None)
        else:
            ratios = (published_full.get(batch), published_ik.get(batch))
        cells = [f"{idle['per_s'] / r['per_s']:.2f}" if r else "-" for r in ratios]
        line = f"{entry['name']:<24}{batch:>6} | {idle['per_s']:>9.0f} {idle['ms']:>9.2f} {cells[0]:>7} {cells[1]:>6} |"
        loaded = entry.get("load")
        if loaded:
            line += f" {loaded['per_s']:>9.0f} {loaded['ms']:>9.2f} {loaded['per_s'] / idle['per_s']:>9.2f}"
        print(line)
    print("MPVE on the same noise-free skeletons (mm): " + ", ".join(f"{k} {v:.2f}" for k, v in accuracy.items()))
    mixik = results.get("mixik @1024", {}).get("idle")
    adam = next((r["idle"] for r in results.values() if r["name"].startswith("adam")), None)
    if mixik and adam:
        print(f"MixIK @1024 vs the Adam fit: {mixik['per_s'] / adam['per_s']:.0f}x faster")
    fastest = max(
        (r for r in results.values() if r["name"].startswith("mixik") and r["batch"] == 1024),
        key=lambda r: r["idle"]["per_s"],
        default=None,
    )
    if fastest:
        print(f"fastest full MixIK row at batch 1024: {fastest['name']}, {fastest['idle']['per_s']:.0f}/s idle")
    if stream:
        print(f"streaming 100,000 frames (full MixIK, chunks of 1024): {stream}")
    record = {
        "device": str(device),
        "torch": torch.__version__,
        "cores": available_cores(),
        "full": full,
        "load_average_before": load_before,
        "rows": list(results.values()),
        "mpve_mm": accuracy,
        "stream": stream,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
