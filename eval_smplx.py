"""Evaluate AnalyIK, MixIK and the oracle on a SMPL-X database: python eval_smplx.py --cfg <yaml> [KEY VALUE ...]"""

from lib.core.smplx.config import get_cfg
from lib.engine.cli import main_eval

if __name__ == "__main__":
    main_eval(get_cfg)
