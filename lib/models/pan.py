"""Part-aware Network (PAN, METHOD.md section 7): one small MLP per body part predicting twist angles as (cos, sin).

Each part reads its own joints (root-relative positions, flattened) and the first 10 betas and predicts the twist
of its ``twist_joints``:

    pos  = pos_emd(joints[part.joints].flatten())   Linear(n_j*3 -> H-64),  BatchNorm1d, PReLU, Dropout(0.2)
    beta = beta_emd(betas[:10])                     Linear(10 -> H-192),    BatchNorm1d, PReLU, Dropout(0.2)
    x    = cat(pos, beta)                           width 2H-256, which is H only for H = 256
    phi  = block(x)                                 3 x ResidualBlock(H), then Linear(H -> n_twist*2)
    phi  = phi.view(n_twist, 2) / (|phi| + 1e-8)    unit (cos, sin) per twist joint

Module attribute names follow the official checkpoint so that its ``gen_state_dict`` loads without a key map:
``<part>_rf_net.upose_upd_net.{pos_emd,beta_emd,block}.*`` (e.g. ``leg_rf_net.upose_upd_net.pos_emd.0.weight``,
``arm_rf_net.upose_upd_net.block.1.block.4.bias``, ``spine_rf_net.upose_upd_net.block.3.weight``). The class names
say what each piece is; the attribute names are only the checkpoint's spelling.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lib.kinematics.skeleton import root_relative
from lib.kinematics.tree import KinematicTree, Part

SUPPORTED_EMBED_DIM = 256
PHI_EPS = 1e-8  # added to |phi| before dividing, as the reference: keeps an all-zero output finite
# Precisions of the inference matrix products (PartAwareNetwork.matmul_precision): 'float32' (exact to the module)
# or 'bfloat16' (weights, layer inputs and each product's result rounded to bfloat16, sums inside a product, biases,
# activations and the residual stream float32: about 4x faster on CPUs with native bfloat16 products, e.g. AVX512-BF16
# or AMX; twists within ~0.2 degrees of float32's on average, docs/speed.md)
MATMUL_PRECISIONS = ("float32", "bfloat16")


def check_embed_dim(embed_dim: int) -> None:
    """Reject hidden widths for which the concatenated embedding (H-64)+(H-192) does not match the blocks' width H."""
    if embed_dim != SUPPORTED_EMBED_DIM:
        raise ValueError(
            f"MODEL.MLP.EMBED_DIM={embed_dim}: the Part-aware Network concatenates widths (H-64)+(H-192) = 2H-256, "
            f"which equals the residual blocks' width H only for H={SUPPORTED_EMBED_DIM}; set it to "
            f"{SUPPORTED_EMBED_DIM}"
        )


def normalize_phi(phi: Tensor, eps: float = PHI_EPS) -> Tensor:
    """Scale (cos, sin) pairs ``(..., 2)`` to unit length: ``phi / (|phi| + eps)``."""
    return phi / (phi.norm(dim=-1, keepdim=True) + eps)


def _dense(n_in: int, n_out: int, dropout: float) -> list[nn.Module]:
    """Linear, BatchNorm1d, PReLU, Dropout: the network's basic layer (indices 0-3 in the checkpoint)."""
    return [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.PReLU(), nn.Dropout(dropout)]


class ResidualBlock(nn.Module):
    """``x + block(x)`` with ``block`` = two dense layers of width H (checkpoint indices 0-2 and 4-6 are weighted)."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.block = nn.Sequential(*_dense(width, width, dropout), *_dense(width, width, dropout))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class PartTwistMLP(nn.Module):
    """One part's twist regressor: (part joints, betas) -> unit (cos, sin) per twist joint.

    Args:
        num_joints: joints the part reads (n_j).
        num_twists: twist joints the part predicts (n_twist).
        embed_dim: hidden width H (only 256 is consistent, see :func:`check_embed_dim`).
        num_betas: betas fed to the network (10).
        dropout: dropout probability after every dense layer (0.2).
    """

    def __init__(
        self,
        num_joints: int,
        num_twists: int,
        embed_dim: int = SUPPORTED_EMBED_DIM,
        num_betas: int = 10,
        dropout: float = 0.2,
    ):
        super().__init__()
        check_embed_dim(embed_dim)
        self.num_joints, self.num_twists, self.num_betas = num_joints, num_twists, num_betas
        self.pos_emd = nn.Sequential(*_dense(num_joints * 3, embed_dim - 64, dropout))
        self.beta_emd = nn.Sequential(*_dense(num_betas, embed_dim - 192, dropout))
        self.block = nn.Sequential(
            *(ResidualBlock(embed_dim, dropout) for _ in range(3)), nn.Linear(embed_dim, num_twists * 2)
        )

    def forward(self, part_joints: Tensor, betas: Tensor) -> Tensor:
        """``part_joints`` (B, n_j, 3), ``betas`` (B, num_betas) -> (B, n_twist, 2) unit (cos, sin)."""
        x = torch.cat([self.pos_emd(part_joints.flatten(1)), self.beta_emd(betas)], dim=1)
        return normalize_phi(self.block(x).view(-1, self.num_twists, 2))


class PartBranch(nn.Module):
    """A part of the network: picks the part's joints out of the full skeleton and runs its :class:`PartTwistMLP`.

    The MLP sits under the attribute ``upose_upd_net`` because that is where the official checkpoint keeps it.
    """

    def __init__(self, part: Part, mlp: PartTwistMLP):
        super().__init__()
        self.part = part
        self.upose_upd_net = mlp
        # Not persistent: the official state dict has no such key; it follows the module across devices.
        self.register_buffer("joint_index", torch.tensor(part.joints, dtype=torch.long), persistent=False)

    @property
    def mlp(self) -> PartTwistMLP:
        return self.upose_upd_net

    def forward(self, joints: Tensor, betas: Tensor) -> Tensor:
        """``joints`` (B, J, 3) full skeleton, ``betas`` (B, num_betas) -> (B, n_twist, 2)."""
        return self.upose_upd_net(joints.index_select(1, self.joint_index), betas)


def branch_name(part: Part) -> str:
    """Attribute (and checkpoint key prefix) of a part's branch: ``leg`` -> ``leg_rf_net``."""
    return f"{part.name}_rf_net"


