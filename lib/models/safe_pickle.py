"""Read published SMPL-style pickles without running code from the file.

The SMPL `.pkl` files are Python 2 pickles of a dict holding chumpy `Ch` arrays, numpy arrays and a scipy sparse
`J_regressor`. A plain `pickle.load` would import and call whatever globals the file names, so they are read with
the allow-listed unpickler of `lib.io.safe_io` (allow-list `BODY_MODEL_PICKLE`), each allowed (module, name)
resolved to a small stand-in here that checks its arguments. Neither chumpy nor scipy is imported: a `Ch` becomes
its `x` array, a sparse matrix becomes a dense array, and every array is rebuilt from raw bytes by numpy with a
numeric dtype.

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
import math
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

__all__ = ['UnsafePickleError', 'load_pickle', 'loads_pickle']

# numpy dtype kinds an array may have: bool, signed int, unsigned int, float.
_NUMERIC_KINDS = 'biuf'
# A sparse matrix is densified; refuse shapes whose dense form would not fit comfortably in memory.
_MAX_DENSE_ELEMENTS = 50_000_000
# Containers nested deeper than this (or cyclic) are refused instead of recursing without end.
_MAX_DEPTH = 32


UnsafePickleError = UnsafeFileError  # the pickle asks for something outside the allow-list (or is malformed)


def _refuse(message: str) -> None:
    raise UnsafePickleError(message)


class _Frozen:
    """Base of the objects `find_class` hands out: BUILD on them is refused, so a file cannot set attributes on
    module-level objects and change how later files are read."""
    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        _refuse(f'BUILD applied to {self!r}')


class _Marker(_Frozen):
    """Stands for a global that may only be passed as an argument (a type), never called or instantiated."""
    __slots__ = ('name',)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f'<marker {self.name}>'


class _Guarded(_Frozen):
    """An allowed callable (one of the checking functions below)."""
    __slots__ = ('function',)

    def __init__(self, function):
        self.function = function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f'<allowed {self.function.__name__}>'


_NDARRAY = _Marker('numpy.ndarray')
_OBJECT = _Marker('builtins.object')


# ---------------------------------------------------------------------------------------------------------------
# numpy: dtypes and arrays
# ---------------------------------------------------------------------------------------------------------------

def _check_numeric_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.hasobject or dtype.kind == 'O':
        _refuse(f'object-dtype arrays are refused (dtype {dtype})')
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in _NUMERIC_KINDS:
        _refuse(f'only numeric (bool / int / uint / float) arrays are accepted, not dtype {dtype}')
    return dtype


class _DtypeStub:
    """Result of `numpy.dtype(spec, align, copy)`; BUILD may then set the byte order, nothing else."""

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype

    def __setstate__(self, state: Any) -> None:
        # numpy writes (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata]).
        if not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4):
            _refuse(f'unexpected dtype state {state!r:.80}')
        byteorder = state[1]
        if byteorder not in ('<', '>', '|', '='):
            _refuse(f'unexpected dtype byte order {byteorder!r:.20}')
        if any(item is not None for item in state[2:5]) or (len(state) == 9 and state[8] is not None):
            _refuse('structured / sub-array dtypes (and dtype metadata) are refused')
        if byteorder in ('<', '>'):
            self.dtype = self.dtype.newbyteorder(byteorder)


def _make_dtype(spec: Any, align: Any = False, copy: Any = True) -> _DtypeStub:
    if not isinstance(spec, str) or len(spec) > 8:
        _refuse(f'numpy.dtype called with {spec!r:.40}; only short type strings such as "f8" are accepted')
    try:
        dtype = np.dtype(spec)
    except TypeError as error:
        _refuse(f'invalid dtype {spec!r}: {error}')
    return _DtypeStub(_check_numeric_dtype(dtype))


def _resolve_dtype(dtype: Any) -> np.dtype:
    if not isinstance(dtype, _DtypeStub):
        _refuse(f'an array needs a dtype built by numpy.dtype, got {type(dtype).__name__}')
    return _check_numeric_dtype(dtype.dtype)


def _as_bytes(data: Any) -> bytes:
    """Raw array data: bytes, or a str from a Python 2 pickle loaded with encoding='latin1'."""
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, str):
        return data.encode('latin1')
    if isinstance(data, list):
        _refuse('object-dtype arrays are refused (array data stored as a list of objects)')
    _refuse(f'array data must be bytes, not {type(data).__name__}')


def _check_shape(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        _refuse(f'invalid array shape {shape!r:.60}')
    return shape


def _array_from_bytes(data: Any, dtype: Any, shape: Any, fortran: bool) -> np.ndarray:
    """Builds a fresh, writable array; the byte count must match the shape exactly."""
    dtype = _resolve_dtype(dtype)
    shape = _check_shape(shape)
    raw = _as_bytes(data)
    count = math.prod(shape)
    if len(raw) != count * dtype.itemsize:
        _refuse(f'array data has {len(raw)} bytes, shape {shape} of {dtype} needs {count * dtype.itemsize}')
    flat = np.frombuffer(raw, dtype=dtype, count=count)
    return flat.reshape(shape, order='F' if fortran else 'C').copy()


class _ArrayStub:
    """An ndarray under construction: `_reconstruct` makes it empty, BUILD fills it (once)."""

    def __init__(self, array: np.ndarray | None = None):
        self.array = array

    def __setstate__(self, state: Any) -> None:
        if self.array is not None:
            _refuse('BUILD applied to an array that is already complete')
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            _refuse(f'unexpected ndarray state of type {type(state).__name__}')
        shape, dtype, fortran, data = state[-4:]  # (version,) shape, dtype, is_fortran, rawdata
        self.array = _array_from_bytes(data, dtype, shape, bool(fortran))

    def value(self) -> np.ndarray:
        if self.array is None:
            _refuse('an ndarray was created but never filled')
        return self.array


def _reconstruct(subtype: Any, shape: Any = (0,), typecode: Any = b'b') -> _ArrayStub:
    """numpy's `_reconstruct(ndarray, (0,), b'b')`; the real dtype and data arrive with BUILD."""
    if subtype is not _NDARRAY:
        _refuse(f'ndarray subclasses and other types are refused in _reconstruct (got {subtype!r:.60})')
    return _ArrayStub()


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> _ArrayStub:
    """numpy's protocol-5 `_frombuffer(buffer, dtype, shape, order)`."""
    if order not in ('C', 'F'):
        _refuse(f'invalid array order {order!r:.10}')
    return _ArrayStub(_array_from_bytes(buffer, dtype, shape, order == 'F'))


