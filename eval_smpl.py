"""Evaluate AnalyIK, MixIK and the oracle on a SMPL database: python eval_smpl.py --cfg <yaml> [KEY VALUE ...]"""

from lib.core.smpl.config import get_cfg
from lib.engine.cli import main_eval

if __name__ == "__main__":
    main_eval(get_cfg)
