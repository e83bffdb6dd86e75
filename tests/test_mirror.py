"""Test-time mirror averaging (lib/solver/mirror.py): the left <-> right slot map, the mirror identity of twists on
the open body models, the averaging wrapper, its wiring through the config, and the shipped checkpoints with it."""

import math

import pytest
import roma
import torch

from lib.api import load_solver
from lib.core.config import body_defaults, load_config
from lib.data.db import PoseDataset
from lib.data.synthetic import make_synthetic_db
from lib.engine.build import build_body_model, build_inference_network, build_solver
from lib.engine.evaluator import evaluate_batch
from lib.kinematics.tree import SMPL_TREE, SMPLX_TREE
from lib.models.pan import PartAwareNetwork
from lib.solver.mirror import MirrorAveragedNetwork, mirror_joints
from lib.solver.twist import part_phis, twist_angles

FLIP = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))


def _body(body, dtype=torch.float64):
    cfg = load_config(body_defaults(body))
    return cfg, build_body_model(cfg, torch.device("cpu"), dtype=dtype)


def _mirror_pose(tree, rotmats):
    """Local rotations (B, P, 3, 3) of the mirror-image pose: R -> M R M, slots swapped left <-> right."""
    mirrored = FLIP.to(rotmats) @ rotmats @ FLIP.to(rotmats)
    return mirrored[:, list(tree.mirror_slots[: tree.num_pose_joints])]


def _twisted_poses(tree, rest, batch, seed):
    """Random local rotations, the first sample the rest pose (twist 0), the second every twist joint turned by
    pi - 1e-3 about its rest bone (twist near pi), the rest random."""
    generator = torch.Generator().manual_seed(seed)
    rotmats = roma.rotvec_to_rotmat(0.7 * torch.randn(batch, tree.num_pose_joints, 3, generator=generator).double())
    rotmats[0] = torch.eye(3, dtype=torch.float64)
    rotmats[1] = torch.eye(3, dtype=torch.float64)
    for j, child in tree.twist_child.items():
        bone = rest[child] - rest[j]
        rotmats[1, j] = roma.rotvec_to_rotmat((math.pi - 1e-3) * bone / bone.norm())
    return rotmats


def test_mirror_slots_swap_left_and_right_by_name():
    assert SMPL_TREE.mirror_slots[:3] == (0, 2, 1)
    for tree in (SMPL_TREE, SMPLX_TREE):
        mirror = tree.mirror_slots
        assert sorted(mirror) == list(range(tree.num_joints))
        assert all(mirror[mirror[j]] == j for j in range(tree.num_joints))
        for j, k in enumerate(mirror):
            name = tree.joint_names[j]
            if j == k:
                assert "left" not in name and "right" not in name
            else:
                assert tree.joint_names[k] == name.replace("left", "#").replace("right", "left").replace("#", "right")
    names = SMPLX_TREE.joint_names
    assert names[SMPLX_TREE.mirror_slots[names.index("left_thumb3")]] == "right_thumb3"
    assert names[SMPLX_TREE.mirror_slots[names.index("right_pinky")]] == "left_pinky"  # a finger tip slot
    midline = [names[j] for j in range(SMPLX_TREE.num_joints) if SMPLX_TREE.mirror_slots[j] == j]
    assert midline == ["pelvis", "spine1", "spine2", "spine3", "neck", "head", "jaw", "nose"]