def _scalar(dtype: Any, data: Any) -> _ArrayStub:
    """numpy's `scalar(dtype, bytes)` for numpy scalars; kept as a 0-d array."""
    return _ArrayStub(_array_from_bytes(data, dtype, (), False))


# ---------------------------------------------------------------------------------------------------------------
# chumpy and scipy stand-ins
# ---------------------------------------------------------------------------------------------------------------

def _numeric_array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, _ArrayStub):
        return value.value()
    _refuse(f'{what} must be a numeric numpy array, got {type(value).__name__}')


class _StateStub:
    """Base for stand-ins created empty (NEWOBJ or copy_reg._reconstructor) and filled by BUILD with a dict."""

    def __new__(cls, *args: Any, **kwargs: Any):
        if args or kwargs:
            _refuse(f'{cls.name} must be created without arguments')
        return super().__new__(cls)

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            _refuse(f'{self.name} state must be a dict, got {type(state).__name__}')
        if getattr(self, 'array', None) is not None:
            _refuse(f'BUILD applied twice to a {self.name}')
        self.array = self._array_from_state(state)

    def value(self) -> np.ndarray:
        if getattr(self, 'array', None) is None:
            _refuse(f'a {self.name} was created but its state was never set')
        return self.array


class _ChStub(_StateStub):
    """chumpy.ch.Ch: the state dict keeps the array in `x`; the rest (dirty flags, ...) is ignored."""
    name = 'chumpy.ch.Ch'

    def _array_from_state(self, state: dict) -> np.ndarray:
        if 'x' not in state:
            _refuse('chumpy.ch.Ch state has no "x" array')
        return _numeric_array(state['x'], 'chumpy.ch.Ch state "x"')


class _SparseStub(_StateStub):
    """scipy.sparse compressed matrices, densified: state `data`, `indices`, `indptr`, `_shape` (or `shape`)."""
    compressed_axis = 1  # csc: indptr runs over columns, indices are rows

    def _array_from_state(self, state: dict) -> np.ndarray:
        shape = state.get('_shape', state.get('shape'))
        if not (isinstance(shape, tuple) and len(shape) == 2 and all(isinstance(n, int) and n >= 0 for n in shape)):
            _refuse(f'{self.name} has an invalid shape {shape!r:.40}')
        if shape[0] * shape[1] > _MAX_DENSE_ELEMENTS:
            _refuse(f'{self.name} of shape {shape} is too large to densify')
        data = _numeric_array(state.get('data'), f'{self.name} data')
        indices = _numeric_array(state.get('indices'), f'{self.name} indices')
        indptr = _numeric_array(state.get('indptr'), f'{self.name} indptr')
        return _densify(data, indices, indptr, shape, self.compressed_axis, self.name)


class _CscStub(_SparseStub):
    name = 'scipy.sparse.csc_matrix'
    compressed_axis = 1


class _CsrStub(_SparseStub):
    name = 'scipy.sparse.csr_matrix'
    compressed_axis = 0


