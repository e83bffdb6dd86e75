"""Config mistakes: one line naming the key (and the closest valid keys), exit status 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lib.core.config import REPO_ROOT, ConfigError, config_keys, defaults, load_config
from lib.core.smpl.config import get_cfg as smpl_cfg
from lib.core.smplx.config import get_cfg as smplx_cfg

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def eval_smpl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "eval_smpl.py", *args],
        cwd=REPO_ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def yaml_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cfg")
    (folder / "typo.yaml").write_text("MODEL:\n  PR_VARIANTT: v2\n")
    (folder / "broken.yaml").write_text("MODEL:\n  PR_VARIANT: [v2\nTRAIN:\n  BATCH_SIZE: 8\n")
    (folder / "wrong_type.yaml").write_text("TRAIN:\n  BATCH_SIZE: many\n")
    (folder / "list.yaml").write_text("- MODEL.PR_VARIANT\n")
    return folder


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ("--cfg", "{dir}/typo.yaml"),
            ("error: unknown config key MODEL.PR_VARIANTT ({dir}/typo.yaml); did you mean MODEL.PR_VARIANT?"),
        ),
        (
            ("MODEL.PR_VARIANTT", "v2"),
            ("error: unknown config key MODEL.PR_VARIANTT (command line); did you mean MODEL.PR_VARIANT?"),
        ),
        (
            ("TRAIN.BATCHSIZE", "8"),
            ("error: unknown config key TRAIN.BATCHSIZE (command line); did you mean TRAIN.BATCH_SIZE?"),
        ),
        (("BATCH_SIZE", "8"), "did you mean TRAIN.BATCH_SIZE?"),
        (("--cfg", "{dir}/broken.yaml"), "error: {dir}/broken.yaml: line 3, column 6: not valid YAML"),
        (("--cfg", "{dir}/list.yaml"), "expected a mapping of config keys"),
        (
            ("--cfg", "{dir}/wrong_type.yaml"),
            ("error: TRAIN.BATCH_SIZE ({dir}/wrong_type.yaml) expects an integer (default 1024), got 'many' (str)"),
        ),
        (("MODEL.MLP.EMBED_DIM", "wide"), "error: MODEL.MLP.EMBED_DIM (command line) expects an integer"),
        (("TRAIN.DATASETS_3D", "AMASS"), "TRAIN.DATASETS_3D (command line) expects a list (default ['SYNTHETIC'])"),
        (("MODEL.MLP", "3"), "MODEL.MLP (command line) is a group of keys"),
        (("MODEL.PR_VARIANT", "v3"), "MODEL.PR_VARIANT='v3'"),
        (("MODEL.MLP.MATMUL_PRECISION", "float16"), "MODEL.MLP.MATMUL_PRECISION='float16': use 'float32' or"),
        (("MODEL.MLP.DROPOUT", "1.0"), "MODEL.MLP.DROPOUT=1.0: a probability in [0, 1)"),
        (("TRAIN.END_EPOCH",), "KEY VALUE pairs"),
        (("--cfg", "{dir}/missing.yaml"), "config file not found"),
    ],
)
def test_config_mistakes_print_one_line(yaml_files, args, expected):
    result = eval_smpl(*(a.format(dir=yaml_files) for a in args))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected.format(dir=yaml_files) in lines[0]


def test_every_key_is_reachable_and_values_coerce():
    keys = config_keys(defaults())
    assert "MODEL.MLP.EMBED_DIM" in keys and "TRAIN.RESUME" in keys and "MODEL.MLP" not in keys
    cfg = smpl_cfg(
        opts=[
            "TRAIN.GEN_LR",
            "1",
            "TRAIN.DATASETS_3D",
            "('AMASS', 'AGORA')",
            "EVAL.MAX_SAMPLES",
            5,
            "MODEL.PRETRAINED",
            "",
        ]
    )
    assert cfg.TRAIN.GEN_LR == 1.0 and isinstance(cfg.TRAIN.GEN_LR, float)
    assert cfg.TRAIN.DATASETS_3D == ["AMASS", "AGORA"] and cfg.EVAL.MAX_SAMPLES == 5 and cfg.MODEL.PRETRAINED == ""
    with pytest.raises(ConfigError, match="expects an integer"):
        smpl_cfg(opts=["EVAL.MAX_SAMPLES", "True"])


def test_a_saved_config_is_the_base_of_file_and_overrides(tmp_path):
    saved = smpl_cfg(opts=["TRAIN.BATCH_SIZE", "8", "TRAIN.END_EPOCH", "3", "EXP_NAME", "saved"]).dump()
    (tmp_path / "more.yaml").write_text("TRAIN:\n  END_EPOCH: 5\n")
    cfg = smpl_cfg(str(tmp_path / "more.yaml"), ["EXP_NAME", "now"], saved=(saved, "ckpt"))
    assert (cfg.TRAIN.BATCH_SIZE, cfg.TRAIN.END_EPOCH, cfg.EXP_NAME) == (8, 5, "now")
    with pytest.raises(ConfigError, match="is a smpl config; use train_smpl.py"):
        smplx_cfg(saved=(saved, "ckpt"))
    with pytest.raises(ConfigError, match=r"unknown config key TRAIN.OLD_KEY \(ckpt\)"):
        load_config(defaults(), saved=("TRAIN:\n  OLD_KEY: 1\n", "ckpt"))


def test_config_factory_gives_each_body_its_config_layer():
    import pytest

    from lib.core.config import config_factory

    assert config_factory("smpl")().BODY == "smpl" and config_factory("smplx")().BODY == "smplx"
    with pytest.raises(ValueError, match="body must be 'smpl' or 'smplx'"):
        config_factory("smplh")
