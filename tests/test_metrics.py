"""Metrics in mm, root-relative joints, and per-sample (not per-batch) averaging."""

import torch

from lib.engine.metrics import MeanMeter, mpbe, mpjpe, mpve
from lib.kinematics.tree import SMPL_TREE


def test_mpjpe_is_root_relative_and_in_mm():
    target = torch.randn(4, 24, 3, dtype=torch.float64)
    shifted = target + torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert mpjpe(SMPL_TREE, shifted, target).abs().max() < 1e-9
    moved = target.clone()
    moved[:, 5] += torch.tensor([0.0, 0.024, 0.0], dtype=torch.float64)  # one joint 24 mm off
    assert torch.allclose(mpjpe(SMPL_TREE, moved, target), torch.full((4,), 1.0, dtype=torch.float64))


def test_mpve_and_mpbe_in_mm():
    v = torch.zeros(2, 10, 3)
    assert torch.allclose(mpve(v + torch.tensor([0.003, 0.0, 0.004]), v), torch.full((2,), 5.0))
    rest = torch.zeros(1, 24, 3)
    for j in range(1, 24):
        rest[0, j] = rest[0, SMPL_TREE.parents[j]] + torch.tensor([0.1, 0.0, 0.0])
    longer = rest * 1.1  # every bone 10 mm longer
    assert torch.allclose(mpbe(SMPL_TREE, longer, rest), torch.tensor([10.0]), atol=1e-4)


def test_mean_meter_weights_samples_not_batches():
    meter = MeanMeter()
    meter.update({"x": torch.tensor([1.0, 1.0, 1.0])})
    meter.update({"x": torch.tensor([5.0])})
    assert meter.count == 4 and meter.means()["x"] == 2.0  # batch means would give 3.0