@pytest.mark.parametrize("body", ["smpl", "smplx"])
def test_mirror_pose_mirrors_joints_and_negates_counterpart_twists(body):
    """The identity the wrapper rests on, checked by forward kinematics on the open model: the mirrored pose has the
    mirrored joints (same betas: the shape space is symmetric), and the twist of j equals minus the twist of its
    counterpart on the mirrored pose, at twist 0, near pi and for random rotations."""
    _, body_model = _body(body)
    tree = SMPL_TREE if body == "smpl" else SMPLX_TREE
    betas = torch.randn(8, 10, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    betas[:2] = 0.0
    rest = body_model.rest_joints(betas)
    rotmats = _twisted_poses(tree, rest[0], 8, seed=4)
    mirrored = _mirror_pose(tree, rotmats)

    joints = body_model(rotmats, betas).joints
    mirrored_joints = body_model(mirrored, betas).joints
    gap = (mirrored_joints - mirror_joints(tree, joints)).norm(dim=-1).max().item()
    assert gap < 1e-3, f"mirrored pose is {gap * 1000:.3f} mm away from the mirrored joints"

    angles = twist_angles(tree, rest, rotmats)  # (B, P - 1), slot j at column j - 1
    mirrored_angles = twist_angles(tree, rest, mirrored)
    twisted = sorted(j for part in tree.parts for j in part.twist_joints)
    counterpart = [tree.mirror_slots[j] for j in twisted]
    own = angles[:, [j - 1 for j in twisted]]
    theirs = mirrored_angles[:, [k - 1 for k in counterpart]]
    wrapped = torch.remainder(own + theirs + math.pi, 2 * math.pi) - math.pi  # own == -theirs modulo 2 pi
    assert wrapped.abs().max().item() < 2e-3
    assert own[0].abs().max().item() < 1e-9  # the rest pose: no twist
    assert (own[1].abs() - (math.pi - 1e-3)).abs().max().item() < 1e-2  # near pi (betas 0: the rest bones)


class LookupNetwork(torch.nn.Module):
    """A perfect twist network for a fixed set of skeletons: returns the stored twists of the nearest one."""

    def __init__(self, tree, skeletons, phis):
        super().__init__()
        self.tree, self.skeletons, self.phis = tree, skeletons, phis  # (N, J, 3), list per part of (N, n, 2)

    def forward(self, joints, betas):
        nearest = torch.cdist(joints.flatten(1), self.skeletons.flatten(1)).argmin(dim=1)
        return [phi[nearest] for phi in self.phis]


@pytest.mark.parametrize("body", ["smpl", "smplx"])
def test_wrapper_returns_the_truth_when_both_readings_are_true(body):
    """A network exact on a skeleton and on its mirror image: the average is the truth. A wrong slot map or sign
    would average the truth with another joint's (or the negated) twist."""
    _, body_model = _body(body)
    tree = SMPL_TREE if body == "smpl" else SMPLX_TREE
    betas = torch.zeros(6, 10, dtype=torch.float64)
    rest = body_model.rest_joints(betas)
    rotmats = _twisted_poses(tree, rest[0], 6, seed=9)
    rotmats[:, 0] = torch.eye(3, dtype=torch.float64)
    mirrored = _mirror_pose(tree, rotmats)
    joints = body_model(rotmats, betas).joints
    mirrored_joints = body_model(mirrored, betas).joints
    truth = part_phis(tree, twist_angles(tree, rest, rotmats))
    mirrored_truth = part_phis(tree, twist_angles(tree, rest, mirrored))
    network = LookupNetwork(
        tree,
        torch.cat([joints, mirrored_joints]),
        [torch.cat([a, b]) for a, b in zip(truth, mirrored_truth, strict=True)],
    )
    averaged = MirrorAveragedNetwork(network, tree, rest[0])(joints, betas)
    for got, expected in zip(averaged, truth, strict=True):  # the open models are symmetric to ~0.03 mm, not exactly
        torch.testing.assert_close(got, expected, rtol=0, atol=2e-4)


def test_wrapper_is_mirror_equivariant_and_keeps_the_part_layout():
    _, body_model = _body("smplx", torch.float32)
    tree = SMPLX_TREE
    torch.manual_seed(0)
    network = PartAwareNetwork(tree).eval()
    rest = body_model.rest_joints(torch.zeros(1, 10))[0]
    averaged = MirrorAveragedNetwork(network, tree, rest)
    joints = rest + 0.05 * torch.randn(5, tree.num_joints, 3)
    betas = torch.randn(5, 10)
    with torch.no_grad():
        direct = averaged(joints, betas)
        from_mirror = averaged(mirror_joints(tree, joints), betas)
    assert [p.shape for p in direct] == [(5, len(part.twist_joints), 2) for part in tree.parts]
    table = {
        j: phi[:, k] for part, phi in zip(tree.parts, direct, strict=True) for k, j in enumerate(part.twist_joints)
    }
    table_m = {
        j: phi[:, k] for part, phi in zip(tree.parts, from_mirror, strict=True) for k, j in enumerate(part.twist_joints)
    }
    for j, phi in table.items():
        conjugate = table_m[tree.mirror_slots[j]] * torch.tensor([1.0, -1.0])
        torch.testing.assert_close(phi, conjugate, rtol=0, atol=1e-5)
        torch.testing.assert_close(phi.norm(dim=-1), torch.ones(5), rtol=0, atol=1e-5)


def test_asymmetric_body_is_refused_with_the_setting_to_change():
    _, body_model = _body("smpl", torch.float32)
    rest = body_model.rest_joints(torch.zeros(1, 10))[0].clone()
    rest[18, 1] += 0.02  # the left elbow 2 cm higher than the right
    with pytest.raises(ValueError, match=r"left_elbow.*20\.0 mm.*MODEL\.MIRROR_AVERAGE False"):
        MirrorAveragedNetwork(PartAwareNetwork(SMPL_TREE), SMPL_TREE, rest)


def test_config_and_api_switch_it():
    cfg, body_model = _body("smpl", torch.float32)
    assert cfg.MODEL.MIRROR_AVERAGE is False  # the paper's MixIK unless a config turns it on
    assert isinstance(build_inference_network(cfg, body_model), PartAwareNetwork)
    cfg.defrost()
    cfg.MODEL.MIRROR_AVERAGE = True
    averaged = build_inference_network(cfg, body_model)
    assert isinstance(averaged, MirrorAveragedNetwork) and not averaged.training
    open_eval = load_config(body_defaults("smpl"), "configs/smpl/open_eval.yaml")
    assert open_eval.MODEL.MIRROR_AVERAGE is True
    assert isinstance(load_solver("smpl").network, MirrorAveragedNetwork)
    assert isinstance(load_solver("smpl", mirror_average=False).network, PartAwareNetwork)


@pytest.mark.parametrize("body", ["smpl", "smplx"])
def test_shipped_checkpoint_gains_from_mirror_averaging(body):
    """On generated test samples the averaged twists give a lower MixIK MPVE than the network alone."""
    cfg, body_model = _body(body, torch.float32)
    solver = build_solver(cfg, body_model)
    cfg.defrost()
    cfg.MODEL.PRETRAINED = f"data/open/{body}/pretrained_model/model_best.pth.tar"
    plain = build_inference_network(cfg, body_model)
    cfg.MODEL.MIRROR_AVERAGE = True
    averaged = build_inference_network(cfg, body_model)
    # 2,048 samples: the gain (0.04 mm SMPL, 0.025 mm SMPL-X here) is 3-5 standard errors of the paired difference;
    # on a few hundred samples it can go either way
    samples = 2048
    dataset = PoseDataset(make_synthetic_db(body, samples, 17, body_model, split="test"), body, num_betas=10)
    alone, both = 0.0, 0.0
    with torch.no_grad():
        for start in range(0, samples, 512):
            batch = dataset.batch(list(range(start, start + 512)))
            alone += evaluate_batch(body_model, solver, batch, plain)["mixik_mpve"].sum().item() / samples
            both += evaluate_batch(body_model, solver, batch, averaged)["mixik_mpve"].sum().item() / samples
    assert both < alone - 0.01, f"mirror-averaged MixIK {both:.3f} mm is not below the network's {alone:.3f} mm"
