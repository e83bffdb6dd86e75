"""Read published SMPL-style pickles without running code from the file.

The SMPL `.pkl` files are Python 2 pickles of a dict holding chumpy `Ch` arrays, numpy arrays and a scipy sparse
`J_regressor`. A plain `pickle.load` would import and call whatever globals the file names, so they are read with
the allow-listed unpickler of `lib.io.safe_io` (allow-list `BODY_MODEL_PICKLE`), each allowed (module, name)
resolved to a small stand-in (here, or the numpy ones of `lib.io.stand_ins`) that checks its arguments. Neither
chumpy nor scipy is imported: a `Ch` becomes its `x` array, a sparse matrix becomes a dense array, and every array
is rebuilt from raw bytes by numpy with a numeric dtype.

Globals that such pickles ask for (measured with Python 2 / numpy 1 writers and with the current ones), and what
each resolves to here:

    __builtin__.set / builtins.set                  set(items)
    __builtin__.object / builtins.object            a marker, only accepted by copy_reg._reconstructor
    __builtin__.bytes / builtins.bytes              b'' (protocol <= 2 spells an empty bytes object this way)
    _codecs.encode                                  str -> bytes, latin1 only
    copy_reg._reconstructor / copyreg._reconstructor  an empty Ch / sparse stand-in (protocols 0 and 1)
    chumpy.ch.Ch                                    stand-in keeping only the numeric array in its state key `x`
    numpy.ndarray                                   a marker, only accepted by _reconstruct
    numpy.dtype                                     numeric dtypes only (bool, int, uint, float)
    numpy.core.multiarray._reconstruct (numpy 1) / numpy._core.multiarray._reconstruct
    numpy.core.numeric._frombuffer (numpy 1) / numpy._core.numeric._frombuffer   (protocol 5)
    numpy.core.multiarray.scalar / numpy._core.multiarray.scalar                numeric numpy scalars
    scipy.sparse.csc.csc_matrix (old path) / scipy.sparse._csc.csc_matrix, and the same for csr_matrix

Everything else is refused with `UnsafePickleError` (a `ValueError`): any other global, dotted names reaching
through an allowed module (`numpy.core.multiarray._reconstruct.__globals__`), object / structured dtypes, ndarray
subclasses, persistent ids, `_codecs.encode` with another codec, a `Ch` whose `x` is not a numeric array.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from lib.io.safe_io import (
    BODY_MODEL_PICKLE,
    UnsafeFileError,
    reading,
    spelled,
    unpickle,
)
from lib.io.stand_ins import (
    ArrayStub,
    Frozen,
    Guarded,
    Marker,
    Stub,
    encode_latin1,
    numpy_stand_ins,
    plain,
    refuse,
)

__all__ = ["UnsafePickleError", "load_pickle", "loads_pickle"]

# A sparse matrix is densified; refuse shapes whose dense form would not fit comfortably in memory.
_MAX_DENSE_ELEMENTS = 50_000_000

UnsafePickleError = UnsafeFileError  # the pickle asks for something outside the allow-list (or is malformed)

_OBJECT = Marker("builtins.object")


# ---------------------------------------------------------------------------------------------------------------
# chumpy and scipy stand-ins
# ---------------------------------------------------------------------------------------------------------------


def _numeric_array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, ArrayStub):
        return value.value()
    refuse(f"{what} must be a numeric numpy array, got {type(value).__name__}")


class _StateStub(Stub):
    """Base for stand-ins created empty (NEWOBJ or copy_reg._reconstructor) and filled by BUILD with a dict."""

    def __new__(cls, *args: Any, **kwargs: Any):
        if args or kwargs:
            refuse(f"{cls.name} must be created without arguments")
        return super().__new__(cls)

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            refuse(f"{self.name} state must be a dict, got {type(state).__name__}")
        if getattr(self, "array", None) is not None:
            refuse(f"BUILD applied twice to a {self.name}")
        self.array = self._array_from_state(state)

    def value(self) -> np.ndarray:
        if getattr(self, "array", None) is None:
            refuse(f"a {self.name} was created but its state was never set")
        return self.array


class _ChStub(_StateStub):
    """chumpy.ch.Ch: the state dict keeps the array in `x`; the rest (dirty flags, ...) is ignored."""

    name = "chumpy.ch.Ch"

    def _array_from_state(self, state: dict) -> np.ndarray:
        if "x" not in state:
            refuse('chumpy.ch.Ch state has no "x" array')
        return _numeric_array(state["x"], 'chumpy.ch.Ch state "x"')


class _SparseStub(_StateStub):
    """scipy.sparse compressed matrices, densified: state `data`, `indices`, `indptr`, `_shape` (or `shape`)."""

    compressed_axis = 1  # csc: indptr runs over columns, indices are rows

    def _array_from_state(self, state: dict) -> np.ndarray:
        shape = state.get("_shape", state.get("shape"))
        if not (isinstance(shape, tuple) and len(shape) == 2 and all(isinstance(n, int) and n >= 0 for n in shape)):
            refuse(f"{self.name} has an invalid shape {shape!r:.40}")
        if shape[0] * shape[1] > _MAX_DENSE_ELEMENTS:
            refuse(f"{self.name} of shape {shape} is too large to densify")
        data = _numeric_array(state.get("data"), f"{self.name} data")
        indices = _numeric_array(state.get("indices"), f"{self.name} indices")
        indptr = _numeric_array(state.get("indptr"), f"{self.name} indptr")
        return _densify(data, indices, indptr, shape, self.compressed_axis, self.name)


class _CscStub(_SparseStub):
    name = "scipy.sparse.csc_matrix"
    compressed_axis = 1


class _CsrStub(_SparseStub):
    name = "scipy.sparse.csr_matrix"
    compressed_axis = 0


def _densify(
    data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int], compressed_axis: int, name: str
) -> np.ndarray:
    """Dense (rows, cols) array from compressed sparse storage; duplicate entries are summed, as scipy does."""
    num_compressed = shape[compressed_axis]
    valid = (
        data.ndim == indices.ndim == indptr.ndim == 1
        and indices.dtype.kind in "iu"
        and indptr.dtype.kind in "iu"
        and len(indptr) == num_compressed + 1
        and len(data) == len(indices)
    )
    if valid:
        counts = np.diff(indptr.astype(np.int64))
        valid = indptr[0] == 0 and indptr[-1] == len(data) and bool(np.all(counts >= 0))
    if valid and len(indices):
        valid = indices.min() >= 0 and indices.max() < shape[1 - compressed_axis]
    if not valid:
        refuse(f"{name} has inconsistent data / indices / indptr")
    dense = np.zeros(shape, dtype=data.dtype)
    compressed = np.repeat(np.arange(num_compressed), counts)
    rows, cols = (indices, compressed) if compressed_axis == 1 else (compressed, indices)
    np.add.at(dense, (rows.astype(np.int64), cols), data)
    return dense


# ---------------------------------------------------------------------------------------------------------------
# builtins and copy_reg
# ---------------------------------------------------------------------------------------------------------------


def _make_set(items: Any = ()) -> set:
    if not isinstance(items, (list, tuple)):
        refuse(f"set() expects a list, got {type(items).__name__}")
    return set(items)


def _empty_bytes(*args: Any) -> bytes:
    if args:
        refuse("bytes() is accepted without arguments only")
    return b""


_STATE_STUBS = (_ChStub, _CscStub, _CsrStub)


def _reconstructor(cls: Any, base: Any, state: Any) -> _StateStub:
    """copy_reg._reconstructor(cls, object, None) as written by protocols 0 and 1."""
    if cls not in _STATE_STUBS or base is not _OBJECT or state is not None:
        refuse(
            f"copy_reg._reconstructor is accepted only as (Ch / sparse matrix, object, None), "
            f"got ({cls!r:.40}, {base!r:.40}, {state!r:.40})"
        )
    return cls.__new__(cls)


def _stand_ins() -> dict[tuple[str, str], Any]:
    """The allow-list BODY_MODEL_PICKLE -> a marker, a stand-in class (created empty, filled by BUILD) or a checking
    function."""
    table = spelled(
        {
            **numpy_stand_ins(),
            "builtins.set": _make_set,
            "builtins.object": _OBJECT,
            "builtins.bytes": _empty_bytes,
            "_codecs.encode": encode_latin1,
            "copyreg._reconstructor": _reconstructor,
            "chumpy.ch.Ch": _ChStub,
            "scipy.sparse._csc.csc_matrix": _CscStub,
            "scipy.sparse._csr.csr_matrix": _CsrStub,
            "scipy.sparse.csc.csc_matrix": _CscStub,
            "scipy.sparse.csr.csr_matrix": _CsrStub,
        }
    )
    return {key: value if isinstance(value, (Frozen, type)) else Guarded(value) for key, value in table.items()}


_STAND_INS = _stand_ins()


def loads_pickle(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickles `data` (latin1 for Python 2 strings) with the allow-list; stand-ins become numpy arrays.

    Raises UnsafePickleError (a ValueError) naming `source` for anything refused or malformed.
    """
    with reading(source, "body-model pickle"):
        return plain(unpickle(io.BytesIO(data), BODY_MODEL_PICKLE, _STAND_INS, encoding="latin1"))


def load_pickle(path: str | Path) -> Any:
    """Reads the pickle file at `path` with `loads_pickle`."""
    path = Path(path)
    return loads_pickle(path.read_bytes(), source=str(path))
