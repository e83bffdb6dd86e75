"""The official SMPL-IKS databases: paths, safe reading, validation, writing, and a torch Dataset over them.

Layout (METHOD.md section 10): ``<DB_DIR>/<name>_<set>_db.pt``, a joblib file holding a dict of arrays.

    SMPL:   beta (N, >=10), theta (N, 72), orig_theta (N, 72), twist_angle (N, 23), vid_name (N,)
    SMPL-X: betas (N, >=10), global_orient (N, 3), body_pose (N, 63), lhand_pose (N, 45), rhand_pose (N, 45),
            twist_angle (N, ..., 54), vid_name (N,)

``joblib.load`` unpickles, i.e. it can run any code a file asks for. :func:`safe_joblib_load` reads the same
format with the allow-listed unpickler of ``lib.io.safe_io`` (allow-list ``JOBLIB_DATABASE``): joblib's
``NumpyArrayWrapper`` (its array bytes are read as raw data), numpy arrays / dtypes / scalars (rebuilt from raw
bytes by ``lib.io.stand_ins``) and builtin containers; anything else is refused with :class:`UnsafeDatabaseError`
before it is called. Object arrays (e.g. ``vid_name`` stored as Python strings) are nested pickles and go through
the same allow-list.

    db = load_db(db_path(db_dir, 'AMASS', 'test'), 'smpl')      # validated dict of numpy arrays
    ds = PoseDataset(db, body='smpl', seqlen=1)                  # items: betas, pose (P, 3), twist_angle (P-1,)
"""

from __future__ import annotations

import builtins
import collections
import functools
import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lib.io.safe_io import (
    BUILTIN_DATA_TYPES,
    JOBLIB_DATABASE,
    AllowListUnpickling,
    UnsafeFileError,
    atomic_write,
    reading,
    spelled,
    unpickle,
)
from lib.io.stand_ins import (
    NDARRAY,
    DtypeStub,
    Guarded,
    encode_latin1,
    numpy_stand_ins,
    plain,
)
from lib.kinematics.tree import SMPL_TREE, SMPLX_TREE, TREES

__all__ = [
    "DB_NAMES",
    "UnsafeDatabaseError",
    "DatabaseFormatError",
    "db_stem",
    "db_path",
    "safe_joblib_load",
    "load_db",
    "validate_db",
    "write_db",
    "db_pose",
    "window_starts",
    "PoseDataset",
    "NUM_POSE_JOINTS",
]

# Config dataset names (TRAIN.DATASET_EVAL / TRAIN.DATASETS_3D) -> file stem.
DB_NAMES = {
    "SYNTHETIC": "synthetic",
    "BANDAI": "bandai",
    "AMASS": "amass",
    "ThreeDPW": "3dpw",
    "AGORA": "agora",
    "MOTIONX": "motionx",
}
# Other spellings found in the official download: the AMASS test file and the SMPL-X db directory.
SPLITS = ("train", "test", "val")  # val: only the generated synthetic dbs have one (training's validation db)
_ALT_FILES = {"amass": ("amss",)}
_ALT_DIRS = {"smplxiks_db": "smpxliks_db", "smpxliks_db": "smplxiks_db"}
NUM_POSE_JOINTS = {name: tree.num_pose_joints for name, tree in TREES.items()}
_OFFICIAL_SOURCE = (
    "the official SMPL-IKS databases (amass, 3dpw, agora for SMPL; amass, motionx, agora for "
    "SMPL-X) come from the download linked on the SMPL-IKS project page (data/smpl/smpliks_db, "
    "data/smplx/smplxiks_db); SYNTHETIC databases are generated automatically on first use "
    "(or with tools/make_synthetic_db.py); BANDAI databases are built from the public Bandai Namco "
    "Research Motion Dataset with tools/make_motion_db.py (docs/motion_data.md)"
)


UnsafeDatabaseError = UnsafeFileError  # a database file asks for something outside the allow-list (it would run code)


class DatabaseFormatError(ValueError):
    """A database misses a key, has a wrong shape or holds non-finite values."""


