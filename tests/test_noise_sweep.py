"""bench/noise_sweep.py on a tiny db: both pipelines on the same noisy inputs, records, table and picture."""

import sys

import torch

from lib.core.config import REPO_ROOT
from lib.core.smpl.config import get_cfg
from lib.data.db import PoseDataset
from lib.data.synthetic import make_synthetic_db
from lib.engine.build import build_body_model, build_solver

sys.path.insert(0, str(REPO_ROOT / "bench"))
import noise_sweep  # noqa: E402


def test_sweep_records_both_pipelines_and_draws_the_plot(tmp_path):
    cfg = get_cfg(None, [])
    body = build_body_model(cfg, torch.device("cpu"))
    solvers = {
        "paper": build_solver(cfg, body),
        "robust": build_solver(get_cfg(None, ["MODEL.ROBUST.ENABLED", "True"]), body),
    }
    data = PoseDataset(make_synthetic_db("smpl", 12, 3, body, split="test"), "smpl")
    records = noise_sweep.sweep(body, solvers, None, data, [0.0, 20.0], samples=12, seed=0, batch_size=5)
    assert [(r["sigma_mm"], r["pipeline"]) for r in records] == [
        (0.0, "paper"),
        (0.0, "robust"),
        (20.0, "paper"),
        (20.0, "robust"),
    ]
    by = {(r["sigma_mm"], r["pipeline"]): r for r in records}
    assert all(r["n_samples"] == 12 and "mixik_mpve_mm" not in r for r in records)
    # no noise: both pipelines recover the body (AnalyIK: only the twist is missing); noise makes it worse
    assert abs(by[0.0, "paper"]["analyik_mpve_mm"] - by[0.0, "robust"]["analyik_mpve_mm"]) < 0.5
    assert by[0.0, "paper"]["beta_abs_error"] < 0.05 and by[0.0, "paper"]["analyik_mpjpe_mm"] < 1.0
    assert by[20.0, "paper"]["analyik_mpve_mm"] > by[0.0, "paper"]["analyik_mpve_mm"] + 10
    assert noise_sweep.sweep(body, solvers, None, data, [0.0, 20.0], samples=12, seed=0, batch_size=5) == records
    table = noise_sweep.format_rows(records, ("analyik",))
    assert len(table) == 4 and table[2].startswith("| 0 |")
    noise_sweep.plot(records, "test", tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 1000
