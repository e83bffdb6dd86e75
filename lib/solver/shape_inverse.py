"""Shape Inverse (METHOD.md section 2): body shape (betas) from a skeleton's bone lengths by least squares.

Bone-length change is modelled as linear in beta, ``bl(t(beta)) - bl(t(0)) ~= A beta`` (millimetres per unit
beta, the official ``skeleton_2_beta`` layout). ``A`` is either read from an official file or fitted here from a
body model's rest-joint map over sampled betas.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from lib.kinematics.skeleton import MM_PER_M, bone_lengths
from lib.kinematics.tree import KinematicTree

RestJointFn = Callable[[Tensor], Tensor]

# Median of a chi-square variable with one degree of freedom: median(x^2) / this = var(x) for Gaussian x.
CHI2_1_MEDIAN = 0.45494
# A frame whose noise variance estimate exceeds its sequence's median by this factor is left out of the shared shape.
OUTLIER_FRAME_RATIO = 4.0


@dataclass(frozen=True)
class ShapePrior:
    """The robust Shape Inverse's settings: betas ~ N(0, I) against bone lengths measured with joint noise."""

    noise_mm: float | None = None  # joint noise sigma per axis (mm); None = estimated from left/right disagreement
    floor_mm: float = 1.0  # smallest bone-length sigma (mm): the linear model's own error
    max_abs_beta: float = 5.0  # betas are clamped to [-max, max]
    huber_k: float = 2.0  # bones whose residual exceeds k sigmas are down-weighted (Huber IRLS)
    iterations: int = 5  # IRLS iterations


def sequence_index(groups: Tensor | None, batch: int, device: torch.device) -> Tensor:
    """(B,) long: the sequence each frame belongs to, 0 .. S-1 (``groups`` (B,) any ids; None = every frame alone)."""
    if groups is None:
        return torch.arange(batch, device=device)
    return torch.unique(groups, return_inverse=True)[1].to(device)


def sequence_mean(values: Tensor, groups: Tensor) -> Tensor:
    """(B, K) values replaced by their mean over the rows sharing an id of ``groups`` (B,)."""
    index = sequence_index(groups, values.shape[0], values.device)
    sums = torch.zeros(int(index.max()) + 1, values.shape[1], dtype=values.dtype, device=values.device)
    counts = torch.zeros(sums.shape[0], 1, dtype=values.dtype, device=values.device)
    sums.index_add_(0, index, values)
    counts.index_add_(0, index, torch.ones_like(values[:, :1]))
    return (sums / counts)[index]


def fit_bone_length_model(
    tree: KinematicTree,
    rest_joints: RestJointFn,
    num_betas: int,
    num_samples: int = 10000,
    sigma: float = 1.5,
    seed: int = 0,
    dtype=torch.float64,
) -> tuple[Tensor, float]:
    """Least-squares fit of ``A`` (G, num_betas) over betas ~ N(0, sigma^2).

    Args:
        rest_joints: function mapping betas (N, num_betas) to rest joints (N, J, 3) in metres.
    Returns:
        A (G, num_betas) in mm per unit beta, and the fit's RMS residual in mm.
    """
    generator = torch.Generator().manual_seed(seed)
    betas = torch.randn(num_samples, num_betas, generator=generator, dtype=dtype) * sigma
    zero = torch.zeros(1, num_betas, dtype=dtype)
    delta = bone_lengths(tree, rest_joints(betas).to(dtype)) - bone_lengths(tree, rest_joints(zero).to(dtype))
    solution = torch.linalg.lstsq(betas, delta).solution  # (num_betas, G)
    residual = (betas @ solution - delta).pow(2).mean().sqrt().item()
    return solution.T.contiguous(), residual


