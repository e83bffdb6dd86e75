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
    from conftest import amass_options, write_amass_dbs

    from lib.core.smpl.config import get_cfg
    from lib.engine import trainer as trainer_module
    from lib.engine.losses import StepOutput

    db_dir = tmp_path / "db"
    db_dir.mkdir()
    write_amass_dbs(db_dir, train=(32, 1), test=(32, 2))
    cfg = get_cfg(
        "configs/smpl/open_train.yaml",
        [
            *amass_options(db_dir),
            "TRAIN.BATCH_SIZE",
            "8",
            "LOGDIR",
            str(tmp_path / "run"),
            "TRAIN.END_EPOCH",
            "1",
        ],
    )

    def nan_step(*args, **kwargs):
        nan = torch.tensor(float("nan"), requires_grad=True)
        return StepOutput(nan, {"phi": nan}, None, None)

    monkeypatch.setattr(trainer_module, "training_step", nan_step)
    with pytest.raises(FloatingPointError, match="loss became nan at epoch 0, step 0"):
        trainer_module.Trainer(cfg).fit()


class _RecordingOracle(torch.nn.Module):
    """Returns the true twists whatever it reads, and keeps what it read."""

    def __init__(self, batch):
        super().__init__()
        self.batch, self.seen = batch, None

    def forward(self, joints, betas):
        from lib.solver.twist import part_phis

        self.seen = joints.detach().clone()
        return part_phis(SMPL_TREE, self.batch["twist_angle"])


def test_joint_noise_zero_reads_the_clean_joints_and_draws_nothing():
    from lib.kinematics.skeleton import root_relative

    body, batch = _batch(16, 8)
    oracle = _RecordingOracle(batch)
    state = torch.get_rng_state()
    training_step(SMPL_TREE, body, oracle, batch, {"phi": 1.0, "vert": 1.0}, joint_noise_mm=0.0)
    assert torch.equal(torch.get_rng_state(), state)  # no random numbers drawn: today's runs bit for bit
    clean = root_relative(SMPL_TREE, body.posed_joints(root_zeroed_pose(batch), batch["betas"]))
    assert torch.allclose(oracle.seen, clean, atol=1e-6)


def root_zeroed_pose(batch):
    from lib.engine.losses import root_zeroed

    return root_zeroed(batch["pose"])


def test_joint_noise_shows_noisy_canonical_joints_and_keeps_clean_targets():
    from lib.kinematics.skeleton import bone_lengths

    body, batch = _batch(64, 9)
    weights = {"phi": 1.0, "vert": 1.0}
    oracle = _RecordingOracle(batch)
    clean_out = training_step(SMPL_TREE, body, oracle, batch, weights)
    clean_seen = oracle.seen
    torch.manual_seed(4)
    noisy_out = training_step(SMPL_TREE, body, oracle, batch, weights, joint_noise_mm=20.0, noise_fraction=0.5)
    moved = (oracle.seen - clean_seen).norm(dim=-1).mean(dim=1)  # (B,) metres
    untouched = moved < 1e-9
    assert 16 <= int(untouched.sum()) <= 48  # about half the batch keeps its clean joints
    noisy = oracle.seen[~untouched]
    # at least the noise; up to a whole-body turn, since a noisy pelvis orientation turns the canonical body
    assert 0.01 < moved[~untouched].median().item() < 1.0
    assert noisy[:, SMPL_TREE.root].abs().max() < 1e-6  # root-relative, like the canonical skeleton
    # PR-C + AnalyIK give back the bone lengths of the known body, whatever the noise did to them
    rest = body.rest_joints(batch["betas"][~untouched])
    assert torch.allclose(bone_lengths(SMPL_TREE, noisy), bone_lengths(SMPL_TREE, rest), atol=1e-4)
    # MixIK and the losses stay on the clean joints: with input-blind twists the vertex loss does not move
    assert torch.allclose(noisy_out.terms["vert"], clean_out.terms["vert"], atol=1e-7)


