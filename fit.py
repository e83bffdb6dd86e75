"""Fit SMPL / SMPL-X bodies to 3D joints: python fit.py --body smpl --joints my.npy [--out DIR] [--render] (--help)"""

import sys
from pathlib import Path

# Runs from any working directory: the repository (this file's folder) goes on the import path.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lib.engine.fitting import main  # noqa: E402

if __name__ == "__main__":
    main()
