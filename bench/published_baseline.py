"""The published implementation's structure, re-implemented plainly from METHOD.md for the benchmark's baseline.

What makes it the reference's structure (not its code): rest joints come from mesh forwards of the body model (the
zero shape for Shape Inverse, then the estimated shape, as the reference's evaluator does), and PR-C V1 and AnalyIK
walk the tree one joint at a time in Python, each joint's rotation split into swing and twist explicitly
(METHOD.md sections 3 and 5), the result converted to axis-angle. The arithmetic per joint is the same as the
project's, so the rotations agree with it (the benchmark checks that).
"""

from __future__ import annotations

import torch
from smplx.lbs import lbs
from torch import Tensor

from lib.kinematics.rotations import minimal_rotation, normalize, rotmat_to_axis_angle, swing
from lib.kinematics.skeleton import bone_lengths, two_direction_rotation
from lib.kinematics.tree import KinematicTree


def smplx_lbs(body, betas: Tensor, pose: Tensor) -> tuple[Tensor, Tensor]:
    """smplx's own ``lbs`` on the project body model's buffers: (vertices, joints) for betas (B, K), flat axis-angle
    pose (B, P * 3)."""
    return lbs(
        betas,
        pose,
        body.v_template,
        body.shapedirs,
        body.posedirs,
        body.J_regressor,
        body.parents,
        body.lbs_weights,
        pose2rot=True,
    )


def mesh_rest_joints(body, betas: Tensor, chunk: int = 1024) -> Tensor:
    """Rest joints (B, J, 3), root-relative, from zero-pose mesh forwards with smplx's ``lbs``, ``chunk`` bodies at a
    time (the reference's evaluation batch; a mesh batch of 16,384 would need gigabytes)."""
    pieces = []
    for part in betas.split(chunk):
        _, joints = smplx_lbs(body, part, part.new_zeros(part.shape[0], body.num_pose_joints * 3))
        pieces.append(joints - joints[:, :1])
    return torch.cat(pieces)


def shape_inverse(tree: KinematicTree, body, pinv: Tensor, joints: Tensor) -> Tensor:
    """betas (B, K): least squares on bone lengths against the zero shape's, which a mesh forward gives."""
    zero = mesh_rest_joints(body, joints.new_zeros(1, body.num_betas))
    delta = bone_lengths(tree, joints.double()) - bone_lengths(tree, zero.double())
    return (delta @ pinv.T).to(joints.dtype)


def refine_v1(tree: KinematicTree, rest: Tensor, target: Tensor) -> Tensor:
    """PR-C V1 one joint at a time (METHOD.md section 3): (B, J, 3) root-relative refined joints."""
    placed = {tree.root: torch.zeros_like(target[:, 0])}
    effective = target.clone()
    orientation = {tree.root: two_direction_rotation(tree, tree.root, rest, target)}
    for level in tree.levels:
        for j in level:
            p = tree.parents[j]
            if p in orientation:
                placed[j] = placed[p] + (orientation[p] @ (rest[:, j] - rest[:, p])[..., None])[..., 0]
            else:
                length = (rest[:, j] - rest[:, p]).norm(dim=-1, keepdim=True)
                placed[j] = placed[p] + length * normalize(target[:, j] - placed[p])
            if j in tree.two_direction_by_joint:
                effective[:, j] = placed[j]
                orientation[j] = two_direction_rotation(tree, j, rest, effective)
    out = target.clone()
    for j, q in placed.items():
        out[:, j] = q
    return out


def analytic_ik(tree: KinematicTree, rest: Tensor, target: Tensor) -> Tensor:
    """AnalyIK one joint at a time (METHOD.md section 5): (B, P, 3) axis-angle, twist removed by an explicit
    swing/twist split of each joint's rotation."""
    batch = rest.shape[0]
    eye = torch.eye(3, dtype=rest.dtype, device=rest.device).expand(batch, 3, 3)
    local = [eye] * tree.num_pose_joints
    glob = {tree.root: two_direction_rotation(tree, tree.root, rest, target)}
    local[tree.root] = glob[tree.root]
    for level in tree.levels:
        for j in level:
            p = tree.parents[j]
            if j in tree.ik_child:
                c = tree.ik_child[j]
                rest_bone = rest[:, c] - rest[:, j]
                posed_bone = (glob[p].transpose(-1, -2) @ (target[:, c] - target[:, j])[..., None])[..., 0]
                rotation = minimal_rotation(rest_bone, posed_bone)
                if j in tree.relative_joints:
                    parent_bone = (glob[p].transpose(-1, -2) @ (target[:, j] - target[:, p])[..., None])[..., 0]
                    rotation = minimal_rotation(rest[:, j] - rest[:, p], parent_bone).transpose(-1, -2) @ rotation
                local[j] = swing(rotation, rest_bone)  # the reference splits swing and twist, keeping the swing
            elif j in tree.two_direction_by_joint:
                local[j] = two_direction_rotation(tree, j, rest, target, glob[p])
            if j < tree.num_pose_joints:
                glob[j] = glob[p] @ local[j]
    return rotmat_to_axis_angle(torch.stack(local, dim=1))


def solve(tree: KinematicTree, body, pinv: Tensor, joints: Tensor) -> tuple[Tensor, Tensor]:
    """SI -> rest joints by a mesh forward -> PR-C V1 -> AnalyIK: betas (B, K), axis-angle pose (B, P, 3)."""
    target = joints - joints[:, :1]
    betas = shape_inverse(tree, body, pinv, target)
    rest = mesh_rest_joints(body, betas)
    return betas, analytic_ik(tree, rest, refine_v1(tree, rest, target))
