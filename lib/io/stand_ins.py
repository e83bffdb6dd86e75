"""Stand-ins for the globals allow-listed pickles name, shared by the formats that rebuild their data themselves.

`lib.io.safe_io.unpickle` resolves each allowed global to a stand-in: a checking function (wrapped in `Guarded`), a
`Marker` for a type that may only be passed as an argument, or a class whose instances are filled by BUILD. The
numpy ones here rebuild every array from raw bytes with a checked dtype, shape and byte count; no numpy
reconstructor runs on file data. `plain` then turns the stand-ins in the result into numpy arrays and dtypes.

    table = spelled({**numpy_stand_ins(), '_codecs.encode': Guarded(encode_latin1), ...})
    data = plain(unpickle(stream, ALLOW_LIST, table))

Used by the body-model pickles (`lib/models/safe_pickle.py`: numeric arrays only), the joblib databases
(`lib/data/db.py`: also string and object arrays) and the skeleton_2_beta file (its one object array).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, NoReturn

import numpy as np

from lib.io.safe_io import UnsafeFileError

__all__ = [
    "refuse",
    "Frozen",
    "Marker",
    "Guarded",
    "Stub",
    "NDARRAY",
    "DtypeStub",
    "ArrayStub",
    "numpy_stand_ins",
    "encode_latin1",
    "plain",
]

# numpy dtype kinds an array may have: bool, signed int, unsigned int, float.
NUMERIC_KINDS = "biuf"
# Containers nested deeper than this (or cyclic) are refused instead of recursing without end.
MAX_DEPTH = 32


def refuse(message: str) -> NoReturn:
    raise UnsafeFileError(message)


class Frozen:
    """Base of the objects `find_class` hands out: BUILD on them is refused, so a file cannot set attributes on
    module-level objects and change how later files are read."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        refuse(f"BUILD applied to {self!r}")


class Marker(Frozen):
    """Stands for a global that may only be passed as an argument (a type), never called or instantiated."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<marker {self.name}>"


class Guarded(Frozen):
    """An allowed callable (a checking function)."""

    __slots__ = ("function",)

    def __init__(self, function):
        self.function = function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<allowed {getattr(self.function, '__name__', self.function)!r}>"


class Stub:
    """An object under construction (created by a stand-in, perhaps filled by BUILD); `value()` is the result."""

    def value(self) -> Any:
        raise NotImplementedError


NDARRAY = Marker("numpy.ndarray")


# ---------------------------------------------------------------------------------------------------------------
# numpy: dtypes and arrays
# ---------------------------------------------------------------------------------------------------------------


def _check_dtype(dtype: np.dtype, kinds: str, object_arrays: bool) -> np.dtype:
    if dtype.kind == "O" and object_arrays:
        return dtype
    if dtype.hasobject or dtype.kind == "O":
        refuse(f"object-dtype arrays are refused (dtype {dtype})")
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in kinds:
        refuse(
            f"only arrays of dtype kinds {kinds!r} (b bool, i int, u uint, f float, c complex, S bytes, "
            f"U str) are accepted, not dtype {dtype}"
        )
    return dtype


class DtypeStub(Stub):
    """Result of `numpy.dtype(spec, align, copy)`; BUILD may then set the byte order, nothing else."""

    def __init__(self, dtype: np.dtype, kinds: str, object_arrays: bool):
        self.dtype, self.kinds, self.object_arrays = dtype, kinds, object_arrays

    def __setstate__(self, state: Any) -> None:
        # numpy writes (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata]).
        if not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4):
            refuse(f"unexpected dtype state {state!r:.80}")
        byteorder = state[1]
        if byteorder not in ("<", ">", "|", "="):
            refuse(f"unexpected dtype byte order {byteorder!r:.20}")
        if any(item is not None for item in state[2:5]) or (len(state) == 9 and state[8] is not None):
            refuse("structured / sub-array dtypes (and dtype metadata) are refused")
        if byteorder in ("<", ">"):
            self.dtype = self.dtype.newbyteorder(byteorder)

    def value(self) -> np.dtype:
        return _check_dtype(self.dtype, self.kinds, self.object_arrays)


def _make_dtype(spec: Any, align: Any = False, copy: Any = True, *, kinds: str, object_arrays: bool) -> DtypeStub:
    if not isinstance(spec, str) or len(spec) > 8:
        refuse(f'numpy.dtype called with {spec!r:.40}; only short type strings such as "f8" are accepted')
    try:
        dtype = np.dtype(spec)
    except TypeError as error:
        refuse(f"invalid dtype {spec!r}: {error}")
    return DtypeStub(_check_dtype(dtype, kinds, object_arrays), kinds, object_arrays)


def _resolve_dtype(dtype: Any) -> np.dtype:
    if not isinstance(dtype, DtypeStub):
        refuse(f"an array needs a dtype built by numpy.dtype, got {type(dtype).__name__}")
    return dtype.value()


def _as_bytes(data: Any) -> bytes:
    """Raw array data: bytes, or a str from a Python 2 pickle loaded with encoding='latin1'."""
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, str):
        return data.encode("latin1")
    if isinstance(data, list):
        refuse("object-dtype arrays are refused (array data stored as a list of objects)")
    refuse(f"array data must be bytes, not {type(data).__name__}")


def _check_shape(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        refuse(f"invalid array shape {shape!r:.60}")
    return shape


def _array_from_data(data: Any, dtype: Any, shape: Any, fortran: bool) -> np.ndarray:
    """A fresh, writable array: from raw bytes whose count must match the shape exactly, or (object dtype, where
    allowed) from the list of its already unpickled items."""
    dtype, shape = _resolve_dtype(dtype), _check_shape(shape)
    count = math.prod(shape)
    if dtype.kind == "O":
        if not isinstance(data, list) or len(data) != count:
            refuse(f"an object array of shape {shape} needs a list of {count} items")
        flat = np.empty(count, dtype=object)
        for index, item in enumerate(data):  # item by item: numpy would unpack nested lists
            flat[index] = item
    else:
        raw = _as_bytes(data)
        if len(raw) != count * dtype.itemsize:
            refuse(f"array data has {len(raw)} bytes, shape {shape} of {dtype} needs {count * dtype.itemsize}")
        flat = np.frombuffer(raw, dtype=dtype, count=count)
    return flat.reshape(shape, order="F" if fortran else "C").copy()


class ArrayStub(Stub):
    """An ndarray under construction: `_reconstruct` makes it empty, BUILD fills it (once)."""

    def __init__(self, array: np.ndarray | None = None):
        self.array = array

    def __setstate__(self, state: Any) -> None:
        if self.array is not None:
            refuse("BUILD applied to an array that is already complete")
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            refuse(f"unexpected ndarray state of type {type(state).__name__}")
        shape, dtype, fortran, data = state[-4:]  # (version,) shape, dtype, is_fortran, rawdata
        self.array = _array_from_data(data, dtype, shape, bool(fortran))

    def value(self) -> np.ndarray:
        if self.array is None:
            refuse("an ndarray was created but never filled")
        return self.array


def _reconstruct(subtype: Any, shape: Any = (0,), typecode: Any = b"b") -> ArrayStub:
    """numpy's `_reconstruct(ndarray, (0,), b'b')`; the real dtype and data arrive with BUILD."""
    if subtype is not NDARRAY:
        refuse(f"ndarray subclasses and other types are refused in _reconstruct (got {subtype!r:.60})")
    return ArrayStub()


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> ArrayStub:
    """numpy's protocol-5 `_frombuffer(buffer, dtype, shape, order)` (raw bytes only, never objects)."""
    if order not in ("C", "F"):
        refuse(f"invalid array order {order!r:.10}")
    return ArrayStub(_array_from_data(_as_bytes(buffer), dtype, shape, order == "F"))


