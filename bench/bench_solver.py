"""Speed of Shape Inverse + PR-C + AnalyIK, against a baseline measured in the same run.

Baseline: the reference's way of getting rest joints, two full mesh forwards per batch (zero shape, then the
estimated shape), with the same solver stages otherwise. Ours: rest joints from the precomputed linear map.
Usage: python bench/bench_solver.py [--body smpl|smplx] [--batch 1024] [--repeats 5] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.core.smpl.config import get_cfg as smpl_cfg  # noqa: E402
from lib.core.smplx.config import get_cfg as smplx_cfg  # noqa: E402
from lib.engine.build import build_body_model, build_solver, select_device  # noqa: E402
from lib.solver.analytic_ik import solve_rotations  # noqa: E402
from lib.solver.refine import refine_bone_lengths  # noqa: E402


def timed(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--body", default="smpl", choices=["smpl", "smplx"])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    cfg = (smpl_cfg if args.body == "smpl" else smplx_cfg)(None, ["DEVICE", args.device])
    device = select_device(cfg.DEVICE)
    body = build_body_model(cfg, device)
    solver = build_solver(cfg, body)
    tree = solver.tree
    gen = torch.Generator().manual_seed(0)
    pose = (torch.randn(args.batch, body.num_pose_joints, 3, generator=gen) * 0.3).to(device)
    betas = torch.randn(args.batch, body.num_betas, generator=gen).to(device)
    with torch.no_grad():
        joints = body(pose, betas).joints
        joints = joints - joints[:, :1]

        def ours():
            return solver.analytic(joints)

        zero_pose = torch.zeros_like(pose)

        def mesh_rest_joints(b):
            rest = body(zero_pose, b).joints_t
            return rest - rest[:, :1]

        def baseline():
            mesh_rest_joints(torch.zeros_like(betas))          # the reference's zero-shape forward
            b = solver.shape_inverse(joints)
            rest = mesh_rest_joints(b)                          # and the estimated-shape forward
            refined = refine_bone_lengths(tree, rest, joints, cfg.MODEL.PR_VARIANT)
            return solve_rotations(tree, rest, refined)

        t_ours = timed(ours, args.repeats, device)
        t_base = timed(baseline, args.repeats, device)
    print(f"{args.body} on {device} ({torch.get_num_threads()} threads), batch {args.batch}:")
    print(f"  baseline (two mesh forwards for rest joints): {args.batch / t_base:10.0f} skeletons/s")
    print(f"  ours (linear rest-joint map):                 {args.batch / t_ours:10.0f} skeletons/s")
    print(f"  speed-up: {t_base / t_ours:.1f}x")


if __name__ == "__main__":
    main()
