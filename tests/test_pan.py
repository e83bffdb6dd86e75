"""Part-aware Network (METHOD.md section 7) and its checkpoints: shapes, official key layout, safe loading, saving."""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lib.kinematics.tree import SMPL_TREE, SMPLX_TREE
from lib.models.checkpoint import load_checkpoint, load_pan_weights, save_checkpoint
from lib.models.pan import PartAwareNetwork, PartTwistMLP
from lib.solver.twist import phi_per_joint

H = 256
# (joints read, twists predicted) per part, transcribed from METHOD.md section 7 (not taken from the tree).
OFFICIAL_PARTS = {
    "smpl": {"leg": (10, 6), "spine": (10, 3), "arm": (12, 8)},
    "smplx": {"leg": (10, 6), "spine": (10, 3), "arm": (20, 6), "lhand": (21, 15), "rhand": (21, 15)},
}
TREES = {"smpl": SMPL_TREE, "smplx": SMPLX_TREE}


def _dense_keys(prefix: str, n_in: int, n_out: int, first: int = 0) -> dict[str, tuple]:
    """Keys and shapes of Linear (first), BatchNorm1d (first+1), PReLU (first+2) in an official Sequential."""
    lin, bn, act = (f"{prefix}{first + i}." for i in range(3))
    return {
        lin + "weight": (n_out, n_in),
        lin + "bias": (n_out,),
        bn + "weight": (n_out,),
        bn + "bias": (n_out,),
        bn + "running_mean": (n_out,),
        bn + "running_var": (n_out,),
        bn + "num_batches_tracked": (),
        act + "weight": (1,),
    }


def official_layout(body: str) -> dict[str, tuple]:
    """The official ``gen_state_dict`` key -> shape table, written out from the key names in METHOD.md."""
    shapes: dict[str, tuple] = {}
    for part, (n_joints, n_twists) in OFFICIAL_PARTS[body].items():
        net = f"{part}_rf_net.upose_upd_net."
        shapes.update(_dense_keys(net + "pos_emd.", n_joints * 3, H - 64))
        shapes.update(_dense_keys(net + "beta_emd.", 10, H - 192))
        for b in range(3):
            shapes.update(_dense_keys(f"{net}block.{b}.block.", H, H, first=0))
            shapes.update(_dense_keys(f"{net}block.{b}.block.", H, H, first=4))
        shapes.update({net + "block.3.weight": (n_twists * 2, H), net + "block.3.bias": (n_twists * 2,)})
    return shapes


def official_state_dict(body: str, seed: int = 0) -> OrderedDict:
    """Random tensors in the official layout (running_var positive, num_batches_tracked a long scalar)."""
    g = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for key, shape in official_layout(body).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.1
    return state