class PartAwareNetwork(nn.Module):
    """The Part-aware Network over a kinematic tree: one :class:`PartBranch` per ``tree.parts`` entry.

    SMPL_TREE gives ``leg_rf_net``, ``spine_rf_net``, ``arm_rf_net``; SMPLX_TREE adds ``lhand_rf_net`` and
    ``rhand_rf_net``: the state dict has exactly the official checkpoint's keys.

    ``forward`` returns one tensor per part in ``tree.parts`` order. (The official SMPL-X network returns three:
    leg, spine and ``cat([arm, lhand, rhand], dim=1)``; the per-part list here carries the same values, and
    :func:`lib.solver.twist.phi_per_joint` places them by twist joint, so no caller depends on that grouping.)

    Args:
        tree: the body model's kinematic tree (``SMPL_TREE`` or ``SMPLX_TREE``).
        embed_dim: hidden width H, ``MODEL.MLP.EMBED_DIM`` (only 256).
        num_betas: betas read by every part (10; extra columns, e.g. the kid beta, are ignored).
        dropout: dropout probability (0.2).
    """

    def __init__(
        self, tree: KinematicTree, embed_dim: int = SUPPORTED_EMBED_DIM, num_betas: int = 10, dropout: float = 0.2
    ):
        super().__init__()
        check_embed_dim(embed_dim)
        _check_disjoint_twists(tree)
        self.tree = tree
        self.num_betas = num_betas
        self.matmul_precision = "float32"
        for part in tree.parts:
            mlp = PartTwistMLP(len(part.joints), len(part.twist_joints), embed_dim, num_betas, dropout)
            self.add_module(branch_name(part), PartBranch(part, mlp))

    def set_matmul_precision(self, precision: str) -> PartAwareNetwork:
        """Precision of the matrix products at inference (eval mode, no gradients), 'float32' or 'bfloat16'
        (``MODEL.MLP.MATMUL_PRECISION``). Training and float64 inputs always run in their own precision."""
        if precision not in MATMUL_PRECISIONS:
            raise ValueError(f"matmul precision {precision!r}: use one of {MATMUL_PRECISIONS}")
        self.matmul_precision = precision
        return self

    def branch(self, part: Part | str) -> PartBranch:
        """The branch of a part, by :class:`Part` or by name."""
        name = part if isinstance(part, str) else part.name
        return getattr(self, f"{name}_rf_net")

    def forward(self, joints: Tensor, betas: Tensor) -> list[Tensor]:
        """Predict every part's twists.

        Args:
            joints: (B, J, 3) joint positions in the tree's slots (J = ``tree.num_joints``: 24 SMPL, 76 SMPL-X),
                root-relative. The root is subtracted here as well, which changes nothing for root-relative input.
            betas: (B, >= num_betas) shape parameters; the first ``num_betas`` are used.

        Returns:
            One (B, n_twist_part, 2) tensor of unit (cos, sin) per part, in ``tree.parts`` order; row k belongs to
            ``part.twist_joints[k]``.
        """
        J = self.tree.num_joints
        if joints.dim() != 3 or joints.shape[1] != J or joints.shape[2] != 3:
            raise ValueError(
                f"joints must have shape (B, {J}, 3) for the {self.tree.name} tree, got {tuple(joints.shape)}"
            )
        B = joints.shape[0]
        if betas.dim() != 2 or betas.shape[0] != B or betas.shape[1] < self.num_betas:
            raise ValueError(
                f"betas must have shape ({B}, >={self.num_betas}) to match joints, got {tuple(betas.shape)}"
            )
        joints = root_relative(self.tree, joints)
        betas = betas[:, : self.num_betas]
        if not self.training and not torch.is_grad_enabled():
            return self._fused(joints.dtype).forward(joints, betas)
        return [self.branch(part)(joints, betas) for part in self.tree.parts]

    def _fused(self, dtype: torch.dtype) -> FusedParts:
        """The inference form of the current weights for inputs of ``dtype``, rebuilt whenever a parameter or
        statistic, or the matmul precision, changed."""
        matmul_dtype = torch.bfloat16 if self.matmul_precision == "bfloat16" and dtype == torch.float32 else None
        tensors = list(self.parameters()) + list(self.buffers())
        key = (matmul_dtype, *((t.data_ptr(), t._version, t.device, t.dtype) for t in tensors))
        if getattr(self, "_fused_key", None) != key:
            self._fused_parts = FusedParts(self, matmul_dtype)
            self._fused_key = key
        return self._fused_parts


