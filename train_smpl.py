"""Train the SMPL Part-aware Network: python train_smpl.py --cfg <yaml> [KEY VALUE ...] (or under torchrun)."""

from lib.core.smpl.config import get_cfg
from lib.engine.cli import main_train

if __name__ == "__main__":
    main_train(get_cfg)
