"""What the evaluator feeds the Part-aware Network (METHOD.md section 9, step 5), and a guard on the shipped
checkpoints: MixIK must beat AnalyIK.

The network input is the canonical skeleton: the AnalyIK pose with its root rotation set to zero, through the body
model, root-relative, plus the Shape Inverse betas. Feeding it anything else (e.g. the posed target) still runs and
still gives plausible numbers, only worse ones; these tests make that visible.
"""

import pytest
import roma
import torch

from lib.core.config import body_defaults, load_config
from lib.data.db import PoseDataset
from lib.data.synthetic import make_synthetic_db
from lib.engine.build import build_body_model, build_network, build_solver
from lib.engine.evaluator import evaluate_batch


class SpyNetwork(torch.nn.Module):
    """Stands in for the Part-aware Network: records each (joints, betas) it is given, predicts zero twist."""

    def __init__(self, tree):
        super().__init__()
        self.tree = tree
        self.calls = []

    def forward(self, joints, betas):
        self.calls.append((joints.clone(), betas.clone()))
        identity = joints.new_tensor([1.0, 0.0])
        return [identity.expand(joints.shape[0], len(part.twist_joints), 2) for part in self.tree.parts]


def _setup(body, dtype):
    cfg = load_config(body_defaults(body))
    body_model = build_body_model(cfg, torch.device("cpu"), dtype=dtype)
    return cfg, body_model, build_solver(cfg, body_model)


def _batch(body, body_model, n, seed):
    """The first ``n`` samples of a synthetic test db (db layout, with ground-truth twists), in the model's dtype."""
    dataset = PoseDataset(make_synthetic_db(body, n, seed, body_model, split="test"), body, num_betas=10)
    return {k: v.to(body_model.dtype) for k, v in dataset.batch(list(range(n))).items()}


@pytest.mark.parametrize("body", ["smpl", "smplx"])
def test_network_sees_the_canonical_skeleton_whatever_the_global_orientation(body):
    _, body_model, solver = _setup(body, torch.float64)
    batch = _batch(body, body_model, 16, seed=31)
    spy = SpyNetwork(solver.tree)
    evaluate_batch(body_model, solver, batch, spy)
    ((joints, betas),) = spy.calls

    # expected, composed here: AnalyIK's rotations with the root rotation zeroed, through the body model
    truth = body_model(batch["pose"], batch["betas"]).joints
    solution = solver.analytic(truth - truth[:, :1])
    rotmats = solution.rotmats.clone()
    rotmats[:, 0] = torch.eye(3, dtype=torch.float64)
    canonical = body_model(rotmats, solution.betas).joints
    canonical = canonical - canonical[:, :1]
    torch.testing.assert_close(betas, solution.betas, rtol=0, atol=1e-12)
    error = (joints - canonical).norm(dim=-1).max().item()
    assert error < 1e-9, f"network input is {error * 1000:.3f} mm away from the canonical skeleton"

    # a random global orientation of the ground truth changes nothing the network sees
    turn = roma.random_rotmat(16, dtype=torch.float64)
    turned = dict(batch, pose=batch["pose"].clone())
    turned["pose"][:, 0] = roma.rotmat_to_rotvec(turn @ roma.rotvec_to_rotmat(batch["pose"][:, 0]))
    evaluate_batch(body_model, solver, turned, spy)
    turned_joints, turned_betas = spy.calls[1]
    # smplx's Rodrigues (1e-8 added to the rotation vector) is orthonormal to ~1e-8 only, so the turned ground
    # truth's bone lengths differ by ~1e-9 m: betas move by ~5e-7, joints by ~3e-8 m
    error = (turned_joints - joints).norm(dim=-1).max().item()
    assert error < 1e-6, f"network input moves by {error * 1000:.3f} mm when the body is turned"
    torch.testing.assert_close(turned_betas, betas, rtol=0, atol=1e-5)


@pytest.mark.parametrize("checkpoint", ["model_best.pth.tar", "model_synthetic_only.pth.tar"])
@pytest.mark.parametrize("body", ["smpl", "smplx"])
def test_shipped_checkpoint_mixik_beats_analyik(body, checkpoint):
    cfg, body_model, solver = _setup(body, torch.float32)
    cfg.defrost()
    cfg.MODEL.PRETRAINED = f"data/open/{body}/pretrained_model/{checkpoint}"
    network = build_network(cfg, torch.device("cpu"), "MODEL.PRETRAINED").eval()
    batch = _batch(body, body_model, 256, seed=5)
    out = evaluate_batch(body_model, solver, batch, network, oracle_on_refined=cfg.EVAL.ORACLE_ON_REFINED)
    analyik, mixik = out["analyik_mpve"].mean().item(), out["mixik_mpve"].mean().item()
    # a network reading the wrong input (e.g. the posed target) lands above AnalyIK
    assert mixik < 0.95 * analyik, f"MixIK MPVE {mixik:.2f} mm is not below AnalyIK's {analyik:.2f} mm"
