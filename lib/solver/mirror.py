"""Test-time mirror averaging of a twist network: twists read from the skeleton and from its mirror image.

A body whose rest skeleton and shape space are symmetric about the sagittal plane (x -> -x; +x is the body's left)
poses the same way mirrored: mirroring a pose (each rotation R -> M R M, M = diag(-1, 1, 1), slots swapped left <->
right) mirrors its joints, and a rotation about a bone u by phi becomes one about M u by -phi. The twist axis of
joint j (its rest bone) mirrors into the twist axis of its counterpart j' = ``tree.mirror_slots[j]``, so

    twist of j on a skeleton  =  - twist of j' on the mirrored skeleton.

:class:`MirrorAveragedNetwork` runs the network on both (one batch of 2B) and returns, per twist joint, the circular
mean of its own (cos, sin) and the counterpart's conjugated one (cos, -sin). For a network that is exactly
mirror-symmetric this changes nothing; a trained one is not, and the average of the two readings is the better
estimate (the shipped open networks: 0.03-0.10 mm lower MixIK MPVE on synthetic test draws of both bodies, README
"Results on the open model"). The price: the network runs on twice the batch.

The mirror identity holds when the body's rest skeleton is symmetric: the constructor checks the rest joints it is
given (the open models: within 0.03 mm SMPL, 0.5 mm SMPL-X) and refuses a skeleton off by more than ``tolerance_m``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lib.kinematics.tree import KinematicTree
from lib.solver.twist import phi_per_joint

SYMMETRY_TOLERANCE_M = 0.01  # rest joints and their mirrored counterparts may differ by this much (metres)


def mirror_joints(tree: KinematicTree, joints: Tensor) -> Tensor:
    """(..., J, 3) joints -> the mirror image through the sagittal plane (x negated), slots swapped left <-> right."""
    flip = joints.new_tensor([-1.0, 1.0, 1.0])
    return (joints * flip)[..., list(tree.mirror_slots), :]


def rest_asymmetry(tree: KinematicTree, rest_joints: Tensor) -> tuple[float, int]:
    """Largest distance (m) between a rest joint (J, 3) and its mirrored counterpart, and the slot where it is."""
    gap = (mirror_joints(tree, rest_joints) - rest_joints).norm(dim=-1)
    worst = int(gap.argmax())
    return float(gap[worst]), worst


class MirrorAveragedNetwork(nn.Module):
    """A twist network (joints (B, J, 3), betas (B, K) -> per-part (cos, sin)) averaged with its mirror reading.

    Args:
        network: the twist network, e.g. a :class:`lib.models.pan.PartAwareNetwork`; kept as ``self.network``.
        tree: its kinematic tree; the parts' twist joints must be closed under ``tree.mirror_slots``.
        rest_joints: (J, 3) the body model's rest joints (e.g. at zero betas), for the symmetry check.
        tolerance_m: the largest rest-joint asymmetry accepted.
    """

    def __init__(self, network, tree: KinematicTree, rest_joints: Tensor, tolerance_m: float = SYMMETRY_TOLERANCE_M):
        super().__init__()
        gap, slot = rest_asymmetry(tree, rest_joints.detach().float().cpu())
        if gap > tolerance_m:
            name = tree.joint_names[slot] if tree.joint_names else str(slot)
            raise ValueError(
                f"mirror averaging needs a left-right symmetric body: the rest joint {name!r} is "
                f"{gap * 1000:.1f} mm from its mirrored counterpart (at most {tolerance_m * 1000:.0f} mm); "
                "set MODEL.MIRROR_AVERAGE False (load_solver(..., mirror_average=False)) for this body model"
            )
        mirror = tree.mirror_slots
        twisted = sorted(j for part in tree.parts for j in part.twist_joints)
        if sorted(mirror[j] for j in twisted) != twisted:
            raise ValueError(f"{tree.name}: the parts' twist joints are not closed under left <-> right")
        self.network = network
        self.tree = tree
        self.register_buffer("pose_mirror", torch.tensor(mirror[: tree.num_pose_joints]), persistent=False)
        self.part_slots = [list(part.twist_joints) for part in tree.parts]
        self.train(bool(getattr(network, "training", False)))  # the mode of the network it wraps

    def forward(self, joints: Tensor, betas: Tensor) -> list[Tensor]:
        """Per-part (B, n_twist, 2) unit (cos, sin), in ``tree.parts`` order, as the wrapped network's."""
        batch = joints.shape[0]
        both = self.network(torch.cat([joints, mirror_joints(self.tree, joints)]), torch.cat([betas, betas]))
        table = phi_per_joint(self.tree, both)  # (2B, P, 2)
        direct = table[:batch]
        from_mirror = table[batch:].index_select(1, self.pose_mirror) * table.new_tensor([1.0, -1.0])
        mean = direct + from_mirror
        mean = mean / mean.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        return [mean[:, slots] for slots in self.part_slots]