# ---------------------------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------------------------


def db_stem(name: str) -> str:
    """Config name (AMASS, ThreeDPW, ...) or file stem (amass, 3dpw, ...) -> file stem."""
    if name in DB_NAMES:
        return DB_NAMES[name]
    lowered = {k.lower(): v for k, v in DB_NAMES.items()}
    if name.lower() in lowered:
        return lowered[name.lower()]
    if name.lower() in DB_NAMES.values():
        return name.lower()
    raise ValueError(
        f"unknown database {name!r}; known: {sorted(DB_NAMES)} (config names) or "
        f"{sorted(DB_NAMES.values())} (file stems)"
    )


def db_path(db_dir: str | os.PathLike, name: str, split: str, must_exist: bool = True) -> Path:
    """``<db_dir>/<stem>_<split>_db.pt``, accepting the official download's other spellings (``amss_test_db.pt``
    for AMASS, the directory ``smpxliks_db`` for ``smplxiks_db`` and back). Raises FileNotFoundError naming the
    config keys when nothing exists and ``must_exist``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    stem = db_stem(name)
    db_dir = Path(db_dir)
    dirs = [db_dir]
    if db_dir.name in _ALT_DIRS:
        dirs.append(db_dir.with_name(_ALT_DIRS[db_dir.name]))
    stems = (stem,) + _ALT_FILES.get(stem, ())
    candidates = [d / f"{s}_{split}_db.pt" for d in dirs for s in stems]
    for path in candidates:
        if path.is_file():
            return path
    if not must_exist:
        return candidates[0]
    tried = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(
        f"database {name!r} ({split}) not found: tried {tried}. Set DATA.DB_DIR to the directory holding "
        f"<name>_<set>_db.pt and TRAIN.DATASET_EVAL / TRAIN.DATASETS_3D to the dataset; {_OFFICIAL_SOURCE}"
    )


# ---------------------------------------------------------------------------------------------------------------
# Safe reading of joblib files
# ---------------------------------------------------------------------------------------------------------------


def _refuse(what: str) -> None:
    raise UnsafeDatabaseError(f"refused: the file asks for {what}")


@functools.cache
def _stand_ins() -> dict[tuple[str, str], Any]:
    """The allow-list JOBLIB_DATABASE -> stand-ins: arrays rebuilt from raw bytes (``lib.io.stand_ins``; numeric,
    string and object arrays), joblib's array wrapper (checked before use), builtin containers."""
    from joblib.numpy_pickle import NumpyArrayWrapper

    return spelled(
        {
            **numpy_stand_ins(kinds="biufcSU", object_arrays=True),
            "joblib.numpy_pickle.NumpyArrayWrapper": NumpyArrayWrapper,
            "numpy.memmap": NDARRAY,  # a memmap's or matrix's class is only a tag here; an ndarray is read
            "numpy.matrix": NDARRAY,
            "collections.OrderedDict": collections.OrderedDict,
            "_codecs.encode": Guarded(encode_latin1),
            **{f"builtins.{name}": getattr(builtins, name) for name in BUILTIN_DATA_TYPES},
        }
    )


_WRAPPER_FIELDS = {"subclass", "shape", "order", "dtype", "allow_mmap", "numpy_array_alignment_bytes"}


