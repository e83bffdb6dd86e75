"""The training step: a few optimizer steps on a tiny db lower the loss; the twist-only path needs no mesh."""
import torch

from lib.core.config import REPO_ROOT
from lib.data.db import PoseDataset
from lib.data.synthetic import make_synthetic_db
from lib.engine.losses import training_step
from lib.kinematics.tree import SMPL_TREE
from lib.models.body_model import BodyModel
from lib.models.pan import PartAwareNetwork

OPEN_SMPL = REPO_ROOT / "data/open/smpl/OPEN_SMPL_NEUTRAL.npz"


def _batch(n=64, seed=5):
    body = BodyModel.from_file(OPEN_SMPL)
    data = PoseDataset(make_synthetic_db("smpl", n, seed, body, split="train"), "smpl")
    return body, data.batch(torch.arange(n))


def test_a_few_steps_lower_the_loss():
    torch.manual_seed(0)
    body, batch = _batch()
    network = PartAwareNetwork(SMPL_TREE)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    weights = {"phi": 1.0, "theta": 0.0, "vert": 1.0}
    losses = []
    for _ in range(8):
        out = training_step(SMPL_TREE, body, network, batch, weights)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert set(out.terms) == {"phi", "vert"}
    assert losses[-1] < 0.8 * losses[0]


def test_twist_only_loss_matches_the_mesh_path():
    torch.manual_seed(0)
    body, batch = _batch(16, 6)
    network = PartAwareNetwork(SMPL_TREE).eval()
    cheap = training_step(SMPL_TREE, body, network, batch, {"phi": 1.0, "vert": 0.0})
    full = training_step(SMPL_TREE, body, network, batch, {"phi": 1.0, "vert": 0.0}, with_analyik=True)
    assert cheap.mixik_mpve is None and full.analyik_mpve is not None
    assert torch.allclose(cheap.terms["phi"], full.terms["phi"], atol=1e-6)


def test_theta_loss_is_zero_for_the_oracle_twists():
    body, batch = _batch(16, 7)

    class Oracle(torch.nn.Module):
        def forward(self, joints, betas):
            from lib.solver.twist import part_phis
            return part_phis(SMPL_TREE, batch["twist_angle"])

    out = training_step(SMPL_TREE, body, Oracle(), batch, {"phi": 1.0, "theta": 1.0, "vert": 1.0})
    assert out.terms["phi"].item() < 1e-10 and out.terms["theta"].item() < 1e-10
    assert out.terms["vert"].item() < 0.02  # only the unobservable leaf rotations remain (metres)


def test_trainer_stops_on_a_nan_loss(tmp_path, monkeypatch):
    import pytest

    from lib.core.smpl.config import get_cfg
    from lib.data.db import write_db
    from lib.engine import trainer as trainer_module
    from lib.engine.losses import StepOutput

    db_dir = tmp_path / "db"
    for split, seed in (("train", 1), ("test", 2)):
        write_db(db_dir / f"amass_{split}_db.pt", make_synthetic_db("smpl", 32, seed, str(OPEN_SMPL), split=split),
                 "smpl")
    cfg = get_cfg("configs/smpl/open_train.yaml", [
        "DATA.DB_DIR", str(db_dir), "TRAIN.DATASETS_3D", "['AMASS']", "TRAIN.DATASET_EVAL", "AMASS",
        "TRAIN.BATCH_SIZE", "8", "LOGDIR", str(tmp_path / "run"), "TRAIN.END_EPOCH", "1"])

    def nan_step(*args, **kwargs):
        nan = torch.tensor(float("nan"), requires_grad=True)
        return StepOutput(nan, {"phi": nan}, None, None)

    monkeypatch.setattr(trainer_module, "training_step", nan_step)
    with pytest.raises(FloatingPointError, match="loss became nan at epoch 0, step 0"):
        trainer_module.Trainer(cfg).fit()
