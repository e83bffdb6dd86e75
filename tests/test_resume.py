"""Resuming a training run: 2 epochs + resume 2 equals 4 straight epochs bit for bit (CPU), with the saved config."""

from __future__ import annotations

import pytest
import torch
from conftest import amass_options, write_amass_dbs

from lib.core.smpl.config import get_cfg
from lib.engine.cli import train_config
from lib.engine.trainer import Trainer


@pytest.fixture(scope="module")
def tiny_dbs(tmp_path_factory):
    return write_amass_dbs(tmp_path_factory.mktemp("db"), train=(40, 21), test=(16, 22))


def _opts(db_dir, logdir, end_epoch):
    # dropout, a shuffled db (5 batches, 3 used per epoch), Adam and a scheduler that lowers the lr every epoch
    # without improvement: everything whose state a resumed run must restore
    return [
        *amass_options(db_dir),
        "TRAIN.BATCH_SIZE",
        "8",
        "TRAIN.MAX_STEPS_PER_EPOCH",
        "3",
        "TRAIN.VAL_MAX_SAMPLES",
        "8",
        "LOSS.VERT_W",
        "1.0",
        "TRAIN.GEN_LR",
        "0.01",
        "TRAIN.LR_PATIENCE",
        "0",
        "LOGDIR",
        str(logdir),
        "TRAIN.END_EPOCH",
        str(end_epoch),
    ]


def _fit(cfg, resume_state=None) -> list[float]:
    """Train; returns the mean training loss of every epoch run."""
    trainer = Trainer(cfg, resume_state)
    losses, train_epoch = [], trainer.train_epoch
    trainer.train_epoch = lambda epoch: losses.append(train_epoch(epoch)) or losses[-1]
    trainer.fit()
    return losses


def test_resume_continues_bit_exactly(tiny_dbs, tmp_path):
    straight = _fit(get_cfg("configs/smpl/open_train.yaml", _opts(tiny_dbs, tmp_path / "straight", 4)))
    first = _fit(get_cfg("configs/smpl/open_train.yaml", _opts(tiny_dbs, tmp_path / "split", 2)))
    original_config = (tmp_path / "split" / "config.yaml").read_text()

    # TRAIN.RESUME alone (plus the one override that makes it go on): the run's own config comes from the checkpoint
    checkpoint = tmp_path / "split" / "checkpoint.pth.tar"
    cfg, state = train_config(get_cfg, ["TRAIN.RESUME", str(checkpoint), "TRAIN.END_EPOCH", "4"], "train")
    assert (cfg.TRAIN.BATCH_SIZE, cfg.LOSS.VERT_W, cfg.DATA.DB_DIR) == (8, 1.0, str(tiny_dbs))
    resumed = _fit(cfg, state)

    assert len(straight) == 4 and straight == first + resumed
    a = torch.load(tmp_path / "straight" / "checkpoint.pth.tar", weights_only=True)
    b = torch.load(checkpoint, weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    for name, tensor in a["gen_state_dict"].items():
        assert torch.equal(tensor, b["gen_state_dict"][name]), name
    for index, moments in a["gen_optimizer"]["state"].items():
        assert all(torch.equal(v, b["gen_optimizer"]["state"][index][k]) for k, v in moments.items())
    assert a["scheduler"] == b["scheduler"] and a["best_performance"] == b["best_performance"]

    # the run's config is kept, the resume's written beside it, the override logged
    assert (tmp_path / "split" / "config.yaml").read_text() == original_config
    assert "END_EPOCH: 4" in (tmp_path / "split" / "config_resume_epoch2.yaml").read_text()
    assert "resume override TRAIN.END_EPOCH: 2 -> 4" in (tmp_path / "split" / "train.log").read_text()


def test_resume_without_random_states_differs(tiny_dbs, tmp_path):
    """The control: the same resume without the saved random states (dropout masks) does not match."""
    straight = _fit(get_cfg("configs/smpl/open_train.yaml", _opts(tiny_dbs, tmp_path / "straight", 3)))
    first = _fit(get_cfg("configs/smpl/open_train.yaml", _opts(tiny_dbs, tmp_path / "split", 2)))
    checkpoint = tmp_path / "split" / "checkpoint.pth.tar"
    cfg, state = train_config(get_cfg, ["TRAIN.RESUME", str(checkpoint), "TRAIN.END_EPOCH", "3"], "train")
    state.pop("random_states")
    resumed = _fit(cfg, state)
    assert straight[:2] == first and straight[2] != resumed[0]
