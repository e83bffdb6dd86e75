"""Reading files without running code from them, writing files atomically, digests of files: once for the project.

Every pickle-based format the project reads (published SMPL `.pkl` body models, joblib `.pt` databases, the
`skeleton_2_beta` `.npz`, torch checkpoints) names the globals it needs by (module, name). A plain `pickle.load`
imports and calls whatever a file names, so each format has an allow-list here, as data, and a loader that resolves
only those names, each to a stand-in (a checking function, a class filled by BUILD; the numpy ones shared in
`lib/io/stand_ins.py`, format-specific ones such as chumpy's Ch beside their format):

    BODY_MODEL_PICKLE   lib/models/safe_pickle.py    numpy arrays, scipy sparse matrices, chumpy Ch
    JOBLIB_DATABASE     lib/data/db.py               joblib array wrappers, numpy arrays, builtin containers
    SKELETON_2_BETA     lib/models/skeleton_2_beta.py one object array holding a dict of arrays / torch tensors
    CHECKPOINT_GLOBALS  lib/models/checkpoint.py     numpy scalars / arrays on top of torch's weights_only set

    table = spelled({'numpy.dtype': make_dtype, ...})        # the format's stand-ins, keyed like its allow-list
    with reading(str(path), 'body-model pickle'):            # errors name the file
        data = unpickle(stream, BODY_MODEL_PICKLE, table)

Pickles name numpy's reconstructors under `numpy.core` (numpy 1) or `numpy._core` (numpy 2) and Python 2 pickles
spell `builtins` / `copyreg` as `__builtin__` / `copy_reg`; an allow-list is written with the current spelling and
`allow_list` adds the others. Anything else is refused with `UnsafeFileError` naming the file and the global,
before it is called; so are dotted names (`numpy.dtype.__class__`) and persistent ids.

    with atomic_write(path) as f:            # bytes; atomic_write(path, 'w') for text
        torch.save(state, f)                 # or np.savez(f, ...), joblib.dump(obj, f), f.write(data)
    file_digest(path)                        # 'a94a8fe5ccb1': sha1 prefix, read in chunks
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import lzma
import os
import pickle
import uuid
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

__all__ = [
    "UnsafeFileError",
    "AllowList",
    "allow_list",
    "BODY_MODEL_PICKLE",
    "JOBLIB_DATABASE",
    "SKELETON_2_BETA",
    "CHECKPOINT_GLOBALS",
    "spelled",
    "AllowListUnpickling",
    "unpickle",
    "reading",
    "torch_safe_globals",
    "atomic_write",
    "file_digest",
]


class UnsafeFileError(ValueError):
    """A file asks for something outside its format's allow-list (loading it plainly would run code), or is
    malformed in a way its loader refuses."""


# ---------------------------------------------------------------------------------------------------------------
# Allow-lists (data)
# ---------------------------------------------------------------------------------------------------------------

# Current module spelling -> the other spellings the same global has in files written elsewhere.
_OTHER_SPELLINGS = {
    "numpy._core": ("numpy.core",),  # numpy 1 pickles
    "builtins": ("__builtin__",),  # Python 2 pickles
    "copyreg": ("copy_reg",),
}


def _spellings(module: str) -> tuple[str, ...]:
    for current, others in _OTHER_SPELLINGS.items():
        if module == current or module.startswith(current + "."):
            return (module,) + tuple(other + module[len(current) :] for other in others)
    return (module,)


@dataclass(frozen=True)
class AllowList:
    """The globals a file format may name, as (module, name) pairs in every spelling, and what such files hold."""

    holds: str
    names: frozenset[tuple[str, str]]


def spelled(by_name: Mapping[str, Any]) -> dict[tuple[str, str], Any]:
    """{'module.name': value} in the current spelling (numpy 2, Python 3) -> {(module, name): value} with the
    numpy 1 and Python 2 spellings of each module added."""
    out = {}
    for dotted, value in by_name.items():
        module, name = dotted.rsplit(".", 1)
        out.update(((spelling, name), value) for spelling in _spellings(module))
    return out


def allow_list(holds: str, *globals_: str) -> AllowList:
    """`AllowList` from 'module.name' strings in the current spelling, other spellings added (see `spelled`)."""
    return AllowList(holds, frozenset(spelled(dict.fromkeys(globals_))))


BODY_MODEL_PICKLE = allow_list(
    "body-model pickles (numpy arrays, scipy sparse matrices, chumpy Ch)",
    "builtins.set",
    "builtins.object",
    "builtins.bytes",
    "_codecs.encode",
    "copyreg._reconstructor",
    "chumpy.ch.Ch",
    "numpy.ndarray",
    "numpy.dtype",
    "numpy._core.multiarray._reconstruct",
    "numpy._core.multiarray.scalar",
    "numpy._core.numeric._frombuffer",
    "scipy.sparse._csc.csc_matrix",
    "scipy.sparse._csr.csr_matrix",
    "scipy.sparse.csc.csc_matrix",
    "scipy.sparse.csr.csr_matrix",
)  # scipy < 1.8 module paths

# Builtin types a database may hold (its containers and scalars); nothing callable beyond their constructors.
BUILTIN_DATA_TYPES = ("dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float",
                      "complex", "bool")  # fmt: skip

JOBLIB_DATABASE = allow_list(
    "a database (numpy arrays, dtypes and scalars, builtin containers)",
    "joblib.numpy_pickle.NumpyArrayWrapper",
    "numpy.ndarray",
    "numpy.memmap",
    "numpy.matrix",
    "numpy.dtype",
    "collections.OrderedDict",
    "_codecs.encode",
    "numpy._core.multiarray._reconstruct",
    "numpy._core.multiarray.scalar",
    "numpy._core.numeric._frombuffer",
    *(f"builtins.{name}" for name in BUILTIN_DATA_TYPES),
)

SKELETON_2_BETA = allow_list(
    "skeleton_2_beta files (one object array holding a dict of numeric arrays and torch tensors)",
    "numpy._core.multiarray._reconstruct",
    "numpy.ndarray",
    "numpy.dtype",
    "torch._utils._rebuild_tensor_v2",
    "torch.storage._load_from_bytes",
    "collections.OrderedDict",
)

# numpy dtype classes a checkpoint may hold values of (numpy >= 1.25 BUILDs a dtype through its class): numeric only.
_NUMERIC_DTYPE_CLASSES = (
    "Bool",
    "Int8",
    "Byte",
    "UInt8",
    "UByte",
    "Int16",
    "Short",
    "UInt16",
    "UShort",
    "Int32",
    "Int",
    "UInt32",
    "UInt",
    "Int64",
    "Long",
    "UInt64",
    "ULong",
    "LongLong",
    "ULongLong",
    "Float16",
    "Float32",
    "Float64",
    "LongDouble",
    "Complex64",
    "Complex128",
    "CLongDouble",
)

CHECKPOINT_GLOBALS = allow_list(
    "checkpoints (tensors, numbers, strings, containers, numpy scalars and arrays)",
    "numpy.dtype",
    "numpy.ndarray",
    "numpy._core.multiarray.scalar",
    "numpy._core.multiarray._reconstruct",
    *(f"numpy.dtypes.{name}DType" for name in _NUMERIC_DTYPE_CLASSES),
)


# ---------------------------------------------------------------------------------------------------------------
# The restricted unpickler
# ---------------------------------------------------------------------------------------------------------------


class AllowListUnpickling:
    """Mixin for any `pickle.Unpickler` subclass (the C one, `pickle._Unpickler`, joblib's `NumpyUnpickler`):
    `find_class` hands out the stand-in of an allow-listed global and refuses everything else; persistent ids are
    refused; pure-Python unpicklers call `refuse_build_on_a_class` in BUILD. Call `use_allow_list` before `load`."""

    def use_allow_list(self, allowed: AllowList, stand_ins: Mapping[tuple[str, str], Any]) -> None:
        if set(stand_ins) != allowed.names:  # a programming error, never a file's: say which names disagree
            raise RuntimeError(
                f"stand-ins and allow-list of {allowed.holds} disagree on {sorted(set(stand_ins) ^ allowed.names)}"
            )
        self._allowed, self._stand_ins = allowed, stand_ins

    def find_class(self, module: str, name: str) -> Any:
        if "." in name:
            raise UnsafeFileError(
                f"refused dotted global {module}.{name}: attribute paths through a module are not followed"
            )
        if (module, name) not in self._allowed.names:
            raise UnsafeFileError(
                f"refused global {module}.{name}: not on the allow-list of {self._allowed.holds}; "
                "a plain pickle / joblib / numpy / torch load of this file could run code from it"
            )
        return self._stand_ins[module, name]

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeFileError(f"refused persistent id {pid!r:.40}: {self._allowed.holds} do not use them")

    def refuse_build_on_a_class(self) -> None:
        """For pure-Python unpicklers, before BUILD: a class handed out by `find_class` (e.g. joblib's array wrapper)
        must not get attributes set, which would change how this and later files are read."""
        if isinstance(self.stack[-2], type):
            raise UnsafeFileError(f"refused BUILD on the class {self.stack[-2].__qualname__}")


class _Unpickler(AllowListUnpickling, pickle.Unpickler):
    pass


class _PythonUnpickler(AllowListUnpickling, pickle._Unpickler):
    """The pure-Python unpickler: it reads no further than the pickle ends (a stream shared with other readers)."""

    dispatch = pickle._Unpickler.dispatch.copy()

    def load_build(self) -> None:
        self.refuse_build_on_a_class()
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build


# Errors an unpickler raises on malformed input (truncated stream, wrong argument types to a stand-in, a corrupt
# compressed stream, ...).
_MALFORMED = (
    pickle.UnpicklingError,
    EOFError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    ValueError,
    OverflowError,
    UnicodeError,
    RecursionError,
    OSError,
    zlib.error,
    lzma.LZMAError,
)


@contextlib.contextmanager
def reading(source: str, what: str, malformed: type[ValueError] = UnsafeFileError) -> Iterator[None]:
    """Errors while reading `source` become one error naming it: `UnsafeFileError` for a refusal, `malformed`
    ('not a readable <what>') for a file the unpickler or a stand-in cannot make sense of."""
    try:
        yield
    except UnsafeFileError as error:
        raise UnsafeFileError(f"{source}: {error}") from None
    except _MALFORMED as error:
        raise malformed(f"{source}: not a readable {what} ({type(error).__name__}: {error})") from None


def unpickle(
    file: IO[bytes],
    allowed: AllowList,
    stand_ins: Mapping[tuple[str, str], Any],
    *,
    encoding: str = "ASCII",
    shared_stream: bool = False,
) -> Any:
    """One pickle from `file`, resolving only `allowed` globals (to `stand_ins[module, name]`).

    `encoding='latin1'` reads Python 2 byte strings; `shared_stream` uses the pure-Python unpickler, which leaves
    `file` just after the pickle. Raises UnsafeFileError for anything refused (wrap the call in `reading` to name
    the file).
    """
    unpickler = (_PythonUnpickler if shared_stream else _Unpickler)(file, encoding=encoding)
    unpickler.use_allow_list(allowed, stand_ins)
    return unpickler.load()


def _import_global(module: str, name: str) -> Any:
    """The object `module.name`, importing `numpy.core.*` through the installed numpy's spelling; None if absent."""
    import numpy as np

    installed = "numpy._core" if hasattr(np, "_core") else "numpy.core"
    for spelling in ("numpy._core", "numpy.core"):
        if module == spelling or module.startswith(spelling + "."):
            module = installed + module[len(spelling) :]
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def torch_safe_globals(allowed: AllowList = CHECKPOINT_GLOBALS) -> list[tuple[Any, str]]:
    """(object, 'module.name') pairs for `torch.serialization.safe_globals`, one per allow-listed name that exists
    in the installed numpy (a name that does not is simply not allowed)."""
    found = ((_import_global(module, name), f"{module}.{name}") for module, name in sorted(allowed.names))
    return [(obj, dotted) for obj, dotted in found if obj is not None]


# ---------------------------------------------------------------------------------------------------------------
# Writing and digests
# ---------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """An open temp file beside `path` that replaces `path` when the block ends without error.

    A reader (or a crash) sees the old file or the complete new one, never a partial write: the data is written to
    a new file in the same directory (so the rename stays on one filesystem), flushed and fsynced, then
    `os.replace`d over `path`. On an error the temp file is removed and `path` is untouched. The parent directory
    is created. `mode` is 'wb' (bytes; also for writers given a file: torch.save, np.savez, joblib.dump) or 'w'
    (text, `encoding` defaulting to utf-8). The temp file is created with mode 'x' (never reusing a name) and the
    usual permissions (umask), unlike tempfile.mkstemp's 0600.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    # opened before the try: if this fails, the name (perhaps another writer's) is not ours to remove
    handle = open(tmp, mode.replace("w", "x"), encoding=(encoding or "utf-8") if mode == "w" else None)  # noqa: SIM115
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_digest(path: str | os.PathLike, length: int = 12) -> str:
    """The first `length` hex digits of the file's sha1, read in 4 MiB chunks (a content key, not a signature)."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]