def _safe_unpickler_class():
    from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler

    class SafeNumpyUnpickler(AllowListUnpickling, NumpyUnpickler):
        dispatch = NumpyUnpickler.dispatch.copy()

        def __init__(self, filename, file_handle):
            super().__init__(filename, file_handle, ensure_native_byte_order=True, mmap_mode=None)
            self.use_allow_list(JOBLIB_DATABASE, _stand_ins())

        def load_build(self):
            self.refuse_build_on_a_class()
            pickle._Unpickler.load_build(self)
            if not isinstance(self.stack[-1], NumpyArrayWrapper):
                return
            wrapper = self.stack.pop()
            self._check_wrapper(wrapper)
            if wrapper.dtype.hasobject:  # an object array: a nested pickle of its items
                array = plain(unpickle(self.file_handle, JOBLIB_DATABASE, _stand_ins(), shared_stream=True))
                if type(array) is not np.ndarray:
                    _refuse(f"an object array that unpickles to {type(array).__name__}")
            else:
                array = NumpyArrayWrapper.read_array(wrapper, self, True)  # the class's method, never the state's
            self.stack.append(array)

        dispatch[pickle.BUILD[0]] = load_build

        def _check_wrapper(self, wrapper):
            state = vars(wrapper)
            shape = state.get("shape")
            ok = (
                set(state) <= _WRAPPER_FIELDS
                and isinstance(state.get("dtype"), DtypeStub)
                and isinstance(shape, tuple)
                and all(isinstance(s, (int, np.integer)) and s >= 0 for s in shape)
                and state.get("order") in ("C", "F")
                and state.get("subclass") is NDARRAY
                and isinstance(state.get("numpy_array_alignment_bytes", None), (int, type(None)))
            )
            if not ok:
                _refuse("a malformed joblib array wrapper")
            wrapper.dtype = state["dtype"].value()  # checked: an allowed kind

    return SafeNumpyUnpickler


def safe_joblib_load(path: str | os.PathLike) -> Any:
    """``joblib.load`` without running code from the file: only numpy arrays (joblib's array wrapper, numpy
    reconstruction, dtypes, scalars) and builtin containers are accepted; anything else raises
    :class:`UnsafeDatabaseError` naming the file and the class, before anything is called. Compressed joblib
    files are read as joblib reads them; joblib < 0.10 multi-file dumps are refused."""
    from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap

    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"database file not found: {path}")
    unpickler_class = _safe_unpickler_class()
    with (
        open(path, "rb") as handle,
        reading(source, "joblib database", malformed=DatabaseFormatError),
        _validate_fileobject_and_memmap(handle, source, None) as (fobj, _),
    ):
        if isinstance(fobj, str):
            _refuse("the joblib < 0.10 multi-file format")
        return plain(unpickler_class(source, fobj).load())


# ---------------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------------

# The official SMPL-X db stores these pose groups of the tree (smplx name) under its own keys; jaw and eyes are zero.
SMPLX_DB_POSE_KEYS = {
    "global_orient": "global_orient",
    "body_pose": "body_pose",
    "lhand_pose": "left_hand_pose",
    "rhand_pose": "right_hand_pose",
}
# key -> (columns, at_least): arrays are brought to (N, columns); at_least allows more columns (betas).
_SPECS: dict[str, dict[str, tuple[int, bool]]] = {
    "smpl": {
        "beta": (10, True),
        "theta": (3 * SMPL_TREE.num_pose_joints, False),
        "twist_angle": (SMPL_TREE.num_twists, False),
    },
    "smplx": {
        "betas": (10, True),
        **{key: (3 * len(SMPLX_TREE.pose_slots(group)), False) for key, group in SMPLX_DB_POSE_KEYS.items()},
        "twist_angle": (SMPLX_TREE.num_twists, False),
    },
}
_OPTIONAL = {"smpl": {"orig_theta": (3 * SMPL_TREE.num_pose_joints, False)}, "smplx": {}}


def _check_body(body: str) -> str:
    if body not in _SPECS:
        raise ValueError(f"body must be 'smpl' or 'smplx', got {body!r}")
    return body


def _numeric(source: str, key: str, value: Any, columns: int, at_least: bool) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise DatabaseFormatError(f"{source}: key '{key}' must be numeric, got dtype {array.dtype}")
    if array.ndim < 1 or (array.ndim == 1 and columns != 1):
        raise DatabaseFormatError(f"{source}: key '{key}' has shape {array.shape}; expected (N, {columns})")
    flat = array.reshape(len(array), -1) if len(array) else array.reshape(0, columns)
    bad = flat.shape[1] < columns if at_least else flat.shape[1] != columns
    if bad:
        want = f"(N, >={columns})" if at_least else f"(N, {columns}) (or any (N, ..., {columns}) of that size)"
        raise DatabaseFormatError(f"{source}: key '{key}' has shape {array.shape}; expected {want}")
    finite = np.isfinite(flat)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(1))
        raise DatabaseFormatError(
            f"{source}: key '{key}' holds {int((~finite).sum())} non-finite values (NaN or "
            f"inf) in {len(rows)} rows, first rows {rows[:5].tolist()}"
        )
    return flat


