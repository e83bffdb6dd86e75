"""Accuracy under joint noise: the robust mode against the paper's pipeline on the SAME noisy skeletons.

For each sigma (mm, per axis, seeded) Gaussian noise is added to every joint coordinate of the ground-truth
skeletons of a test db; both pipelines solve the same noisy batch in the same run: the paper's (unregularised
Shape Inverse, PR-C V1, two-direction rule; ``MODEL.ROBUST.ENABLED False``) and the robust mode
(``MODEL.ROBUST.ENABLED True``: shape prior and Huber bones, one shape per ``vid_name``, rigid-group orientation).
Metrics against the clean ground truth: MPVE, MPJPE (mm) for AnalyIK and MixIK, and the mean absolute beta error.
Writes JSON and a PNG (MPVE vs sigma, both pipelines).

Usage: python bench/noise_sweep.py --body smpl|smplx [--samples 2000] [--sigmas 0 5 10 20 30 50] [--seed 0]
       [--db path/to/<name>_test_db.pt] [--out output/noise_sweep]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.core.config import config_factory, resolve_path  # noqa: E402
from lib.data.db import PoseDataset  # noqa: E402
from lib.engine.build import build_body_model, build_dataset, build_network, build_solver  # noqa: E402
from lib.engine.metrics import mpjpe, mpve  # noqa: E402
from lib.kinematics.skeleton import root_relative  # noqa: E402

SIGMAS_MM = (0.0, 5.0, 10.0, 20.0, 30.0, 50.0)
PIPELINES = ("paper", "robust")
NUM_SHAPE_BETAS = 10  # the beta error is over the 10 shape betas (an 11th kid beta is left out)


def sequence_ids(vid_name: np.ndarray) -> torch.Tensor:
    """(N,) long: one id per distinct ``vid_name``."""
    return torch.as_tensor(np.unique(vid_name, return_inverse=True)[1], dtype=torch.long)


@torch.no_grad()
def sweep(
    body_model, solvers: dict, network, dataset: PoseDataset, sigmas, samples: int, seed: int, batch_size: int = 500
) -> list[dict]:
    """One record per (sigma, pipeline): sample count and mean metrics (mm; beta error in beta units)."""
    tree = next(iter(solvers.values())).tree
    count = min(samples, len(dataset))
    ids = sequence_ids(dataset.vid_name[np.asarray(dataset.starts[:count])])
    dtype, device = body_model.dtype, body_model.device
    records = []
    for k, sigma in enumerate(sigmas):
        generator = torch.Generator().manual_seed(seed * 1000 + k)
        sums = {name: {} for name in solvers}
        for start in range(0, count, batch_size):
            rows = torch.arange(start, min(start + batch_size, count))
            batch = {key: value.to(device=device, dtype=dtype) for key, value in dataset.batch(rows).items()}
            truth = body_model(batch["pose"], batch["betas"])
            clean = root_relative(tree, truth.joints)
            noise = torch.randn(clean.shape, generator=generator, dtype=torch.float64) * (sigma / 1000.0)
            noisy = clean + noise.to(device=device, dtype=dtype)
            for name, solver in solvers.items():
                with warnings.catch_warnings():  # big noise makes 'suspicious bone' reports: expected here
                    warnings.simplefilter("ignore")
                    groups = ids[rows].to(device) if name == "robust" else None  # the paper: per frame
                    solution = solver.solve(noisy, network, groups=groups)
                values = {
                    "beta_abs_error": (solution.betas[:, :NUM_SHAPE_BETAS] - batch["betas"][:, :NUM_SHAPE_BETAS])
                    .abs()
                    .mean(dim=1)
                }
                methods = {"analyik": solution.analytic_rotmats}
                if network is not None:
                    methods["mixik"] = solution.rotmats
                for method, rotmats in methods.items():
                    mesh = body_model(rotmats, solution.betas)
                    values[f"{method}_mpve_mm"] = mpve(mesh.vertices, truth.vertices)
                    values[f"{method}_mpjpe_mm"] = mpjpe(tree, mesh.joints, clean)
                for key, value in values.items():
                    sums[name][key] = sums[name].get(key, 0.0) + value.double().sum().item()
        for name in solvers:
            records.append(
                {
                    "sigma_mm": sigma,
                    "pipeline": name,
                    "n_samples": count,
                    **{key: total / count for key, total in sums[name].items()},
                }
            )
    return records


def format_rows(records: list[dict], methods: tuple[str, ...]) -> list[str]:
    """Markdown table: per sigma, MPVE of each method for both pipelines, the last method's change, its MPJPE and
    the beta errors (paper / robust)."""
    by = {(r["sigma_mm"], r["pipeline"]): r for r in records}
    last = methods[-1]
    header = "| sigma (mm) | " + " | ".join(f"{m} MPVE paper | robust" for m in methods)
    lines = [
        header + f" | {last} change | {last} MPJPE paper | robust | beta err paper | robust |",
        "|---:" * (6 + 2 * len(methods)) + "|",
    ]
    for sigma in sorted({r["sigma_mm"] for r in records}):
        paper, robust = by[(sigma, "paper")], by[(sigma, "robust")]
        cells = [f"{sigma:g}"] + [f"{r[f'{m}_mpve_mm']:.1f}" for m in methods for r in (paper, robust)]
        a, b = paper[f"{last}_mpve_mm"], robust[f"{last}_mpve_mm"]
        cells += [
            f"{100 * (b - a) / a:+.0f}%",
            f"{paper[f'{last}_mpjpe_mm']:.1f}",
            f"{robust[f'{last}_mpjpe_mm']:.1f}",
            f"{paper['beta_abs_error']:.2f}",
            f"{robust['beta_abs_error']:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot(records: list[dict], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    styles = {"paper": "--", "robust": "-"}
    for method, color in (("analyik", "tab:blue"), ("mixik", "tab:orange")):
        for pipeline in PIPELINES:
            rows = sorted(
                (r for r in records if r["pipeline"] == pipeline and f"{method}_mpve_mm" in r),
                key=lambda r: r["sigma_mm"],
            )
            if rows:
                ax.plot(
                    [r["sigma_mm"] for r in rows],
                    [r[f"{method}_mpve_mm"] for r in rows],
                    styles[pipeline],
                    color=color,
                    marker="o",
                    label=f"{method} ({pipeline})",
                )
    ax.set_xlabel("joint noise sigma per axis (mm)")
    ax.set_ylabel("MPVE (mm)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--body", default="smpl", choices=["smpl", "smplx"])
    parser.add_argument("--samples", type=int, default=2000, help="first N samples of the db (whole sequences)")
    parser.add_argument("--sigmas", type=float, nargs="+", default=list(SIGMAS_MM))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--db", action="append", default=[], help="extra test db file(s) of this body")
    parser.add_argument("--checkpoint", default="default", help="PAN checkpoint; 'none' = AnalyIK only")
    parser.add_argument("--out", default="output/noise_sweep", help="directory for the JSON and PNG")
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args(argv)
    if args.samples < 1 or min(args.sigmas) < 0:
        parser.error("--samples must be >= 1 and every sigma >= 0")

    get_cfg = config_factory(args.body)
    opts = (
        []
        if args.checkpoint == "default"
        else ["MODEL.PRETRAINED", "" if args.checkpoint == "none" else str(Path(args.checkpoint).absolute())]
    )
    cfg = get_cfg(None, opts)
    robust_cfg = get_cfg(None, opts + ["MODEL.ROBUST.ENABLED", "True"])
    device = torch.device("cpu")
    body_model = build_body_model(cfg, device)
    solvers = {"paper": build_solver(cfg, body_model), "robust": build_solver(robust_cfg, body_model)}
    network = build_network(cfg, device, "MODEL.PRETRAINED").eval() if cfg.MODEL.PRETRAINED else None
    datasets = {"SYNTHETIC": build_dataset(cfg, "SYNTHETIC", "test")}
    for path in args.db:
        datasets[Path(path).name] = PoseDataset(path, args.body, num_betas=body_model.num_betas)

    out_dir = resolve_path(args.out) if not Path(args.out).is_absolute() else Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "body": args.body,
        "seed": args.seed,
        "sigmas_mm": args.sigmas,
        "checkpoint": cfg.MODEL.PRETRAINED,
        "command": " ".join(["python bench/noise_sweep.py", *sys.argv[1:]]),
        "datasets": {},
    }
    for name, dataset in datasets.items():
        start = time.perf_counter()
        records = sweep(body_model, solvers, network, dataset, args.sigmas, args.samples, args.seed, args.batch)
        result["datasets"][name] = records
        methods = ("analyik", "mixik") if network is not None else ("analyik",)
        print(
            f"{args.body} on {name} ({records[0]['n_samples']} samples, seed {args.seed}, "
            f"{time.perf_counter() - start:.0f} s)"
        )
        print("\n".join(format_rows(records, methods)))
        png = out_dir / f"noise_sweep_{args.body}_{Path(name).stem}.png"
        plot(records, f"{'SMPL-X' if args.body == 'smplx' else 'SMPL'} on {name}: MPVE under joint noise", png)
        print(f"wrote {png}")
    path = out_dir / f"noise_sweep_{args.body}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
