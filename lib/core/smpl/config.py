"""SMPL defaults: the open body model and synthetic databases under data/open/smpl/ unless a YAML says otherwise."""
from yacs.config import CfgNode as CN

from lib.core.config import defaults, load_config

# Evaluation database names -> file stem in DATA.DB_DIR (<stem>_test_db.pt / <stem>_train_db.pt).
DATASETS = {"SYNTHETIC": "synthetic", "AMASS": "amass", "ThreeDPW": "3dpw", "AGORA": "agora"}


def smpl_defaults() -> CN:
    cfg = defaults()
    cfg.BODY = "smpl"
    cfg.DATA.BODY_MODEL = "data/open/smpl/OPEN_SMPL_NEUTRAL.npz"
    cfg.DATA.DB_DIR = "data/open/smpl/db"
    cfg.MODEL.PRETRAINED = "data/open/smpl/pretrained_model/model_best.pth.tar"
    return cfg


def get_cfg(cfg_file: str | None = None, opts: list[str] | None = None) -> CN:
    """SMPL defaults merged with a YAML file and KEY VALUE overrides."""
    return load_config(smpl_defaults(), cfg_file, opts)