def _names(source: str, value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 1:
        array = array.reshape(len(array), -1)
        if array.shape[1] != 1:
            raise DatabaseFormatError(f"{source}: key 'vid_name' must be one name per row, got shape {array.shape}")
        array = array[:, 0]
    if array.dtype.kind == "U":
        return array
    if array.dtype.kind == "S":
        return np.char.decode(array, "utf-8", "replace")
    if array.dtype.kind == "O":
        if not all(isinstance(v, (str, bytes, np.str_, np.bytes_)) for v in array):
            raise DatabaseFormatError(f"{source}: key 'vid_name' must hold strings")
        return np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array], dtype=str)
    if array.dtype.kind in "iu":
        return array.astype(str)
    raise DatabaseFormatError(f"{source}: key 'vid_name' must hold strings, got dtype {array.dtype}")


def validate_db(db: Any, body: str, source: str = "<db>") -> dict[str, np.ndarray]:
    """Check a db dict and return it with canonical shapes ((N, columns) arrays, vid_name as str (N,)).

    Raises DatabaseFormatError naming the file and the key: not a dict, missing key, wrong shape, non-numeric
    data, NaN / inf values, row counts that disagree. Extra keys are kept unchanged.
    """
    body = _check_body(body)
    if not isinstance(db, Mapping):
        raise DatabaseFormatError(f"{source}: a database is a dict of arrays, got {type(db).__name__}")
    required = dict(_SPECS[body])
    missing = [k for k in list(required) + ["vid_name"] if k not in db]
    if missing:
        raise DatabaseFormatError(
            f"{source}: missing key(s) {missing} for a {body} database (has "
            f"{sorted(map(str, db))}); expected {sorted(required) + ['vid_name']}"
        )
    out = dict(db)
    specs = {**required, **{k: v for k, v in _OPTIONAL[body].items() if k in db}}
    for key, (columns, at_least) in specs.items():
        out[key] = _numeric(source, key, db[key], columns, at_least)
    out["vid_name"] = _names(source, db["vid_name"])
    counts = {k: len(out[k]) for k in list(specs) + ["vid_name"]}
    if len(set(counts.values())) != 1:
        raise DatabaseFormatError(f"{source}: keys disagree on the number of rows: {counts}")
    return out


def load_db(path: str | os.PathLike, body: str) -> dict[str, np.ndarray]:
    """Read (safely) and validate a database file; see :func:`validate_db` for the returned shapes."""
    path = Path(path)
    return validate_db(safe_joblib_load(path), body, str(path))


def write_db(path: str | os.PathLike, db: Mapping[str, Any], body: str) -> Path:
    """Validate ``db`` and write it with joblib in the official layout, atomically (temporary file + rename)."""
    path = Path(path)
    checked = validate_db(db, body, str(path))
    import joblib

    with atomic_write(path) as file:
        joblib.dump({k: checked[k] if k in checked else v for k, v in db.items()}, file)
    return path


def db_pose(db: Mapping[str, np.ndarray], body: str) -> np.ndarray:
    """Axis-angle pose (N, P, 3) incl. the root from a validated db: SMPL theta; SMPL-X global_orient, body_pose,
    zero jaw / eyes, lhand_pose, rhand_pose (smplx's full-pose order)."""
    body = _check_body(body)
    tree = TREES[body]
    if body == "smpl":
        return np.asarray(db["theta"]).reshape(-1, tree.num_pose_joints, 3)
    n = len(db["global_orient"])
    dtype = np.result_type(*(np.asarray(db[key]) for key in SMPLX_DB_POSE_KEYS))
    pose = np.zeros((n, tree.num_pose_joints, 3), dtype=dtype)
    for key, group in SMPLX_DB_POSE_KEYS.items():
        pose[:, tree.pose_slots(group)] = np.asarray(db[key]).reshape(n, -1, 3)
    return pose


