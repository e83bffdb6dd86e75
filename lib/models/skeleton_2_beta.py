"""The ``skeleton_2_beta`` file: the Shape Inverse matrix A (bone lengths in mm per unit beta).

Official layout: ``np.load(path, allow_pickle=True)['lr'].item()['A1']``, a (G, >=10) tensor inside a pickled dict.
Plain ``np.load(allow_pickle=True)`` would run whatever code the pickle names, so the ``lr`` entry is read by the
allow-listed unpickler of ``lib.io.safe_io`` (allow-list ``SKELETON_2_BETA``), with stand-ins here for what that
dict may hold: numpy arrays of numeric dtype (and the one object array around the dict), torch tensors (their
storage read by ``torch.load(weights_only=True)``), plain containers.
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

ENTRY = "lr"
MATRIX_KEY = "A1"


class _ArrayState:
    """Stand-in for ``numpy.ndarray`` during unpickling; becomes a real array (or a list of objects) on BUILD."""

    def __init__(self):
        self.value = None

    def __setstate__(self, state):
        _version, shape, dtype, fortran, data = state
        dtype = dtype.resolve() if isinstance(dtype, _DtypeState) else None
        if dtype is None:
            raise ValueError("array with an unreadable dtype")
        if dtype == np.dtype(object):
            if not isinstance(data, list):
                raise ValueError("object array without a list of items")
            self.value = data
            return
        if not isinstance(data, bytes):
            raise ValueError("numeric array without raw bytes")
        self.value = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C").copy()


class _DtypeState:
    """Stand-in for ``numpy.dtype``: numeric kinds, and 'O' only for the array that wraps the dict."""

    def __init__(self, spec, align=False, copy=True):
        if not isinstance(spec, str):
            raise ValueError(f"dtype spec {spec!r} refused")
        self.spec, self.order = spec, "|"

    def __setstate__(self, state):
        self.order = state[1] if isinstance(state, tuple) and len(state) > 1 and isinstance(state[1], str) else "|"

    def resolve(self) -> np.dtype:
        dtype = np.dtype(self.spec).newbyteorder(self.order if self.order in "<>=|" else "=")
        if dtype.kind not in "biufO":
            raise ValueError(f"dtype {dtype} refused")
        return dtype


def _reconstruct(subtype, shape, typecode):
    if subtype is not _NDARRAY:
        raise ValueError("only plain numpy arrays are accepted")
    return _ArrayState()


def _tensor_from_bytes(data: bytes):
    return torch.load(io.BytesIO(data), weights_only=True)


_NDARRAY = object()
_STAND_INS = spelled({
    "numpy._core.multiarray._reconstruct": _reconstruct,
    "numpy.ndarray": _NDARRAY,
    "numpy.dtype": _DtypeState,
    "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
    "torch.storage._load_from_bytes": _tensor_from_bytes,
    "collections.OrderedDict": OrderedDict,
})


def _plain(value):
    return value.value if isinstance(value, _ArrayState) else value


def load_skeleton_2_beta(path: str | Path, config_key: str = "DATA.SKELETON_2_BETA") -> np.ndarray:
    """Read A (G, K) as float64 from an official-layout ``.npz`` without running code from it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found ({config_key}). Use the file from the official SMPL-IKS data "
                                "download, write one with tools/make_skeleton_2_beta.py, or leave the key empty to "
                                "fit A from the body model at start-up")
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
        items = _plain(unpickle(stream, SKELETON_2_BETA, _STAND_INS))
    entry = items[0] if isinstance(items, list) and len(items) == 1 else None
    if not isinstance(entry, dict) or MATRIX_KEY not in entry:
        raise ValueError(f"{path}: '{ENTRY}' holds no dict with key '{MATRIX_KEY}'")
    matrix = _plain(entry[MATRIX_KEY])
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
