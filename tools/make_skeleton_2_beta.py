"""Fit the Shape Inverse matrix A from a body model and write it in the official skeleton_2_beta layout.

    python tools/make_skeleton_2_beta.py --body smpl --model data/open/smpl/OPEN_SMPL_NEUTRAL.npz \
        --out data/cache/skeleton_2_beta_open_smpl.npz [--kid-template ...] [--samples 10000] [--sigma 1.5]

A (bone lengths in mm per unit beta) is the least-squares fit of bl(t(beta)) - bl(t(0)) = A beta over betas drawn
from N(0, sigma^2); the RMS residual of that linear model is printed. Use A only with the body model it came from.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.kinematics.tree import TREES  # noqa: E402
from lib.models.body_model import BodyModel  # noqa: E402
from lib.models.skeleton_2_beta import save_skeleton_2_beta  # noqa: E402
from lib.solver.shape_inverse import fit_bone_length_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--body", choices=sorted(TREES), default="smpl")
    parser.add_argument("--model", required=True, help="body model file (.pkl / .npz)")
    parser.add_argument("--out", required=True, help="output .npz (official layout: ['lr'].item()['A1'])")
    parser.add_argument("--kid-template", default=None, help="kid template .npy: fits an 11th (kid) column")
    parser.add_argument("--num-betas", type=int, default=10)
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--sigma", type=float, default=1.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    body = BodyModel.from_file(
        args.model,
        model_type=args.body,
        kid_template_path=args.kid_template,
        num_betas=args.num_betas,
        dtype=torch.float64,
    )
    matrix, residual = fit_bone_length_model(
        TREES[args.body], body.rest_joints, body.num_betas, args.samples, args.sigma, args.seed
    )
    path = save_skeleton_2_beta(args.out, matrix.numpy())
    print(f"A {tuple(matrix.shape)} (mm per unit beta) -> {path}; RMS residual of the linear model: {residual:.3f} mm")


if __name__ == "__main__":
    main()