def _scalar(dtype: Any, data: Any) -> ArrayStub:
    """numpy's `scalar(dtype, bytes)` for numpy scalars; kept as a 0-d array."""
    return ArrayStub(_array_from_data(_as_bytes(data), dtype, (), False))


def numpy_stand_ins(kinds: str = NUMERIC_KINDS, object_arrays: bool = False) -> dict[str, Any]:
    """'module.name' (current spelling) -> stand-in for numpy's array and dtype globals. Arrays may have the dtype
    `kinds` (numpy's kind letters); `object_arrays` also accepts object-dtype arrays built by `_reconstruct` (their
    items go through the same allow-list)."""
    return {
        "numpy.ndarray": NDARRAY,
        "numpy.dtype": Guarded(partial(_make_dtype, kinds=kinds, object_arrays=object_arrays)),
        "numpy._core.multiarray._reconstruct": Guarded(_reconstruct),
        "numpy._core.multiarray.scalar": Guarded(_scalar),
        "numpy._core.numeric._frombuffer": Guarded(_frombuffer),
    }


def encode_latin1(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    """`_codecs.encode(text, 'latin1')`: how Python 3 spells bytes in protocols <= 2."""
    if encoding not in ("latin1", "latin-1") or errors != "strict":
        refuse(f"_codecs.encode is accepted with the latin1 codec only, not {encoding!r:.30}")
    if not isinstance(text, str):
        refuse(f"_codecs.encode expects a str, got {type(text).__name__}")
    return text.encode("latin1")


def plain(value: Any, depth: int = 0) -> Any:
    """Replaces the stand-ins by their values in dicts / lists / tuples / object arrays; other values pass."""
    if depth > MAX_DEPTH:
        refuse(f"containers nested deeper than {MAX_DEPTH} levels (or cyclic) are refused")
    if isinstance(value, Stub):
        value = value.value()
    if isinstance(value, Marker):
        refuse(f"{value.name} may only appear as an argument")
    if isinstance(value, dict):
        return {plain(k, depth + 1): plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v, depth + 1) for v in value)
    if isinstance(value, np.ndarray) and value.dtype.kind == "O":
        out = np.empty(value.shape, dtype=object)
        for index, item in np.ndenumerate(value):
            out[index] = plain(item, depth + 1)
        return out
    return value  # str, bytes, int, float, bool, None, set, numeric arrays, tensors
