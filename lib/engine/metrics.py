"""Evaluation metrics in millimetres (METHOD.md section 9), per sample, and their running per-sample means."""

from __future__ import annotations

from collections import defaultdict

from torch import Tensor

from lib.kinematics.skeleton import MM_PER_M, bone_lengths, root_relative
from lib.kinematics.tree import KinematicTree


def mpbe(tree: KinematicTree, target: Tensor, rest: Tensor) -> Tensor:
    """Mean per-bone length error (B,): |bl(target) - bl(rest)| over the tree's bone-length vector, mm."""
    return (bone_lengths(tree, target) - bone_lengths(tree, rest)).abs().mean(dim=1)


def mpjpe(tree: KinematicTree, joints: Tensor, target: Tensor) -> Tensor:
    """Mean per-joint position error (B,), root-relative, over ``tree.metric_joints``, mm."""
    joints, target = root_relative(tree, joints), root_relative(tree, target)
    idx = list(tree.metric_joints)
    return (joints[:, idx] - target[:, idx]).norm(dim=-1).mean(dim=1) * MM_PER_M


def mpve(vertices: Tensor, target: Tensor) -> Tensor:
    """Mean per-vertex error (B,), mm. Not root-aligned: both meshes come out of the model without translation."""
    return (vertices - target).norm(dim=-1).mean(dim=1) * MM_PER_M


class MeanMeter:
    """Per-sample means of named metrics accumulated over batches (the reference averaged batch means instead)."""

    def __init__(self):
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0

    def update(self, values: dict[str, Tensor]) -> None:
        sizes = {v.shape[0] for v in values.values()}
        if len(sizes) != 1:
            raise ValueError(f"metrics of one batch must have one batch size, got {sizes}")
        for name, value in values.items():
            self.sums[name] += value.double().sum().item()
        self.count += sizes.pop()

    def means(self) -> dict[str, float]:
        return {name: total / max(self.count, 1) for name, total in self.sums.items()}
