"""SMPL configuration: the shared defaults with the open SMPL model, synthetic dbs and checkpoint under
data/open/smpl/."""

from yacs.config import CfgNode as CN

from lib.core.config import body_defaults, load_config

# TRAIN.DATASET_EVAL / TRAIN.DATASETS_3D: SYNTHETIC, BANDAI, AMASS, ThreeDPW, AGORA
# -> <DATA.DB_DIR>/<name>_<set>_db.pt (lib/data/db.py).


def get_cfg(cfg_file: str | None = None, opts: list[str] | None = None, saved: tuple[str, str] | None = None) -> CN:
    """SMPL defaults merged with a YAML file and KEY VALUE overrides (over a saved config, see load_config)."""
    return load_config(body_defaults("smpl"), cfg_file, opts, saved)
