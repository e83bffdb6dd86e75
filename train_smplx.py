"""Train the SMPL-X Part-aware Network: python train_smplx.py --cfg <yaml> [KEY VALUE ...] (or under torchrun)."""

from lib.core.smplx.config import get_cfg
from lib.engine.cli import main_train

if __name__ == "__main__":
    main_train(get_cfg)
