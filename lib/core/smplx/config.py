"""SMPL-X defaults: the open body model and synthetic databases under data/open/smplx/ unless a YAML says otherwise."""
from yacs.config import CfgNode as CN

from lib.core.config import defaults, load_config

# Evaluation database names -> file stem in DATA.DB_DIR (<stem>_test_db.pt / <stem>_train_db.pt).
DATASETS = {"SYNTHETIC": "synthetic", "AMASS": "amass", "MOTIONX": "motionx", "AGORA": "agora"}


def smplx_defaults() -> CN:
    cfg = defaults()
    cfg.BODY = "smplx"
    cfg.DATA.BODY_MODEL = "data/open/smplx/OPEN_SMPLX_NEUTRAL.npz"
    cfg.DATA.DB_DIR = "data/open/smplx/db"
    cfg.MODEL.PRETRAINED = "data/open/smplx/pretrained_model/model_best.pth.tar"
    cfg.EVAL.ORACLE_ON_REFINED = True  # the SMPL-X reference runs its oracle on the refined joints
    return cfg


def get_cfg(cfg_file: str | None = None, opts: list[str] | None = None) -> CN:
    """SMPL-X defaults merged with a YAML file and KEY VALUE overrides."""
    return load_config(smplx_defaults(), cfg_file, opts)