def reference_forward(state: dict, part: str, part_joints: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    """METHOD section 7 in eval mode, written with functional ops straight from an official-layout state dict."""
    p = f"{part}_rf_net.upose_upd_net."

    def dense(x, pre, first=0):  # Linear, BatchNorm1d (running stats), PReLU at indices first..first+2
        lin, bn, act = (f"{pre}{first + i}." for i in range(3))
        x = F.linear(x, state[lin + "weight"], state[lin + "bias"])
        x = F.batch_norm(
            x,
            state[bn + "running_mean"],
            state[bn + "running_var"],
            state[bn + "weight"],
            state[bn + "bias"],
            training=False,
            eps=1e-5,
        )
        return F.prelu(x, state[act + "weight"])

    x = torch.cat([dense(part_joints.flatten(1), p + "pos_emd."), dense(betas[:, :10], p + "beta_emd.")], dim=1)
    for b in range(3):
        pre = f"{p}block.{b}.block."
        x = x + dense(dense(x, pre, 0), pre, 4)
    phi = F.linear(x, state[p + "block.3.weight"], state[p + "block.3.bias"]).view(x.shape[0], -1, 2)
    return phi / (phi.norm(dim=-1, keepdim=True) + 1e-8)


def _inputs(tree, batch=5, seed=0, num_betas=10):
    g = torch.Generator().manual_seed(seed)
    joints = torch.randn(batch, tree.num_joints, 3, generator=g) * 0.3
    joints = joints - joints[:, :1]
    return joints, torch.randn(batch, num_betas, generator=g)


class NotWeights:
    """A custom class: pickling it stores code references that weights_only loading must refuse."""

    def __init__(self):
        self.x = 1


# ------------------------------------------------------------------------------------------------------ network
@pytest.mark.parametrize("body", ["smpl", "smplx"])
def test_output_shapes_and_unit_norm(body):
    tree = TREES[body]
    net = PartAwareNetwork(tree)
    joints, betas = _inputs(tree)
    for mode in (net.train, net.eval):
        mode()
        out = net(joints, betas)
        assert [o.shape for o in out] == [(5, n_twists, 2) for _, n_twists in OFFICIAL_PARTS[body].values()]
        for o in out:
            torch.testing.assert_close(o.norm(dim=-1), torch.ones(o.shape[:2]))


def test_extra_betas_ignored_and_root_is_subtracted():
    net = PartAwareNetwork(SMPL_TREE).eval()
    joints, betas = _inputs(SMPL_TREE, num_betas=11)
    ref = net(joints, betas[:, :10])
    for a, b in zip(ref, net(joints + torch.tensor([0.5, -1.0, 2.0]), betas), strict=True):
        torch.testing.assert_close(a, b)


def test_bad_input_shapes_rejected():
    net = PartAwareNetwork(SMPL_TREE)
    joints, betas = _inputs(SMPL_TREE)
    with pytest.raises(ValueError, match=r"\(B, 24, 3\)"):
        net(joints[:, :22], betas)
    with pytest.raises(ValueError, match=r"\(B, 24, 3\)"):
        net(joints.flatten(1), betas)
    with pytest.raises(ValueError, match=r"\(5, >=10\)"):
        net(joints, betas[:, :9])
    with pytest.raises(ValueError, match=r"\(5, >=10\)"):
        net(joints, betas[:4])


@pytest.mark.parametrize("embed_dim", [128, 512])
def test_embed_dim_other_than_256_rejected(embed_dim):
    with pytest.raises(ValueError, match="MODEL.MLP.EMBED_DIM"):
        PartAwareNetwork(SMPL_TREE, embed_dim=embed_dim)
    with pytest.raises(ValueError, match="MODEL.MLP.EMBED_DIM"):
        PartTwistMLP(10, 6, embed_dim=embed_dim)


def test_gradient_reaches_every_parameter():
    torch.manual_seed(0)
    net = PartAwareNetwork(SMPLX_TREE).train()
    joints, betas = _inputs(SMPLX_TREE, batch=8)
    out = net(joints, betas)
    loss = sum(((o - torch.randn_like(o)) ** 2).mean() for o in out)
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("body", ["smpl", "smplx"])
def test_network_outputs_scatter_to_their_joints_with_identity_elsewhere(body):
    tree = TREES[body]
    outs = [torch.randn(3, len(p.twist_joints), 2, requires_grad=True) for p in tree.parts]
    table = phi_per_joint(tree, outs)
    assert table.shape == (3, tree.num_pose_joints, 2)
    predicted = set()
    for part, o in zip(tree.parts, outs, strict=True):
        for k, j in enumerate(part.twist_joints):
            torch.testing.assert_close(table[:, j], o[:, k] / o[:, k].norm(dim=-1, keepdim=True))
            predicted.add(j)
    rest = [i for i in range(tree.num_pose_joints) if i not in predicted]
    assert 0 in rest and 9 in rest  # root and spine3 are solved from two directions, never twisted
    torch.testing.assert_close(table[:, rest], torch.tensor([1.0, 0.0]).expand(3, len(rest), 2))
    table.sum().backward()
    assert all(o.grad is not None and torch.isfinite(o.grad).all() for o in outs)
    with pytest.raises(ValueError, match="part outputs"):
        phi_per_joint(tree, outs[:-1])


# ------------------------------------------------------------------------------------------- official checkpoint
@pytest.mark.parametrize("body", ["smpl", "smplx"])
def test_official_state_dict_loads_strictly_and_computes_the_method(body):
    tree = TREES[body]
    state = official_state_dict(body)
    assert len({k.split(".")[0] for k in state}) == len(OFFICIAL_PARTS[body])
    net = PartAwareNetwork(tree)
    load_pan_weights(net, {"epoch": 30, "gen_state_dict": state, "performace": 11.6})
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key
    # The loaded network computes METHOD section 7 from those weights (eval mode: BN running stats, no dropout).
    net.eval()
    joints, betas = _inputs(tree)
    with torch.no_grad():
        out = net(joints, betas)
    for part, o in zip(tree.parts, out, strict=True):
        expected = reference_forward(state, part.name, joints[:, list(part.joints)], betas)
        torch.testing.assert_close(o, expected, rtol=1e-4, atol=1e-5)


def test_ddp_prefixed_state_dict_loads():
    state = official_state_dict("smpl", seed=1)
    ddp_state = OrderedDict((f"module.{k}", v) for k, v in state.items())
    for source in (ddp_state, {"gen_state_dict": ddp_state, "epoch": 3}):
        net = PartAwareNetwork(SMPL_TREE)
        load_pan_weights(net, source)
        assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    wrapped = torch.nn.DataParallel(PartAwareNetwork(SMPL_TREE))  # a wrapped network is loaded through .module
    load_pan_weights(wrapped, ddp_state)
    assert all(torch.equal(v, state[k]) for k, v in wrapped.module.state_dict().items())


def test_mismatched_checkpoint_is_a_clear_error():
    net = PartAwareNetwork(SMPLX_TREE)
    with pytest.raises(ValueError, match=r"missing keys .*lhand_rf_net.*rhand_rf_net"):
        load_pan_weights(net, {"gen_state_dict": official_state_dict("smpl")})
    state = official_state_dict("smpl")
    state["spine_rf_net.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"unexpected keys .*spine_rf_net.extra.weight"):
        load_pan_weights(PartAwareNetwork(SMPL_TREE), state)
    smplx_arm = {
        k.replace("lhand", "arm"): v for k, v in official_state_dict("smplx").items() if k.startswith("lhand_rf_net")
    }
    state = official_state_dict("smpl")
    state.update(smplx_arm)
    with pytest.raises(ValueError, match=r"shape mismatches .*arm_rf_net.upose_upd_net.pos_emd.0.weight"):
        load_pan_weights(PartAwareNetwork(SMPL_TREE), state)
    with pytest.raises(ValueError, match="gen_state_dict"):
        load_pan_weights(net, {"epoch": 1})


# -------------------------------------------------------------------------------------------- loading and saving
def test_load_checkpoint_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pth.tar"
    torch.save({"gen_state_dict": official_state_dict("smpl"), "extra": NotWeights()}, path)
    with pytest.raises(ValueError, match="refused to unpickle arbitrary objects.*NotWeights"):
        load_checkpoint(path)
    with pytest.raises(ValueError, match="refused to unpickle arbitrary objects"):
        load_pan_weights(PartAwareNetwork(SMPL_TREE), path)


def test_load_checkpoint_missing_or_corrupt(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*nope\.pth\.tar \(from MODEL\.PRETRAINED\)"):
        load_checkpoint(tmp_path / "nope.pth.tar", hint="(from MODEL.PRETRAINED)")
    with pytest.raises(FileNotFoundError, match=r"no checkpoint given \(empty path\) set TRAIN\.RESUME"):
        load_checkpoint("", hint="set TRAIN.RESUME")
    (tmp_path / "junk.pth.tar").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        load_checkpoint(tmp_path / "junk.pth.tar")
    torch.save([1, 2], tmp_path / "list.pth.tar")
    with pytest.raises(ValueError, match="expected a checkpoint dict"):
        load_checkpoint(tmp_path / "list.pth.tar")


@pytest.mark.parametrize("numpy_module", ["numpy._core.multiarray", "numpy.core.multiarray"])
def test_numpy_score_in_checkpoint_loads(tmp_path, numpy_module):
    """The reference's score may be a numpy float; numpy 1 pickles name its reconstructor under numpy.core."""
    path = tmp_path / "np.pth.tar"
    torch.save({"performace": np.float64(11.6), "arr": np.arange(3.0)}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    for spelled in (b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"):
        data = data.replace(spelled, numpy_module.encode() + b"\n")  # legacy format: one plain pickle stream
    assert numpy_module.encode() + b"\nscalar\n" in data
    path.write_bytes(data)
    checkpoint = load_checkpoint(path)
    assert float(checkpoint["performace"]) == 11.6 and checkpoint["arr"].tolist() == [0.0, 1.0, 2.0]


def test_save_checkpoint_atomic_round_trip(tmp_path, monkeypatch):
    net = PartAwareNetwork(SMPL_TREE)
    optim = torch.optim.Adam(net.parameters(), lr=1e-4, weight_decay=0.1)
    joints, betas = _inputs(SMPL_TREE)
    sum(o.sum() for o in net(joints, betas)).backward()
    optim.step()
    state = {
        "epoch": 4,
        "gen_state_dict": net.state_dict(),
        "gen_optimizer": optim.state_dict(),
        "performace": 12.5,
        "config": "MODEL:\n  MLP:\n    EMBED_DIM: 256\n",
    }
    out_dir = tmp_path / "run"
    path = save_checkpoint(out_dir / "checkpoint.pth.tar", state)
    assert os.listdir(out_dir) == ["checkpoint.pth.tar"]
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 4 and loaded["performace"] == 12.5 and loaded["config"] == state["config"]
    fresh = PartAwareNetwork(SMPL_TREE)
    load_pan_weights(fresh, path)
    assert all(torch.equal(v, state["gen_state_dict"][k]) for k, v in fresh.state_dict().items())
    optim2 = torch.optim.Adam(fresh.parameters())
    optim2.load_state_dict(loaded["gen_optimizer"])
    assert optim2.state_dict()["param_groups"][0]["weight_decay"] == 0.1

    # Overwriting replaces the file; a failure mid-write keeps the old file and leaves no temp file.
    save_checkpoint(path, dict(state, epoch=5))
    assert load_checkpoint(path)["epoch"] == 5 and os.listdir(out_dir) == ["checkpoint.pth.tar"]

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, dict(state, epoch=6))
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 5 and os.listdir(out_dir) == ["checkpoint.pth.tar"]


def test_save_checkpoint_refuses_content_weights_only_cannot_load(tmp_path):
    from yacs.config import CfgNode

    for bad, where in (
        ({"config": CfgNode({"A": 1})}, "config"),
        ({"score": np.float64(1.0)}, "score"),
        ({"x": [1, NotWeights()]}, "x"),
    ):
        with pytest.raises(TypeError, match=where):
            save_checkpoint(tmp_path / "c.pth.tar", bad)
    assert os.listdir(tmp_path) == []
