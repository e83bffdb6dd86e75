"""The training step's forward pass and losses (METHOD.md section 8), shared by training and validation.

Training never runs Shape Inverse or PR-C: the body is known (ground-truth betas), the root rotation is zeroed and
the network sees the ground-truth joints (``SkeletonSolver.solve`` with the betas given, ``refine=False`` and
``network_input='target'``). MixIK's mesh is compared with the ground-truth mesh. With VERT_W = 0 and
THETA_W = 0 (a cheap pre-training stage) no mesh and no IK are computed at all.

Input-joint noise augmentation (``TRAIN.JOINT_NOISE_MM`` > 0): a random share of the batch gets Gaussian noise on
its joints, and for those samples the network reads what it would read at evaluation on such a skeleton: the
canonical skeleton (root rotation zeroed) of AnalyIK on the PR-C-refined noisy joints, with the known betas
(:func:`noisy_network_input`; in the robust mode when ``MODEL.ROBUST.ENABLED``, the mode evaluation will use).
The twists it predicts drive MixIK on the clean ground-truth joints, so the losses still compare against the
truth: the network learns twists that are right for the pose, not for the noise.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lib.engine.metrics import mpve
from lib.kinematics.skeleton import root_relative
from lib.kinematics.tree import KinematicTree
from lib.models.body_model import BodyModel
from lib.solver.pipeline import RobustOptions, SkeletonSolver, canonical_skeleton
from lib.solver.twist import part_phis


@dataclass
class StepOutput:
    loss: Tensor
    terms: dict[str, Tensor]  # scalar loss terms (weighted sum = loss)
    mixik_mpve: Tensor | None  # (B,) mm, when the mesh was computed (VERT_W > 0 or validation)
    analyik_mpve: Tensor | None  # (B,) mm, only when asked for


def root_zeroed(pose: Tensor) -> Tensor:
    """(B, P, 3) axis-angle with the root rotation set to zero."""
    pose = pose.clone()
    pose[:, 0] = 0.0
    return pose


@torch.no_grad()
def noisy_network_input(
    solver: SkeletonSolver,
    posed: Tensor,
    betas: Tensor,
    noise_mm: float,
    fraction: float,
    robust: RobustOptions | None = None,
) -> Tensor:
    """The joints the network reads (B, J, 3) when a share of the batch has noisy input joints.

    Each sample is chosen with probability ``fraction`` (torch's global generator); a chosen sample's joints get
    N(0, (noise_mm / 1000)^2) per axis, are refined by PR-C to the bone lengths of its known ``betas`` (B, K),
    solved by AnalyIK and posed again with the root rotation zeroed: the canonical skeleton evaluation feeds
    (METHOD.md section 9), by the paper's pipeline or, with ``robust``, the robust mode's (as the evaluation
    will). Unchosen samples read their root-relative clean joints ``posed`` (B, J, 3), as without noise.
    """
    seen = root_relative(solver.tree, posed).clone()
    chosen = torch.rand(posed.shape[0], device=posed.device) < fraction
    noise = torch.randn(posed.shape, dtype=posed.dtype, device=posed.device) * (noise_mm / 1000.0)
    if chosen.any():
        if robust is not None:  # the network will read the robust mode's skeletons: train on those
            solver = SkeletonSolver(
                solver.tree, solver.rest_joints, None, solver.pr_variant, solver.posed_joints, robust
            )
        with warnings.catch_warnings():  # the noise is deliberate: no 'suspicious joint' reports
            warnings.simplefilter("ignore")
            noisy = solver.solve(posed[chosen] + noise[chosen], betas=betas[chosen], refine=True)
        seen[chosen] = canonical_skeleton(solver.tree, solver.posed_joints, noisy.rotmats, betas[chosen])
    return seen


def training_step(
    tree: KinematicTree,
    body_model: BodyModel,
    network,
    batch: dict,
    weights: dict[str, float],
    with_analyik: bool = False,
    joint_noise_mm: float = 0.0,
    noise_fraction: float = 0.5,
    robust: RobustOptions | None = None,
) -> StepOutput:
    """Ground truth -> network twists -> MixIK -> mesh; losses PHI / THETA / VERT weighted by ``weights``.

    ``joint_noise_mm`` > 0: a share ``noise_fraction`` of the samples shows the network noisy joints
    (:func:`noisy_network_input`, solved in the ``robust`` mode when given); MixIK and the losses stay on the clean
    joints. 0 draws no random numbers.
    """
    betas = batch["betas"]
    pose = root_zeroed(batch["pose"])
    if with_analyik or weights.get("vert", 0.0) > 0:
        truth = body_model(pose, betas)
        posed = truth.joints
    else:  # the twist loss alone needs joints only: no mesh
        truth, posed = None, body_model.posed_joints(pose, betas)
    needs_ik = truth is not None or weights.get("theta", 0.0) > 0
    solver = SkeletonSolver(tree, body_model.rest_joints, None, posed_joints=body_model.posed_joints)
    # the known body: no Shape Inverse, no PR-C; the network reads the ground-truth joints (or noisy ones)
    seen = (
        "target"
        if joint_noise_mm <= 0
        else noisy_network_input(solver, posed, betas, joint_noise_mm, noise_fraction, robust)
    )
    solution = solver.solve(posed, network, betas=betas, refine=False, network_input=seen, rotations=needs_ik)

    phi_true = part_phis(tree, batch["twist_angle"])
    terms = {"phi": sum(F.mse_loss(pred, true) for pred, true in zip(solution.phis, phi_true, strict=True))}
    mixik_mpve = None
    if weights.get("theta", 0.0) > 0:
        with torch.no_grad():
            oracle = solver.twist_solve(solution, solution.refined, phi_true).rotmats
        terms["theta"] = sum(
            F.mse_loss(solution.rotmats[:, list(p.twist_joints)], oracle[:, list(p.twist_joints)]) for p in tree.parts
        )
    if truth is not None:
        vertex_error = (body_model(solution.rotmats, betas).vertices - truth.vertices).norm(dim=-1)
        terms["vert"] = vertex_error.mean()
        mixik_mpve = vertex_error.detach().mean(dim=1) * 1000.0
    loss = sum(weights.get(name, 0.0) * value for name, value in terms.items())

    analyik = None
    if with_analyik:
        with torch.no_grad():
            analytic = body_model(solution.analytic_rotmats, betas).vertices
            analyik = mpve(analytic, truth.vertices)
    return StepOutput(loss, terms, mixik_mpve, analyik)
