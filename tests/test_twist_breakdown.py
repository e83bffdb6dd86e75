"""The twist error breakdown (lib.engine.evaluator.twist_error_breakdown, tools/twist_error_breakdown.py): MPVE with
some of the network's twists replaced by the ground truth, checked against the evaluator's own MixIK and oracle."""

import sys

import torch

from lib.core.config import REPO_ROOT, body_defaults, load_config
from lib.data.db import PoseDataset, write_db
from lib.data.synthetic import make_synthetic_db
from lib.engine.build import build_body_model, build_network, build_solver
from lib.engine.evaluator import evaluate_batch, twist_error_breakdown
from lib.kinematics.tree import SMPL_TREE
from lib.solver.twist import part_phis

sys.path.insert(0, str(REPO_ROOT / "tools"))
import twist_error_breakdown as tool  # noqa: E402


def _setup(n=24, seed=41):
    cfg = load_config(body_defaults("smpl"))
    body_model = build_body_model(cfg, torch.device("cpu"))
    db = make_synthetic_db("smpl", n, seed, body_model, split="test")
    batch = PoseDataset(db, "smpl", num_betas=10).batch(list(range(n)))
    return cfg, body_model, build_solver(cfg, body_model), batch, db


class TruthNetwork(torch.nn.Module):
    """Predicts the batch's ground-truth twists, whatever it reads."""

    def __init__(self, twist_angle):
        super().__init__()
        self.phis = part_phis(SMPL_TREE, twist_angle)

    def forward(self, joints, betas):
        return self.phis


def test_no_twist_replaced_is_mixik_and_all_replaced_is_the_oracle_on_the_refined_joints():
    cfg, body_model, solver, batch, _ = _setup()
    network = build_network(cfg, torch.device("cpu"), "MODEL.PRETRAINED").eval()
    rows = twist_error_breakdown(body_model, solver, batch, network)
    metrics = evaluate_batch(body_model, solver, batch, network, oracle_on_refined=True)
    torch.testing.assert_close(rows["network"], metrics["mixik_mpve"], rtol=0, atol=1e-4)
    torch.testing.assert_close(rows["all"], metrics["oracle_mpve"], rtol=0, atol=1e-4)
    names = {SMPL_TREE.joint_names[j] for part in SMPL_TREE.parts for j in part.twist_joints}
    assert set(rows) == {"network", "all"} | names | {f"part:{p.name}" for p in SMPL_TREE.parts}
    assert len(names) == 17 and "left_elbow" in names and "neck" in names
    # a joint's true twist changes only what that joint moves: the error differs from MixIK's somewhere
    assert (rows["left_elbow"] - rows["network"]).abs().max() > 1e-3
    assert rows["all"].mean() < rows["network"].mean()


def test_a_network_that_predicts_the_truth_leaves_nothing_to_replace():
    _, body_model, solver, batch, _ = _setup(16, 43)
    rows = twist_error_breakdown(body_model, solver, batch, TruthNetwork(batch["twist_angle"]))
    for name, values in rows.items():
        torch.testing.assert_close(values, rows["all"], rtol=0, atol=1e-4, msg=name)


def test_tool_prints_one_row_per_twist_joint_part_and_all(tmp_path, capsys):
    *_, db = _setup(12, 47)
    path = write_db(tmp_path / "tiny_db.pt", db, "smpl")
    assert tool.main(["--body", "smpl", "--db", str(path), "--samples", "8"]) == 0
    out = capsys.readouterr().out
    assert "tiny_db.pt, first 8 samples" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "MPVE" not in line]
    assert len(rows) == 1 + 17 + 3 + 1  # MixIK, each twist joint, each part, all
    assert rows[0].startswith("| none (MixIK) |") and rows[-1].startswith("| all |")
    assert all(float(row.split("|")[2]) > 0 for row in rows)


def test_each_row_replaces_its_own_joint():
    _, body_model, solver, batch, _ = _setup(16, 45)
    network = TruthNetwork(batch["twist_angle"])
    arm = [p.name for p in SMPL_TREE.parts].index("arm")
    column = list(SMPL_TREE.parts[arm].twist_joints).index(SMPL_TREE.joint_names.index("left_elbow"))
    wrong = network.phis[arm].clone()  # the truth but for the left elbow, turned by 0.5 rad
    angle = torch.atan2(wrong[:, column, 1], wrong[:, column, 0]) + 0.5
    wrong[:, column] = torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)
    network.phis[arm] = wrong
    breakdown = twist_error_breakdown(body_model, solver, batch, network)
    rows = {name: values.mean().item() for name, values in breakdown.items()}
    assert rows["network"] > rows["all"] + 1.0  # the wrong elbow twist costs millimetres
    for name in ("left_elbow", "part:arm"):
        assert abs(rows[name] - rows["all"]) < 1e-4, name
    for name in ("right_elbow", "left_wrist", "neck", "part:leg", "part:spine"):
        assert abs(rows[name] - rows["network"]) < 1e-4, name
