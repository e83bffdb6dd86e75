"""The ``skeleton_2_beta`` file: the Shape Inverse matrix A (bone lengths in mm per unit beta).

Official layout: ``np.load(path, allow_pickle=True)['lr'].item()['A1']``, a (G, >=10) tensor inside a pickled dict.
Plain ``np.load(allow_pickle=True)`` would run whatever code the pickle names, so the ``lr`` entry is read by the
allow-listed unpickler of ``lib.io.safe_io`` (allow-list ``SKELETON_2_BETA``), with stand-ins for what that
dict may hold: numpy arrays of numeric dtype and the one object array around the dict (``lib.io.stand_ins``), torch
tensors (their storage read by ``torch.load(weights_only=True)``), plain containers.
"""

from __future__ import annotations

import io
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from numpy.lib import format as npy_format

from lib.io.safe_io import SKELETON_2_BETA, atomic_write, reading, spelled, unpickle
from lib.io.stand_ins import numpy_stand_ins, plain

ENTRY = "lr"
MATRIX_KEY = "A1"


def _tensor_from_bytes(data: bytes):
    return torch.load(io.BytesIO(data), weights_only=True)


_NUMPY = numpy_stand_ins(object_arrays=True)
_STAND_INS = spelled(
    {
        **{name: _NUMPY[name] for name in ("numpy._core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype")},
        "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
        "torch.storage._load_from_bytes": _tensor_from_bytes,
        "collections.OrderedDict": OrderedDict,
    }
)


def load_skeleton_2_beta(path: str | Path, config_key: str = "DATA.SKELETON_2_BETA") -> np.ndarray:
    """Read A (G, K) as float64 from an official-layout ``.npz`` without running code from it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found ({config_key}). Use the file from the official SMPL-IKS data "
            "download, write one with tools/make_skeleton_2_beta.py, or leave the key empty to "
            "fit A from the body model at start-up"
        )
    with zipfile.ZipFile(path) as archive:
        if f"{ENTRY}.npy" not in archive.namelist():
            raise ValueError(f"{path}: no '{ENTRY}' entry; expected the official skeleton_2_beta layout")
        stream = io.BytesIO(archive.read(f"{ENTRY}.npy"))
    version = npy_format.read_magic(stream)
    read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    shape, _fortran, dtype = read_header(stream)
    if dtype != np.dtype(object) or shape != ():
        raise ValueError(f"{path}: '{ENTRY}' must be a pickled dict (a 0-d object array)")
    with reading(str(path), "skeleton_2_beta file"):
        items = plain(unpickle(stream, SKELETON_2_BETA, _STAND_INS))
    entry = items[()] if isinstance(items, np.ndarray) and items.shape == () and items.dtype == object else None
    if not isinstance(entry, dict) or MATRIX_KEY not in entry:
        raise ValueError(f"{path}: '{ENTRY}' holds no dict with key '{MATRIX_KEY}'")
    matrix = entry[MATRIX_KEY]
    matrix = matrix.detach().cpu().numpy() if torch.is_tensor(matrix) else np.asarray(matrix)
    if matrix.ndim != 2 or not np.isfinite(matrix).all():
        raise ValueError(f"{path}: '{MATRIX_KEY}' must be a finite 2-D matrix, got shape {matrix.shape}")
    return matrix.astype(np.float64)


def save_skeleton_2_beta(path: str | Path, matrix: np.ndarray) -> Path:
    """Write A in the official layout (``['lr'].item()['A1']``, a torch tensor as in the published file)."""
    path = Path(path)
    entry = np.empty((), dtype=object)
    entry[()] = {MATRIX_KEY: torch.as_tensor(np.asarray(matrix, dtype=np.float64))}
    with atomic_write(path) as file:
        np.savez(file, **{ENTRY: entry})
    return path