class ShapeInverse(torch.nn.Module):
    """betas = (A^T A)^-1 A^T (bl(joints) - bl(t(0))), precomputed as a pseudo-inverse."""

    def __init__(self, tree: KinematicTree, matrix: Tensor, zero_shape_rest_joints: Tensor):
        """``matrix`` (G, K) mm per unit beta; ``zero_shape_rest_joints`` (J, 3) rest joints of beta = 0."""
        super().__init__()
        if matrix.shape[0] != len(tree.bone_groups):
            raise ValueError(
                f"skeleton_2_beta matrix has {matrix.shape[0]} rows; the {tree.name} tree has "
                f"{len(tree.bone_groups)} bone lengths"
            )
        self.tree = tree
        self.register_buffer("matrix", matrix.double())
        self.register_buffer("pinv", torch.linalg.pinv(matrix.double()))
        self.register_buffer("zero_lengths", bone_lengths(tree, zero_shape_rest_joints[None].double())[0])
        # the robust fit works per bone: each bone of a group gets the group's row of A
        self.bone_ends = [j for group in tree.bone_groups for j in group]
        self.bone_group = [g for g, group in enumerate(tree.bone_groups) for _ in group]
        self.pairs = [
            (k, k + 1)
            for k, g in enumerate(self.bone_group)
            if k + 1 < len(self.bone_group) and self.bone_group[k + 1] == g
        ]
        self.register_buffer("zero_bones", self.single_bone_lengths(zero_shape_rest_joints[None].double())[0])

    @property
    def num_betas(self) -> int:
        return self.matrix.shape[1]

    def forward(self, joints: Tensor) -> Tensor:
        """(B, J, 3) joints in metres -> (B, K) betas, in the joints' dtype."""
        delta = bone_lengths(self.tree, joints.to(self.pinv.dtype)) - self.zero_lengths
        return (delta @ self.pinv.T).to(joints.dtype)

    def single_bone_lengths(self, joints: Tensor) -> Tensor:
        """(B, J, 3) metres -> (B, n_bones) mm, one per bone of ``tree.bone_groups`` (pairs not averaged)."""
        starts = [self.tree.parents[j] for j in self.bone_ends]
        return (joints[:, self.bone_ends] - joints[:, starts]).norm(dim=-1) * MM_PER_M

    def estimate_noise_mm(self, joints: Tensor, groups: Tensor | None = None) -> Tensor:
        """Joint noise sigma per axis (mm) from left/right bone-length disagreement: (B,).

        A bone's length carries the noise of its two ends along it (variance 2 sigma^2), so the difference of a
        left and a right bone has variance 4 sigma^2; a median over the pairs keeps one bad bone from counting.
        With ``groups`` (B,) a frame gets its sequence's median; a frame whose own variance is over
        OUTLIER_FRAME_RATIO times that is corrupted: inf, so the shared shape ignores it (the median frame never is).
        """
        lengths = self.single_bone_lengths(joints.to(self.pinv.dtype)) - self.zero_bones
        diff = lengths[:, [a for a, _ in self.pairs]] - lengths[:, [b for _, b in self.pairs]]
        variance = diff.pow(2).median(dim=1).values / (4.0 * CHI2_1_MEDIAN)
        if groups is None:
            return variance.sqrt()
        index = sequence_index(groups, joints.shape[0], joints.device)
        pooled = torch.stack([variance[index == g].median() for g in range(int(index.max()) + 1)])[index]
        return torch.where(variance > OUTLIER_FRAME_RATIO * pooled, torch.inf, pooled).sqrt()

    def debiased_lengths(self, joints: Tensor, sigma: Tensor) -> Tensor:
        """Bone lengths (B, n_bones) mm with the lengthening by noise removed: sqrt(l^2 - 4 sigma^2).

        Noise across a bone (two axes, variance 2 sigma^2 each from its two ends) lengthens it by about
        2 sigma^2 / l on average: 8 mm on a 25 mm finger bone at sigma = 10 mm. At most halves a bone.
        """
        lengths = self.single_bone_lengths(joints)
        floor = (0.5 * lengths).pow(2)
        return torch.maximum(lengths.pow(2) - 4.0 * sigma[:, None].pow(2), floor).sqrt()

    def regularised(
        self, joints: Tensor, prior: ShapePrior, groups: Tensor | None = None, valid: Tensor | None = None
    ) -> Tensor:
        """Robust Shape Inverse: (B, J, 3) joints in metres -> (B, K) betas, in the joints' dtype.

        Minimises sum over bones of huber(residual / s) plus |beta|^2 (the prior N(0, I)), s^2 = 2 sigma^2 +
        floor^2 the bone-length variance from joint noise sigma (given or :meth:`estimate_noise_mm`), on the
        :meth:`debiased_lengths`, by iteratively reweighted least squares; betas are clamped to the prior's bound.

        Args:
            groups: (B,) sequence ids: frames with one id share one shape (solved jointly). None = per frame.
            valid: (B, n_bones) bool, False for bones to ignore (a missing end joint). None = all bones.
        """
        work = joints.to(self.pinv.dtype)
        if prior.noise_mm is None:
            sigma = self.estimate_noise_mm(work, groups)
        else:
            sigma = torch.full((work.shape[0],), float(prior.noise_mm), dtype=work.dtype, device=work.device)
        delta = self.debiased_lengths(work, sigma) - self.zero_bones  # (B, n)
        scale = (2.0 * sigma.pow(2) + prior.floor_mm**2).sqrt()[:, None]  # (B, 1) mm
        matrix = self.matrix[self.bone_group]  # (n, K)
        base = torch.ones_like(delta) if valid is None else valid.to(delta.dtype)
        index = sequence_index(groups, work.shape[0], work.device)
        num_seq, k = int(index.max()) + 1, self.num_betas
        eye = torch.eye(k, dtype=work.dtype, device=work.device)
        robust = torch.ones_like(delta)
        for _ in range(max(prior.iterations, 1)):
            weight = base * robust / scale.pow(2)  # (B, n)
            normal = torch.einsum("bn,nk,nl->bkl", weight, matrix, matrix)  # (B, K, K)
            rhs = torch.einsum("bn,nk,bn->bk", weight, matrix, delta)  # (B, K)
            normal = torch.zeros(num_seq, k, k, dtype=work.dtype, device=work.device).index_add_(0, index, normal)
            rhs = torch.zeros(num_seq, k, dtype=work.dtype, device=work.device).index_add_(0, index, rhs)
            betas = torch.linalg.solve(normal + eye, rhs[..., None])[..., 0][index]  # (B, K)
            standardized = ((betas @ matrix.T - delta) / scale).abs()
            robust = torch.where(standardized > prior.huber_k, prior.huber_k / standardized.clamp_min(1e-12), 1.0)
        return betas.clamp(-prior.max_abs_beta, prior.max_abs_beta).to(joints.dtype)
