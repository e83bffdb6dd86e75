"""The stages composed: skeleton -> betas -> rest joints -> PR-C -> AnalyIK -> [PAN twists -> MixIK] -> mesh.

Read in this order: :mod:`shape_inverse`, :mod:`refine`, :mod:`analytic_ik`, :mod:`twist`, then this file.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lib.kinematics.rotations import rigid_rotation
from lib.kinematics.skeleton import global_rotations, root_relative
from lib.kinematics.tree import KinematicTree
from lib.solver.analytic_ik import solve_rotations
from lib.solver.refine import refine_bone_lengths
from lib.solver.shape_inverse import ShapeInverse, ShapePrior, sequence_mean
from lib.solver.twist import phi_per_joint

# Skeletons arrive in metres; a median bone this long means the input is in millimetres (or centimetres).
MAX_MEDIAN_BONE_M = 1.0


@dataclass
class Solution:
    """What the solver found for a batch of skeletons."""

    betas: Tensor  # (B, K) shape from Shape Inverse (or the betas given)
    rest: Tensor  # (B, J, 3) root-relative rest joints of that shape
    refined: Tensor  # (B, J, 3) root-relative targets with the rest bone lengths (PR-C; the input without it)
    rotmats: Tensor | None  # (B, P, 3, 3) local rotations of ``method`` (None when only twists were asked for)
    translation: Tensor | None = None  # (B, 3) body-model translation putting its root joint where the input's was
    method: str = "analyik"  # 'analyik', or 'mixik' when a network's twists drove the IK
    analytic_rotmats: Tensor | None = None  # (B, P, 3, 3) AnalyIK's rotations (the same as rotmats for 'analyik')
    phis: list[Tensor] | None = None  # the network's (cos, sin) per part, list of (B, n_part, 2) (MixIK only)
    suspicious: Tensor | None = None  # (B, J) bool: input joints the robust mode found suspicious (None: paper mode)


# Suspicious inputs (robust mode): a bone outside [SHORT, LONG] times its rest length, or a joint exactly at (0, 0, 0)
SUSPICIOUS_SHORT, SUSPICIOUS_LONG = 0.5, 2.0
# ... and, when the joint noise is known or estimated, off by more than this many sigmas of a bone length
SUSPICIOUS_NOISE_SIGMAS = 5.0
SUSPICIOUS_ACTIONS = ("warn", "fill")


@dataclass(frozen=True)
class RobustOptions:
    """The robust mode of :class:`SkeletonSolver` (None there = the paper's pipeline, METHOD.md as published)."""

    prior: ShapePrior = field(default_factory=ShapePrior)  # Shape Inverse toward betas ~ N(0, I), Huber on bones
    orientation_fit: str = "rigid"  # two-direction joints: least-squares rotation over their rigid group
    suspicious: str = "warn"  # 'warn': report suspicious joints; 'fill': also treat them as missing


# What the network reads (METHOD.md sections 8 and 12): evaluation feeds the canonical AnalyIK skeleton, training
# the (ground-truth) input joints.
NETWORK_INPUTS = ("canonical", "target")

# Callables the solver gets from the body model: it opens no file itself.
RestJointFn = Callable[[Tensor], Tensor]  # betas (B, K) -> rest joints (B, J, 3)
PosedJointFn = Callable[[Tensor, Tensor], Tensor]  # rotmats (B, P, 3, 3), betas (B, K) -> posed joints (B, J, 3)
TwistNetwork = Callable[[Tensor, Tensor], list]  # joints (B, J, 3), betas (B, K) -> list of (B, n_part, 2)


def canonical_skeleton(tree: KinematicTree, posed_joints: PosedJointFn, rotmats: Tensor, betas: Tensor) -> Tensor:
    """Joints of a pose with its root rotation set to zero, root-relative: the network's input (B, J, 3).

    ``posed_joints`` is the body model's (vertex-based joints such as SMPL-X fingertips included).
    """
    rotmats = rotmats.clone()
    rotmats[:, tree.root] = torch.eye(3, dtype=rotmats.dtype, device=rotmats.device)
    return root_relative(tree, posed_joints(rotmats, betas))


def check_skeleton(tree: KinematicTree, joints: Tensor, name: str = "joints") -> None:
    """One clear error for the usual ways a skeleton goes wrong (type, shape, NaN, units)."""
    if not torch.is_tensor(joints):
        raise ValueError(
            f"{name} must be a torch.Tensor (B, {tree.num_joints}, 3), got {type(joints).__name__}; "
            "convert with torch.as_tensor, or use lib.api.load_solver, whose fit() takes numpy too"
        )
    if joints.ndim != 3 or joints.shape[1:] != (tree.num_joints, 3):
        raise ValueError(
            f"{name} must have shape (B, {tree.num_joints}, 3) for the {tree.name} skeleton, got {tuple(joints.shape)}"
        )
    if not torch.isfinite(joints).all():
        bad = (~torch.isfinite(joints)).any(dim=-1).any(dim=0).nonzero().flatten().tolist()
        raise ValueError(f"{name} contain NaN/inf at joints {bad}; remove or fill those frames first")
    median = median_bone_length(tree, joints)
    if median > MAX_MEDIAN_BONE_M:
        raise ValueError(
            f"{name}: median bone length is {median:.1f}; the solver expects metres (divide millimetres by 1000)"
        )


# The units check reads at most this many frames, evenly spread over the batch (a unit is a property of the file).
UNIT_CHECK_FRAMES = 256


def median_bone_length(tree: KinematicTree, joints: Tensor) -> float:
    """Median length of the bones the IK places, over a (B, J, 3) batch (at most UNIT_CHECK_FRAMES frames evenly
    spread over it), in the joints' units."""
    joints = joints[:: max(1, -(-joints.shape[0] // UNIT_CHECK_FRAMES))]
    ends = list(tree.ik_child.values())
    return (joints[:, ends] - joints[:, [tree.parents[j] for j in ends]]).norm(dim=-1).median().item()


class SkeletonSolver(torch.nn.Module):
    """Skeleton (B, J, 3) in metres -> betas, local rotations and translation, for one body model and its tree.

    Args:
        tree: the body model's kinematic tree.
        rest_joints: betas (B, K) -> rest joints (B, J, 3) (``BodyModel.rest_joints``: a linear map).
        shape_inverse: bone lengths -> betas (None: betas must be given to :meth:`solve`).
        pr_variant: 'v1', 'v2' or 'none' (METHOD.md section 3).
        posed_joints: rotmats, betas -> posed joints (``BodyModel.posed_joints``); needed for the canonical
            skeleton a network reads in :meth:`solve`.
        robust: :class:`RobustOptions` for noisy skeletons (regularised Shape Inverse, shape shared per
            sequence, rigid-group orientation, suspicious joints reported); None = the paper's pipeline.
    """

    def __init__(
        self,
        tree: KinematicTree,
        rest_joints: RestJointFn,
        shape_inverse: ShapeInverse | None,
        pr_variant: str = "v1",
        posed_joints: PosedJointFn | None = None,
        robust: RobustOptions | None = None,
    ):
        super().__init__()
        if robust is not None and robust.suspicious not in SUSPICIOUS_ACTIONS:
            raise ValueError(f"suspicious={robust.suspicious!r}: use one of {SUSPICIOUS_ACTIONS}")
        self.tree = tree
        self.rest_joints = rest_joints
        self.shape_inverse = shape_inverse
        self.pr_variant = pr_variant
        self.posed_joints = posed_joints
        self.robust = robust

    @property
    def orientation_fit(self) -> str:
        return "directions" if self.robust is None else self.robust.orientation_fit

    def rest_skeleton(self, betas: Tensor) -> Tensor:
        return root_relative(self.tree, self.rest_joints(betas))

    def solve(
        self,
        joints: Tensor,
        network: TwistNetwork | None = None,
        *,
        betas: Tensor | None = None,
        refine: bool = True,
        network_input: str | Tensor = "canonical",
        rotations: bool = True,
        groups: Tensor | None = None,
    ) -> Solution:
        """The whole method: SI -> PR-C -> AnalyIK -> canonical skeleton -> network -> MixIK.

        Args:
            joints: (B, J, 3) skeletons in metres, any origin (the translation is returned).
            network: (joints (B, J, 3), betas (B, K)) -> per-part (cos, sin) twists, e.g. a
                :class:`~lib.models.pan.PartAwareNetwork`; None = AnalyIK only.
            betas: (B, K) known shape: Shape Inverse is skipped (training).
            refine: False skips PR-C: the input joints are the IK targets as given (training).
            network_input: 'canonical': AnalyIK's pose with its root rotation zeroed, root-relative (evaluation,
                METHOD.md section 9); 'target': the root-relative input joints (training, section 8); or a
                (B, J, 3) tensor the network reads as given (training with noisy inputs).
            rotations: False returns the network's twists only, no IK (training on the twist loss alone).
            groups: (B,) sequence ids: frames with one id are one person and share one shape (:meth:`shape`).
        Returns:
            A :class:`Solution`; ``rotmats`` are MixIK's with a network, AnalyIK's without.
        """
        if not torch.is_tensor(network_input) and network_input not in NETWORK_INPUTS:
            raise ValueError(f"network_input={network_input!r}: use one of {NETWORK_INPUTS}")
        check_skeleton(self.tree, joints)
        root, fit = self.tree.root, self.orientation_fit
        target = root_relative(self.tree, joints)
        at_origin = None if self.robust is None else joints_at_origin(self.tree, joints)
        if betas is None:
            betas = self.shape(target, groups, at_origin)
        rest_absolute = self.rest_joints(betas)
        rest = root_relative(self.tree, rest_absolute)
        translation = joints[:, root] - rest_absolute[:, root]
        suspicious = None
        if self.robust is not None:
            target, shift, suspicious = self.robust_targets(rest, target, at_origin)
            translation = translation + shift
        refined = (
            refine_bone_lengths(self.tree, rest, target, self.pr_variant, orientation_fit=fit) if refine else target
        )
        analytic = solve_rotations(self.tree, rest, refined, orientation_fit=fit) if rotations else None
        if network is None:
            return Solution(betas, rest, refined, analytic, translation, "analyik", analytic, suspicious=suspicious)

        if torch.is_tensor(network_input):
            seen = network_input
        elif network_input == "canonical":
            if self.posed_joints is None or analytic is None:
                raise ValueError("the canonical network input needs the solver's posed_joints and rotations=True")
            seen = canonical_skeleton(self.tree, self.posed_joints, analytic, betas)
        else:
            seen = refined
        phis = network(seen, betas)  # the network reads the first 10 betas
        mixik = (
            solve_rotations(self.tree, rest, refined, phi_per_joint(self.tree, phis), orientation_fit=fit)
            if rotations
            else None
        )
        return Solution(betas, rest, refined, mixik, translation, "mixik", analytic, phis, suspicious)

    def robust_targets(self, rest: Tensor, target: Tensor, at_origin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Robust mode, before PR-C: suspicious joints reported (and filled, when asked), the root re-placed.

        Args:
            rest, target: (B, J, 3) root-relative rest and input joints; at_origin: (B, J) joints at (0, 0, 0).
        Returns:
            The targets (B, J, 3), root-relative to the re-placed root; that root's offset from the input's
            (B, 3), to add to the translation; the suspicious joints (B, J) bool.
        """
        suspicious = at_origin | implausible_bones(self.tree, rest, target, self.noise_mm(target))
        if suspicious.any():
            fill = self.robust.suspicious == "fill"
            warnings.warn(suspicious_message(self.tree, suspicious, at_origin, fill), stacklevel=3)
            if fill:
                target = fill_missing(self.tree, rest, target, suspicious, self.orientation_fit)
        shift = root_estimate(self.tree, rest, target)
        target = target - shift[:, None]
        target[:, self.tree.root] = 0.0
        return target, shift, suspicious

    def noise_mm(self, target: Tensor) -> Tensor | None:
        """Robust mode: the joint noise sigma per axis (mm) of each root-relative skeleton (B, J, 3), given or
        estimated per frame; None when neither is possible (no Shape Inverse)."""
        if self.robust.prior.noise_mm is not None:
            return torch.full(
                target.shape[:1], float(self.robust.prior.noise_mm), dtype=target.dtype, device=target.device
            )
        return None if self.shape_inverse is None else self.shape_inverse.estimate_noise_mm(target).to(target.dtype)

    def shape(self, target: Tensor, groups: Tensor | None = None, missing: Tensor | None = None) -> Tensor:
        """Betas (B, K) of root-relative skeletons (B, J, 3), one shape per id of ``groups`` (B,) when given.

        Paper mode: the Shape Inverse of METHOD.md (per frame; averaged per group). Robust mode: the regularised
        one, groups solved jointly, ignoring bones that touch ``missing`` (B, J) joints.
        """
        if self.shape_inverse is None:
            raise ValueError("this solver has no Shape Inverse: pass the betas")
        if self.robust is None:
            betas = self.shape_inverse(target)
            return betas if groups is None else sequence_mean(betas, groups)
        valid = None
        if missing is not None:
            ends = self.shape_inverse.bone_ends
            starts = [self.tree.parents[j] for j in ends]
            valid = ~(missing[:, ends] | missing[:, starts])
        return self.shape_inverse.regularised(target, self.robust.prior, groups, valid)

    def analytic(self, joints: Tensor) -> Solution:
        """Shape Inverse, PR-C and AnalyIK (twist removed): :meth:`solve` without a network."""
        return self.solve(joints)

    def twist_solve(self, solution: Solution, target: Tensor, part_phis: list[Tensor]) -> Solution:
        """MixIK on ``target`` (B, J, 3) with per-part (cos, sin) twists (list of (B, n_part, 2)), e.g. the oracle's."""
        target = root_relative(self.tree, target)
        phi = phi_per_joint(self.tree, part_phis)
        rotmats = solve_rotations(self.tree, solution.rest, target, phi, self.orientation_fit)
        return Solution(
            solution.betas,
            solution.rest,
            solution.refined,
            rotmats,
            solution.translation,
            "mixik",
            solution.analytic_rotmats,
            part_phis,
        )


def root_estimate(tree: KinematicTree, rest: Tensor, target: Tensor) -> Tensor:
    """Where the root's rigid group (root and children) puts the root, relative to the target's root: (B, 3).

    The least-squares rigid fit of the rest group onto the targets averages the root's own noise with its
    children's; the paper takes the root joint as given. Rest and target joints (B, J, 3), root-relative.
    """
    group = [tree.root, *tree.children[tree.root]]
    rest_points, target_points = rest[:, group], target[:, group]
    rotation = rigid_rotation(rest_points, target_points)
    centre = target_points.mean(dim=1) - (rotation @ rest_points.mean(dim=1)[..., None])[..., 0]
    return centre - target[:, tree.root]


def joints_at_origin(tree: KinematicTree, joints: Tensor) -> Tensor:
    """(B, J) bool: skeleton joints other than the root exactly at (0, 0, 0), the usual 'missing joint' mark."""
    mask = (joints == 0).all(dim=-1)
    outside = [j for j in range(tree.num_joints) if j not in set(tree.skeleton) or j == tree.root]
    mask[:, outside] = False
    return mask


def implausible_bones(tree: KinematicTree, rest: Tensor, target: Tensor, noise_mm: Tensor | None = None) -> Tensor:
    """(B, J) bool: joints whose bone from their parent is shorter than SUSPICIOUS_SHORT or longer than
    SUSPICIOUS_LONG times its rest length (rest and target (B, J, 3)), and, with the joint noise ``noise_mm``
    (B,) given, off by more than SUSPICIOUS_NOISE_SIGMAS times the noise of a bone length (short finger bones
    under ordinary estimator noise are not reported)."""
    ends = [j for j in tree.skeleton if j != tree.root]
    starts = [tree.parents[j] for j in ends]
    measured = (target[:, ends] - target[:, starts]).norm(dim=-1)
    expected = (rest[:, ends] - rest[:, starts]).norm(dim=-1)
    ratio = measured / expected.clamp_min(1e-9)
    bad = (ratio < SUSPICIOUS_SHORT) | (ratio > SUSPICIOUS_LONG)
    if noise_mm is not None:
        bone_sigma_m = 2.0**0.5 * noise_mm[:, None] / 1000.0
        bad &= (measured - expected).abs() > SUSPICIOUS_NOISE_SIGMAS * bone_sigma_m
    mask = torch.zeros(target.shape[:2], dtype=torch.bool, device=target.device)
    mask[:, ends] = bad
    return mask


def suspicious_message(tree: KinematicTree, suspicious: Tensor, at_origin: Tensor, filled: bool, limit: int = 8) -> str:
    """One line naming the frames and joints of a (B, J) mask (and which were at the origin)."""
    frames = suspicious.any(dim=1).nonzero().flatten().tolist()
    entries = []
    for b in frames[:limit]:
        names = [
            tree.joint_names[j] + (" (at the origin)" if at_origin[b, j] else "")
            for j in suspicious[b].nonzero().flatten().tolist()
        ]
        entries.append(f"frame {b}: {', '.join(names)}")
    more = f"; and {len(frames) - limit} more frames" if len(frames) > limit else ""
    action = (
        "treated as missing: filled from the rest skeleton under the parent's rotation"
        if filled
        else "used as given; treat them as missing with MODEL.ROBUST.SUSPICIOUS 'fill' "
        "(lib.api.load_solver(..., suspicious='fill'))"
    )
    return (
        f"suspicious input joints (at the origin, or a bone under {SUSPICIOUS_SHORT} / over {SUSPICIOUS_LONG} "
        f"times its rest length beyond the joint noise) in {len(frames)} frame(s), {action}: "
        f"{'; '.join(entries)}{more}"
    )


def fill_missing(tree: KinematicTree, rest: Tensor, target: Tensor, missing: Tensor, orientation_fit: str) -> Tensor:
    """Target joints (B, J, 3) with the ``missing`` (B, J) ones placed from the rest skeleton (B, J, 3).

    A missing joint hangs from its parent at its rest offset, turned by the parent's global rotation: for a
    two-direction parent, its rigid-group rotation over the group's present joints; otherwise the rotation the
    parent inherits from its own parent (the missing joint alone would have fixed the parent's swing). Level by
    level, so a missing joint below a missing one hangs from the filled one.
    """
    filled = target.clone()
    for level in tree.levels:
        todo = [j for j in level if missing[:, j].any()]
        if not todo:
            continue
        glob = global_rotations(tree, solve_rotations(tree, rest, filled, orientation_fit=orientation_fit))
        for j in todo:
            p = tree.parents[j]
            if p in tree.two_direction_by_joint:
                group = [p, *tree.children[p]]
                present = (~missing[:, group]).to(rest.dtype)
                rotation = rigid_rotation(
                    rest[:, group] - rest[:, p : p + 1], filled[:, group] - filled[:, p : p + 1], present
                )
            else:
                rotation = glob[tree.parents[p]]
            placed = filled[:, p] + (rotation @ (rest[:, j] - rest[:, p])[..., None])[..., 0]
            filled[:, j] = torch.where(missing[:, j, None], placed, filled[:, j])
    return filled