def _densify(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int],
             compressed_axis: int, name: str) -> np.ndarray:
    """Dense (rows, cols) array from compressed sparse storage; duplicate entries are summed, as scipy does."""
    num_compressed = shape[compressed_axis]
    valid = (data.ndim == indices.ndim == indptr.ndim == 1 and indices.dtype.kind in 'iu'
             and indptr.dtype.kind in 'iu' and len(indptr) == num_compressed + 1 and len(data) == len(indices))
    if valid:
        counts = np.diff(indptr.astype(np.int64))
        valid = indptr[0] == 0 and indptr[-1] == len(data) and bool(np.all(counts >= 0))
    if valid and len(indices):
        valid = indices.min() >= 0 and indices.max() < shape[1 - compressed_axis]
    if not valid:
        _refuse(f'{name} has inconsistent data / indices / indptr')
    dense = np.zeros(shape, dtype=data.dtype)
    compressed = np.repeat(np.arange(num_compressed), counts)
    rows, cols = (indices, compressed) if compressed_axis == 1 else (compressed, indices)
    np.add.at(dense, (rows.astype(np.int64), cols), data)
    return dense


# ---------------------------------------------------------------------------------------------------------------
# builtins and copy_reg
# ---------------------------------------------------------------------------------------------------------------

def _encode_latin1(text: Any, encoding: Any = 'utf-8', errors: Any = 'strict') -> bytes:
    """`_codecs.encode(text, 'latin1')`: how Python 3 spells bytes in protocols <= 2."""
    if encoding not in ('latin1', 'latin-1') or errors != 'strict':
        _refuse(f'_codecs.encode is accepted with the latin1 codec only, not {encoding!r:.30}')
    if not isinstance(text, str):
        _refuse(f'_codecs.encode expects a str, got {type(text).__name__}')
    return text.encode('latin1')


def _make_set(items: Any = ()) -> set:
    if not isinstance(items, (list, tuple)):
        _refuse(f'set() expects a list, got {type(items).__name__}')
    return set(items)


def _empty_bytes(*args: Any) -> bytes:
    if args:
        _refuse('bytes() is accepted without arguments only')
    return b''


_STATE_STUBS = (_ChStub, _CscStub, _CsrStub)


def _reconstructor(cls: Any, base: Any, state: Any) -> _StateStub:
    """copy_reg._reconstructor(cls, object, None) as written by protocols 0 and 1."""
    if cls not in _STATE_STUBS or base is not _OBJECT or state is not None:
        _refuse(f'copy_reg._reconstructor is accepted only as (Ch / sparse matrix, object, None), '
                f'got ({cls!r:.40}, {base!r:.40}, {state!r:.40})')
    return cls.__new__(cls)


def _stand_ins() -> dict[tuple[str, str], Any]:
    """The allow-list BODY_MODEL_PICKLE -> a marker, a stand-in class (created empty, filled by BUILD) or a checking
    function."""
    table = spelled({
        'builtins.set': _make_set, 'builtins.object': _OBJECT, 'builtins.bytes': _empty_bytes,
        '_codecs.encode': _encode_latin1, 'copyreg._reconstructor': _reconstructor, 'chumpy.ch.Ch': _ChStub,
        'numpy.ndarray': _NDARRAY, 'numpy.dtype': _make_dtype,
        'numpy._core.multiarray._reconstruct': _reconstruct, 'numpy._core.multiarray.scalar': _scalar,
        'numpy._core.numeric._frombuffer': _frombuffer,
        'scipy.sparse._csc.csc_matrix': _CscStub, 'scipy.sparse._csr.csr_matrix': _CsrStub,
        'scipy.sparse.csc.csc_matrix': _CscStub, 'scipy.sparse.csr.csr_matrix': _CsrStub})
    return {key: value if isinstance(value, (_Marker, type)) else _Guarded(value) for key, value in table.items()}


_STAND_INS = _stand_ins()


# ---------------------------------------------------------------------------------------------------------------
# Result conversion
# ---------------------------------------------------------------------------------------------------------------

def _plain(value: Any, depth: int = 0) -> Any:
    """Replaces the stand-ins by numpy arrays in dicts / lists / tuples; sets and scalars pass through."""
    if depth > _MAX_DEPTH:
        _refuse(f'containers nested deeper than {_MAX_DEPTH} levels (or cyclic) are refused')
    if isinstance(value, (_ArrayStub, _StateStub)):
        return value.value()
    if isinstance(value, _DtypeStub):
        return value.dtype
    if isinstance(value, _Marker):
        _refuse(f'{value.name} may only appear as an argument')
    if isinstance(value, dict):
        return {_plain(k, depth + 1): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, depth + 1) for v in value)
    return value  # str, bytes, int, float, bool, None, set


def loads_pickle(data: bytes, source: str = '<bytes>') -> Any:
    """Unpickles `data` (latin1 for Python 2 strings) with the allow-list; stand-ins become numpy arrays.

    Raises UnsafePickleError (a ValueError) naming `source` for anything refused or malformed.
    """
    with reading(source, 'body-model pickle'):
        return _plain(unpickle(io.BytesIO(data), BODY_MODEL_PICKLE, _STAND_INS, encoding='latin1'))


def load_pickle(path: str | Path) -> Any:
    """Reads the pickle file at `path` with `loads_pickle`."""
    path = Path(path)
    return loads_pickle(path.read_bytes(), source=str(path))
