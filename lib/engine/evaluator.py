"""Evaluation on a database (METHOD.md section 9): AnalyIK, the oracle and MixIK against the ground-truth mesh.

Per batch, without gradients:
1. ground truth from the db pose and betas (global orientation kept): joints p (root-relative) and vertices;
2. ``SkeletonSolver.solve``: Shape Inverse -> betas_hat, rest joints t; PR-C -> q; AnalyIK on (t, q); with a
   network, MixIK: the network sees the canonical skeleton (AnalyIK's pose with the root rotation set to zero,
   joints root-relative) and betas_hat; its twists drive MixIK on (t, q);
3. oracle: MixIK with the db's ground-truth twists (on p or q, ``ORACLE_ON_REFINED``).
Metrics are per-sample means (the reference averaged batch means, over-weighting the last batch).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from lib.engine.metrics import MeanMeter, mpbe, mpjpe, mpve
from lib.engine.threads import join_batches, map_chunks
from lib.kinematics.skeleton import root_relative
from lib.kinematics.tree import KinematicTree
from lib.models.body_model import BodyModel
from lib.solver.pipeline import SkeletonSolver
from lib.solver.twist import part_phis

METHODS = ("analyik", "mixik", "oracle")
# Samples whose meshes are made and compared at once: small enough that the (chunk, V, 3) meshes are reused from the
# allocator rather than freshly mapped memory (which cost more than the skinning), large enough for few ops.
MESH_CHUNK = 64


@torch.no_grad()
def evaluate_batch(
    body_model: BodyModel, solver: SkeletonSolver, batch: dict, network=None, oracle_on_refined: bool = False
) -> dict[str, Tensor]:
    """Per-sample metrics (mm) of one batch: {'mpbe', '<method>_mpjpe', '<method>_mpve'}."""
    tree = solver.tree
    target = root_relative(tree, body_model.posed_joints(batch["pose"], batch["betas"]))
    solution = solver.solve(target, network)  # the network (if any) reads the canonical AnalyIK skeleton

    rotations = {"analyik": solution.analytic_rotmats}
    oracle_target = solution.refined if oracle_on_refined else target
    rotations["oracle"] = solver.twist_solve(solution, oracle_target, part_phis(tree, batch["twist_angle"])).rotmats
    if network is not None:
        rotations["mixik"] = solution.rotmats

    out = {"mpbe": mpbe(tree, target, solution.rest)}
    rows = range(target.shape[0])
    metrics = [
        mesh_metrics(
            body_model,
            tree,
            {m: r[part] for m, r in rotations.items()},
            batch["pose"][part],
            batch["betas"][part],
            solution.betas[part],
            target[part],
        )
        for part in (slice(start, start + MESH_CHUNK) for start in rows[::MESH_CHUNK])
    ]
    return {**out, **join_batches(metrics)}


@torch.no_grad()
def twist_error_breakdown(body_model: BodyModel, solver: SkeletonSolver, batch: dict, network) -> dict[str, Tensor]:
    """Where MixIK's mesh error comes from: per-sample MPVE (B,) mm with some of the network's twists replaced by the
    db's ground truth, everything else as evaluation runs it (the network reads the canonical AnalyIK skeleton,
    MixIK aims at the PR-C joints).

    Keys: 'network' (no twist replaced: MixIK), each twist joint's name in ``tree.joint_names`` (that twist alone),
    'part:<name>' (the part's twists), 'all' (every twist: the oracle on the refined joints).
    """
    tree = solver.tree
    target = root_relative(tree, body_model.posed_joints(batch["pose"], batch["betas"]))
    solution = solver.solve(target, network)
    predicted, true = list(solution.phis), part_phis(tree, batch["twist_angle"])

    def replaced(p: int, phis: Tensor) -> list[Tensor]:
        return [phis if q == p else phi for q, phi in enumerate(predicted)]

    variants = {"network": predicted}
    for p, part in enumerate(tree.parts):
        for k, joint in enumerate(part.twist_joints):
            mixed = predicted[p].clone()
            mixed[:, k] = true[p][:, k]
            variants[tree.joint_names[joint]] = replaced(p, mixed)
        variants[f"part:{part.name}"] = replaced(p, true[p])
    variants["all"] = true
    rotations = {name: solver.twist_solve(solution, solution.refined, phis).rotmats for name, phis in variants.items()}
    metrics = mesh_metrics(body_model, tree, rotations, batch["pose"], batch["betas"], solution.betas, target)
    return {name: metrics[f"{name}_mpve"] for name in variants}


def mesh_metrics(
    body_model: BodyModel,
    tree: KinematicTree,
    rotations: dict[str, Tensor],
    pose: Tensor,
    betas: Tensor,
    solved_betas: Tensor,
    target: Tensor,
) -> dict[str, Tensor]:
    """'<method>_mpjpe' and '<method>_mpve' (B,) of each method's rotations (B, P, 3, 3) against the truth mesh of
    the db ``pose`` and ``betas``; ``solved_betas`` (B, K) are the estimated shape, ``target`` (B, J, 3) the
    root-relative true joints.

    Every mesh is computed once: the truth, one shaped template of the estimated betas shared by all methods, and
    one pose of it per method.
    """
    truth = body_model(pose, betas).vertices
    shaped = body_model.shaped(solved_betas)
    out = {}
    for method, rotmats in rotations.items():
        mesh = body_model.pose_shaped(rotmats, shaped)
        out[f"{method}_mpjpe"] = mpjpe(tree, mesh.joints, target)
        out[f"{method}_mpve"] = mpve(mesh.vertices, truth)
    return out


def evaluate(
    body_model: BodyModel,
    solver: SkeletonSolver,
    loader,
    device: torch.device,
    network=None,
    oracle_on_refined: bool = False,
    desc: str = "eval",
    workers: int = 1,
) -> dict:
    """Per-sample means over a DataLoader of db samples; returns {'n_samples', metric: mean}.

    ``workers`` threads evaluate chunks of each batch side by side (:func:`lib.engine.threads.map_chunks`).
    """
    if network is not None:
        network.eval()
    meter = MeanMeter()
    dtype = body_model.dtype
    progress = tqdm(loader, desc=desc, unit="batch", dynamic_ncols=True)
    for batch in progress:
        batch = {k: v.to(device=device, dtype=dtype) for k, v in batch.items() if torch.is_tensor(v)}

        def evaluate_chunk(*values: Tensor, keys: tuple = tuple(batch)) -> dict[str, Tensor]:
            return evaluate_batch(body_model, solver, dict(zip(keys, values, strict=True)), network, oracle_on_refined)

        meter.update(map_chunks(evaluate_chunk, tuple(batch.values()), workers))
        running = meter.means()
        progress.set_postfix(
            analyik_mpve=f"{running['analyik_mpve']:.1f}",
            **({"mixik_mpve": f"{running['mixik_mpve']:.1f}"} if network is not None else {}),
        )
    return {"n_samples": meter.count, **meter.means()}


def results_record(dataset: str, body: str, means: dict) -> dict:
    """The eval JSON record: fixed keys, mm, MixIK entries null without a network."""
    record = {"dataset": dataset, "body_model": body, "n_samples": means["n_samples"], "mpbe_mm": means["mpbe"]}
    for method in ("analyik", "oracle", "mixik"):
        for metric in ("mpjpe", "mpve"):
            record[f"{method}_{metric}_mm"] = means.get(f"{method}_{metric}")
    return record


def format_table(record: dict) -> str:
    """The paper's table layout: Methods | MPBE | MPJPE | MPVE (mm)."""
    body = {"smpl": "SMPL", "smplx": "SMPL-X"}.get(record["body_model"], record["body_model"])
    title = f"{body} on {record['dataset']} ({record['n_samples']} samples, mm)"
    lines = [title, f"{'Methods':<10}| {'MPBE':>7} | {'MPJPE':>7} | {'MPVE':>7}", "-" * 40]
    names = {"analyik": "AnalyIK", "mixik": "MixIK", "oracle": "Oracle"}
    for method in ("analyik", "mixik", "oracle"):
        jpe, vpe = record[f"{method}_mpjpe_mm"], record[f"{method}_mpve_mm"]
        if jpe is None:
            lines.append(f"{names[method]:<10}| needs a PAN checkpoint (MODEL.PRETRAINED)")
            continue
        lines.append(f"{names[method]:<10}| {record['mpbe_mm']:7.1f} | {jpe:7.1f} | {vpe:7.1f}")
    return "\n".join(lines)


def write_record(record: dict, output_dir: Path) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"eval_{record['dataset']}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
