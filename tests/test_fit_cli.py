"""fit.py end to end: the shipped examples from another working directory, and one-line errors for bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import smplx
import torch
from smplx.vertex_joint_selector import VertexJointSelector

from lib.core.config import REPO_ROOT
from lib.data.user_joints import JOINT_ORDERS
from lib.engine.fitting import main
from lib.kinematics.tree import TREES

FIT = REPO_ROOT / "fit.py"
EXAMPLES = REPO_ROOT / "data" / "examples"
MODELS = {
    "smpl": REPO_ROOT / "data/open/smpl/OPEN_SMPL_NEUTRAL.npz",
    "smplx": REPO_ROOT / "data/open/smplx/OPEN_SMPLX_NEUTRAL.npz",
}


def run_fit(cwd, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(FIT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def plain_model(body):
    path = MODELS[body]
    with np.load(path, allow_pickle=False) as d:
        ids = {k[4:]: int(d[k]) for k in d.files if k.startswith("vid_")}
        if body == "smpl":
            return smplx.SMPL(model_path="", data_struct=smplx.utils.Struct(**d), vertex_ids=ids)
    model = smplx.SMPLX(
        model_path=str(path), use_pca=False, flat_hand_mean=True, num_betas=10, num_expression_coeffs=10
    )
    model.vertex_joint_selector = VertexJointSelector(vertex_ids=ids)  # the open file's fingertip vertices
    return model


@pytest.mark.parametrize("body, extra", [("smpl", []), ("smplx", ["--frames", "0", "--mesh", "ply"])])
def test_shipped_example_from_another_directory(tmp_path, body, extra):
    example = EXAMPLES / f"{body}_sequence.npy"
    result = run_fit(
        tmp_path, "--body", body, "--joints", str(example), "--out", "out", "--render", "--fps", "30", *extra
    )
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"  # relative to the caller's directory, not the repository's
    report = json.loads((out / "fit_report.json").read_text())
    assert report["frames"] == 16 and report["method"] == "mixik" and report["mpjpe_mm"]["max"] < 1.0
    assert report["mirror_average"] is True  # the default: the network's twists averaged with its mirror reading
    suffix = "ply" if body == "smplx" else "obj"
    assert len(list((out / "meshes").glob(f"frame_*.{suffix}"))) == 16
    pictures = ["render_00000.png"] if body == "smplx" else ["render_sheet.png"]
    assert [p.name for p in sorted(out.glob("*.png"))] == pictures

    with np.load(out / "params.npz", allow_pickle=False) as data:
        params = {k: torch.as_tensor(data[k]) for k in data.files if data[k].dtype == np.float32 and data[k].ndim}
        assert float(data["fps"]) == 30.0 and str(data["body"]) == body
    with torch.no_grad():
        joints = plain_model(body)(**params).joints.numpy()
    tree = TREES[body]
    order = JOINT_ORDERS["smpl24" if body == "smpl" else "smplx65"]
    # the skeleton joints (SMPL-X's jaw and eyes hang on the head's rotation, which no skeleton joint shows)
    columns = [k for k, name in enumerate(order) if tree.joint_names.index(name) in tree.skeleton]
    fitted = joints[:, [tree.joint_names.index(order[k]) for k in columns]]
    error = np.linalg.norm(fitted - np.load(example)[:, columns], axis=-1)
    assert error.max() < 1e-3  # < 1 mm, translation included


@pytest.mark.parametrize(
    "make, args, message",
    [
        (None, ["--joints", "missing.npy"], "joints file not found"),
        (lambda j: j * 1000.0, [], "look like mm"),
        (lambda j: j[:, :20], [], "20 joints per frame"),
        (lambda j: np.where(np.arange(24)[None, :, None] == 3, np.nan, j), [], "contain NaN"),
        (lambda j: j, ["--joint-order", "hybrik"], "unknown joint order 'hybrik'"),
        (lambda j: j, ["--joint-order", "nothere.json"], "joint order file not found"),
    ],
)
def test_bad_input_gets_one_line(tmp_path, capsys, make, args, message):
    path = tmp_path / "joints.npy"
    if make is not None:
        np.save(path, make(np.load(EXAMPLES / "smpl_sequence.npy")))
    os.chdir(tmp_path)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["--joints", str(path), "--out", str(tmp_path / "out"), "--mesh", "none", *args])
    finally:
        os.chdir(REPO_ROOT)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_an_error_from_a_subprocess_has_no_traceback(tmp_path):
    np.save(tmp_path / "x55.npy", np.load(EXAMPLES / "smplx_sequence.npy")[:, :55])
    result = run_fit(tmp_path, "--body", "smplx", "--joints", "x55.npy", "--mesh", "none")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: the skeleton lacks 10 joint(s)")
    assert "Traceback" not in result.stderr


def test_no_mirror_average_gives_the_papers_mixik(tmp_path):
    """--no-mirror-average: the network's own twists; the fit differs from the default's only in the twists."""
    example = str(EXAMPLES / "smpl_sequence.npy")
    default = main(["--body", "smpl", "--joints", example, "--out", str(tmp_path / "a"), "--mesh", "none"])
    paper = main(
        ["--body", "smpl", "--joints", example, "--out", str(tmp_path / "b"), "--mesh", "none", "--no-mirror-average"]
    )
    assert default["mirror_average"] is True and paper["mirror_average"] is False
    assert paper["method"] == "mixik" and paper["mpjpe_mm"]["max"] < 1.0
    with np.load(tmp_path / "a/params.npz") as a, np.load(tmp_path / "b/params.npz") as b:
        np.testing.assert_allclose(a["betas"], b["betas"], atol=1e-6)  # same shape: only twists change
        assert np.abs(a["body_pose"] - b["body_pose"]).max() > 1e-3