def test_joint_noise_in_the_robust_mode_turns_the_canonical_body_less():
    from lib.solver.pipeline import RobustOptions

    body, batch = _batch(64, 10)
    oracle = _RecordingOracle(batch)
    training_step(SMPL_TREE, body, oracle, batch, {"phi": 1.0, "vert": 0.0})
    clean = oracle.seen
    moved = {}
    for name, robust in (("paper", None), ("robust", RobustOptions())):
        torch.manual_seed(5)  # the same samples and the same noise for both
        training_step(
            SMPL_TREE,
            body,
            oracle,
            batch,
            {"phi": 1.0, "vert": 0.0},
            joint_noise_mm=20.0,
            noise_fraction=1.0,
            robust=robust,
        )
        moved[name] = (oracle.seen - clean).norm(dim=-1).mean(dim=1).median()
    # the paper's pelvis orientation swings the whole canonical body; the rigid-group fit much less
    assert moved["robust"] < 0.6 * moved["paper"]


def test_synthetic_training_validates_on_its_own_split_never_the_test_db(tmp_path):
    from lib.core.smpl.config import get_cfg
    from lib.engine.trainer import Trainer

    db_dir = tmp_path / "db"
    cfg = get_cfg(
        "configs/smpl/open_train.yaml",
        [
            "DATA.DB_DIR",
            str(db_dir),
            "TRAIN.DATASETS_3D",
            "['SYNTHETIC']",
            "DATA.SYNTHETIC_TRAIN_SIZE",
            "24",
            "DATA.SYNTHETIC_VAL_SIZE",
            "16",
            "TRAIN.BATCH_SIZE",
            "8",
            "TRAIN.JOINT_NOISE_MM",
            "0.0",
            "LOGDIR",
            str(tmp_path / "run"),
            "TRAIN.END_EPOCH",
            "1",
        ],
    )
    trainer = Trainer(cfg)
    trainer.fit()
    assert sorted(p.name for p in db_dir.glob("*.pt")) == ["synthetic_train_db.pt", "synthetic_val_db.pt"]
    assert len(trainer.val_set) == 16
    from lib.data.db import load_db

    names = set(load_db(db_dir / "synthetic_val_db.pt", "smpl")["vid_name"].tolist())
    assert names and all(n.startswith("synthetic_smpl_val_s3") for n in names)


def test_validation_scores_what_evaluation_runs_with_mirror_averaging(tmp_path):
    """MODEL.MIRROR_AVERAGE in a training config: the validation MPVE is that of the mirror-averaged twists."""
    from lib.core.smpl.config import get_cfg
    from lib.engine.trainer import Trainer
    from lib.solver.mirror import MirrorAveragedNetwork

    def trainer_with(mirror: bool) -> Trainer:
        cfg = get_cfg(
            "configs/smpl/open_train.yaml",
            ["DATA.DB_DIR", str(tmp_path / "db"), "TRAIN.DATASETS_3D", "['SYNTHETIC']"]
            + ["DATA.SYNTHETIC_TRAIN_SIZE", "24", "DATA.SYNTHETIC_VAL_SIZE", "64", "TRAIN.BATCH_SIZE", "8"]
            + ["LOGDIR", str(tmp_path / f"run_{mirror}"), "MODEL.MIRROR_AVERAGE", str(mirror)]
            + ["TRAIN.PRETRAINED_REGRESSOR", "data/open/smpl/pretrained_model/model_best.pth.tar"],
        )
        return Trainer(cfg)

    plain, averaged = trainer_with(False), trainer_with(True)
    assert plain.validation_network is plain.network
    assert isinstance(averaged.validation_network, MirrorAveragedNetwork)
    assert averaged.validation_network.network is averaged.network  # follows the weights being trained
    plain_score, plain_analyik = plain.validate(0)
    averaged_score, averaged_analyik = averaged.validate(0)
    assert averaged_analyik == plain_analyik

    # the same number composed here: the training-style pipeline with the wrapper around the plain trainer's network
    wrapped = MirrorAveragedNetwork(plain.network, SMPL_TREE, plain.body_model.rest_joints(torch.zeros(1, 10))[0])
    batch = plain.val_set.batch(list(range(64)))
    with torch.no_grad():
        out = training_step(SMPL_TREE, plain.body_model, wrapped, batch, plain.loss_weights, with_analyik=True)
    assert abs(out.mixik_mpve.mean().item() - averaged_score) < 1e-4
    assert averaged_score != plain_score