def _folded(linear: nn.Linear, norm: nn.BatchNorm1d) -> tuple[Tensor, Tensor]:
    """Linear followed by an eval-mode BatchNorm1d as one affine map: weight (out, in), bias (out,)."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    return linear.weight * scale[:, None], (linear.bias - norm.running_mean) * scale + norm.bias


class FusedParts:
    """Inference-only form of a :class:`PartAwareNetwork` in eval mode: each Linear + BatchNorm folded into one
    affine map and dropout dropped, so a dense layer is one ``addmm`` and one ``prelu`` (the module runs five ops
    through BatchNorm, PReLU and Dropout). Equal to the module to float rounding.

    With ``matmul_dtype`` (bfloat16) the weights are stored in it, each layer's input is rounded to it before the
    product and the product's result comes back in it (torch has no mixed-output product on CPU) before it is
    widened again; biases, activations and the residual stream stay float32.
    """

    def __init__(self, network: PartAwareNetwork, matmul_dtype: torch.dtype | None = None):
        self.matmul_dtype = matmul_dtype
        self.parts = []
        with torch.no_grad():
            for part in network.tree.parts:
                branch = network.branch(part)
                mlp = branch.mlp
                dense = [
                    (*_folded(mlp.pos_emd[0], mlp.pos_emd[1]), mlp.pos_emd[2].weight),
                    (*_folded(mlp.beta_emd[0], mlp.beta_emd[1]), mlp.beta_emd[2].weight),
                ]
                for block in mlp.block[:3]:
                    dense += [(*_folded(block.block[k], block.block[k + 1]), block.block[k + 2].weight) for k in (0, 4)]
                head = mlp.block[3]
                layers = [(self._stored(weight), bias, slope.detach()) for weight, bias, slope in dense]
                self.parts.append(
                    (
                        branch.joint_index,
                        mlp.num_twists,
                        layers,
                        (self._stored(head.weight.detach()), head.bias.detach()),
                    )
                )

    def _stored(self, weight: Tensor) -> Tensor:
        """A Linear weight (out, in) as the right operand of the product: (in, out), in the matmul dtype."""
        weight = weight.T.contiguous()
        return weight if self.matmul_dtype is None else weight.to(self.matmul_dtype)

    def _affine(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        if self.matmul_dtype is None:
            return torch.addmm(bias, x, weight)
        return torch.mm(x.to(self.matmul_dtype), weight).to(x.dtype).add_(bias)

    def _dense(self, x: Tensor, layer: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        weight, bias, slope = layer
        return nn.functional.prelu(self._affine(x, weight, bias), slope)

    def forward(self, joints: Tensor, betas: Tensor) -> list[Tensor]:
        """Root-relative ``joints`` (B, J, 3), ``betas`` (B, num_betas) -> per part (B, n_twist, 2)."""
        out = []
        for joint_index, num_twists, layers, (head_weight, head_bias) in self.parts:
            pos = self._dense(joints.index_select(1, joint_index).flatten(1), layers[0])
            x = torch.cat([pos, self._dense(betas, layers[1])], dim=1)
            for first, second in zip(layers[2::2], layers[3::2], strict=True):
                x = x + self._dense(self._dense(x, first), second)
            out.append(normalize_phi(self._affine(x, head_weight, head_bias).view(-1, num_twists, 2)))
        return out


def _check_disjoint_twists(tree: KinematicTree) -> None:
    seen: set[int] = set()
    for part in tree.parts:
        shared = seen.intersection(part.twist_joints)
        if shared:
            raise ValueError(
                f"{tree.name}: part {part.name} predicts twists of joints {sorted(shared)} that an "
                "earlier part already predicts"
            )
        seen.update(part.twist_joints)