# ---------------------------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------------------------


def window_starts(vid_name: np.ndarray, seqlen: int, overlap: float = 0.0) -> np.ndarray:
    """First rows of the SEQLEN-frame windows that stay inside one sequence (a contiguous run of equal vid_name),
    stride ``max(1, int(seqlen * (1 - overlap)))``; runs shorter than seqlen give no window."""
    if seqlen < 1 or not 0.0 <= overlap < 1.0:
        raise ValueError("seqlen must be >= 1 and overlap in [0, 1)")
    n = len(vid_name)
    if seqlen == 1:
        return np.arange(n)
    stride = max(1, int(seqlen * (1.0 - overlap)))
    change = np.flatnonzero(vid_name[1:] != vid_name[:-1]) + 1
    bounds = np.concatenate([[0], change, [n]])
    starts = [
        np.arange(s, e - seqlen + 1, stride) for s, e in zip(bounds[:-1], bounds[1:], strict=True) if e - s >= seqlen
    ]
    return np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)


class PoseDataset(Dataset):
    """Samples of a database for either body model.

    Items are dicts of float32 tensors: ``betas`` (B,), ``pose`` (P, 3) axis-angle incl. the root (P = 24 for
    SMPL, 55 for SMPL-X), ``twist_angle`` (P-1,); with ``seqlen > 1`` each gets a leading time dimension
    (seqlen, ...) and windows never cross a ``vid_name``. ``num_betas`` None keeps the db's columns (10, or 11 with
    kids), otherwise truncates / zero-pads to that many.
    """

    def __init__(
        self,
        source: str | os.PathLike | Mapping[str, Any],
        body: str = "smpl",
        seqlen: int = 1,
        overlap: float = 0.0,
        num_betas: int | None = None,
    ):
        self.body = _check_body(body)
        self.source = "<dict>" if isinstance(source, Mapping) else str(source)
        db = validate_db(source, body) if isinstance(source, Mapping) else load_db(source, body)
        betas = db["beta" if body == "smpl" else "betas"]
        if num_betas is not None:
            if betas.shape[1] > num_betas and np.any(betas[:, num_betas:] != 0):
                warnings.warn(
                    f"{self.source}: dropping non-zero betas beyond the first {num_betas} (kid shapes in "
                    "an 11th beta need the kid template: set DATA.KID_TEMPLATE)",
                    stacklevel=2,
                )
            betas = betas[:, :num_betas]
            if betas.shape[1] < num_betas:
                betas = np.concatenate([betas, np.zeros((len(betas), num_betas - betas.shape[1]))], 1)
        self.seqlen = int(seqlen)
        self.betas = torch.as_tensor(np.ascontiguousarray(betas), dtype=torch.float32)
        self.pose = torch.as_tensor(np.ascontiguousarray(db_pose(db, body)), dtype=torch.float32)
        self.twist_angle = torch.as_tensor(np.ascontiguousarray(db["twist_angle"]), dtype=torch.float32)
        self.vid_name = db["vid_name"]
        self.starts = torch.as_tensor(window_starts(self.vid_name, self.seqlen, overlap), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        start = int(self.starts[index])
        if self.seqlen == 1:
            rows: Any = start
        else:
            rows = slice(start, start + self.seqlen)
        return {"betas": self.betas[rows], "pose": self.pose[rows], "twist_angle": self.twist_angle[rows]}

    def batch(self, indices: torch.Tensor | np.ndarray | list[int]) -> dict[str, torch.Tensor]:
        """Items ``indices`` stacked along a new first dimension, without a DataLoader (fast path for eval)."""
        starts = self.starts[torch.as_tensor(indices, dtype=torch.long)]
        if self.seqlen > 1:
            starts = starts[:, None] + torch.arange(self.seqlen)
        return {"betas": self.betas[starts], "pose": self.pose[starts], "twist_angle": self.twist_angle[starts]}
