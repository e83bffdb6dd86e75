"""Shape Inverse (METHOD.md section 2): body shape (betas) from a skeleton's bone lengths by least squares.

Bone-length change is modelled as linear in beta, ``bl(t(beta)) - bl(t(0)) ~= A beta`` (millimetres per unit
beta, the official ``skeleton_2_beta`` layout). ``A`` is either read from an official file or fitted here from a
body model's rest-joint map over sampled betas.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from lib.kinematics.skeleton import bone_lengths
from lib.kinematics.tree import KinematicTree

RestJointFn = Callable[[Tensor], Tensor]


def fit_bone_length_model(tree: KinematicTree, rest_joints: RestJointFn, num_betas: int, num_samples: int = 10000,
                          sigma: float = 1.5, seed: int = 0, dtype=torch.float64) -> tuple[Tensor, float]:
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
            raise ValueError(f"skeleton_2_beta matrix has {matrix.shape[0]} rows; the {tree.name} tree has "
                             f"{len(tree.bone_groups)} bone lengths")
        self.tree = tree
        self.register_buffer("matrix", matrix.double())
        self.register_buffer("pinv", torch.linalg.pinv(matrix.double()))
        self.register_buffer("zero_lengths", bone_lengths(tree, zero_shape_rest_joints[None].double())[0])

    @property
    def num_betas(self) -> int:
        return self.matrix.shape[1]

    def forward(self, joints: Tensor) -> Tensor:
        """(B, J, 3) joints in metres -> (B, K) betas, in the joints' dtype."""
        delta = bone_lengths(self.tree, joints.to(self.pinv.dtype)) - self.zero_lengths
        return (delta @ self.pinv.T).to(joints.dtype)
