"""SMPL-X configuration: the shared defaults with the open SMPL-X model, dbs and checkpoint under data/open/smplx/."""

from yacs.config import CfgNode as CN

from lib.core.config import body_defaults, load_config

# TRAIN.DATASET_EVAL / TRAIN.DATASETS_3D: SYNTHETIC, BANDAI, AMASS, MOTIONX, AGORA
# -> <DATA.DB_DIR>/<name>_<set>_db.pt (lib/data/db.py).


def smplx_defaults() -> CN:
    cfg = body_defaults("smplx")
    cfg.EVAL.ORACLE_ON_REFINED = True  # the SMPL-X reference runs its oracle on the refined joints
    return cfg


def get_cfg(cfg_file: str | None = None, opts: list[str] | None = None, saved: tuple[str, str] | None = None) -> CN:
    """SMPL-X defaults merged with a YAML file and KEY VALUE overrides (over a saved config, see load_config)."""
    return load_config(smplx_defaults(), cfg_file, opts, saved)
