"""Files are read without running code from them: every allow-list pinned, every loader fed code-running payloads.

Body-model `.pkl` (allow-listed unpickling) and `.npz` (allow_pickle=False), joblib databases, skeleton_2_beta
`.npz`, torch checkpoints; plus the shared atomic writer and file digest of `lib.io.safe_io`.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import hashlib
import importlib
import io
import os
import pickle
import struct
import subprocess
import sys
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np
import pytest
import scipy.sparse
import torch
from numpy.lib import format as npy_format

with warnings.catch_warnings():  # chumpy imports a deprecated scipy path
    warnings.simplefilter("ignore", DeprecationWarning)
    import chumpy

from lib.data.db import load_db
from lib.io import safe_io
from lib.models.body_model import load_body_model_data
from lib.models.checkpoint import load_checkpoint
from lib.models.safe_pickle import UnsafePickleError, loads_pickle
from lib.models.skeleton_2_beta import load_skeleton_2_beta

REPO = Path(__file__).resolve().parents[1]


def published_style_data(seed: int = 0) -> tuple[dict, dict]:
    """(what a published SMPL pickle holds: chumpy Ch, scipy csc, strings; the plain arrays it should load as)."""
    rng = np.random.default_rng(seed)
    regressor = rng.uniform(size=(24, 40)) * (rng.uniform(size=(24, 40)) < 0.2)
    plain = {
        "v_template": rng.normal(size=(40, 3)),
        "shapedirs": rng.normal(size=(40, 3, 10)),
        "posedirs": rng.normal(size=(40, 3, 207)),
        "J_regressor": regressor,
        "weights": rng.uniform(size=(40, 24)),
        "kintree_table": np.array([[2**32 - 1] + list(range(23)), list(range(24))], dtype=np.int64),
        "f": rng.integers(0, 40, size=(30, 3)).astype(np.uint32),
        "J": rng.normal(size=(24, 3)),
    }
    published = dict(plain, bs_type="lrotmin", bs_style="lbs", pose_training_info={"lambda": 1.0})
    for key in ("v_template", "shapedirs", "posedirs", "J"):
        published[key] = chumpy.array(plain[key])
    published["J_regressor"] = scipy.sparse.csc_matrix(regressor)
    return published, plain


def write(path: Path, payload: bytes) -> Path:
    path.write_bytes(payload)
    return path


def assert_refused(path: Path, *fragments: str) -> str:
    """Loading `path` raises a ValueError that names the file and contains each fragment."""
    with pytest.raises(ValueError) as error:
        load_body_model_data(path)
    message = str(error.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# ---------------------------------------------------------------------------------------------------------------
# Benign files
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [0, 1, 2, 5])
def test_published_style_pickle_loads_as_plain_arrays(tmp_path, protocol):
    published, plain = published_style_data()
    path = write(tmp_path / "SMPL_NEUTRAL.pkl", pickle.dumps(published, protocol=protocol))
    loaded = load_body_model_data(path)
    assert set(loaded) == set(plain)  # strings and the nested dict are dropped
    for key, expected in plain.items():
        assert type(loaded[key]) is np.ndarray and loaded[key].dtype == expected.dtype, key
        np.testing.assert_array_equal(loaded[key], expected, err_msg=key)


def test_csr_matrix_and_old_scipy_path_load():
    dense = np.array([[0.0, 1.5, 0.0], [2.0, 0.0, 3.0]])
    payload = pickle.dumps({"J_regressor": scipy.sparse.csr_matrix(dense)}, protocol=2)
    np.testing.assert_array_equal(loads_pickle(payload)["J_regressor"], dense)
    old_path = pickle.dumps({"J_regressor": scipy.sparse.csc_matrix(dense)}, protocol=2).replace(
        b"scipy.sparse._csc\n", b"scipy.sparse.csc\n"
    )
    np.testing.assert_array_equal(loads_pickle(old_path)["J_regressor"], dense)


class _Python2Pickle:
    """Writes protocol-2 pickles the way Python 2 with numpy 1 / chumpy / old scipy did (byte strings as str)."""

    def __init__(self):
        self.out = bytearray(pickle.PROTO + b"\x02")

    def op(self, *chunks: bytes) -> _Python2Pickle:
        for chunk in chunks:
            self.out += chunk
        return self

    def glob(self, module: str, name: str):
        return self.op(pickle.GLOBAL, f"{module}\n{name}\n".encode())

    def string(self, text: bytes):
        return self.op(pickle.BINSTRING, struct.pack("<i", len(text)), text)

    def int(self, value: int):
        return self.op(pickle.BININT, struct.pack("<i", value))

    def tuple(self, values):
        self.op(pickle.MARK)
        for value in values:
            self.int(value)
        return self.op(pickle.TUPLE)

    def array(self, array: np.ndarray):
        self.glob("numpy.core.multiarray", "_reconstruct").glob("numpy", "ndarray").tuple((0,)).string(b"b")
        self.op(pickle.TUPLE3, pickle.REDUCE, pickle.MARK).int(1).tuple(array.shape)
        self.glob("numpy", "dtype").string(array.dtype.str[1:].encode()).int(0).int(1).op(pickle.TUPLE3, pickle.REDUCE)
        self.op(pickle.MARK).int(3).string(array.dtype.str[:1].encode()).op(pickle.NONE * 3).int(-1).int(-1).int(0)
        self.op(pickle.TUPLE, pickle.BUILD, pickle.NEWFALSE).string(array.tobytes())
        return self.op(pickle.TUPLE, pickle.BUILD)

    def state_object(self, module: str, name: str, items: dict):
        """NEWOBJ of module.name, then BUILD with a dict whose values are arrays, ints or a (rows, cols) tuple."""
        self.glob(module, name).op(pickle.EMPTY_TUPLE, pickle.NEWOBJ, pickle.EMPTY_DICT, pickle.MARK)
        for key, value in items.items():
            self.string(key.encode())
            if isinstance(value, np.ndarray):
                self.array(value)
            elif isinstance(value, tuple):
                self.tuple(value)
            elif value == "set":
                self.glob("__builtin__", "set").op(pickle.EMPTY_LIST).string(b"x").op(
                    pickle.APPEND, pickle.TUPLE1, pickle.REDUCE
                )
            else:
                self.int(value)
        return self.op(pickle.SETITEMS, pickle.BUILD)

    def dict(self, entries: dict) -> bytes:
        self.op(pickle.EMPTY_DICT, pickle.MARK)
        for key, write_value in entries.items():
            self.string(key.encode())
            write_value(self)
        return bytes(self.op(pickle.SETITEMS, pickle.STOP).out)


def test_python2_numpy1_pickle_loads(tmp_path):
    """Python 2 wrote raw array bytes as str: loaded with latin1 they must round-trip exactly."""
    rng = np.random.default_rng(1)
    v_template = rng.normal(size=(5, 3))
    faces = np.array([[0, 1, 2], [2, 3, 4]], dtype=np.uint32)
    regressor = np.array([[0.0, 0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0]])
    sparse = scipy.sparse.csc_matrix(regressor)
    payload = _Python2Pickle().dict(
        {
            "v_template": lambda w: w.state_object("chumpy.ch", "Ch", {"_dirty_vars": "set", "x": v_template}),
            "f": lambda w: w.array(faces),
            "J_regressor": lambda w: w.state_object(
                "scipy.sparse.csc",
                "csc_matrix",
                {
                    "data": sparse.data,
                    "indices": sparse.indices,
                    "indptr": sparse.indptr,
                    "_shape": (2, 5),
                    "maxprint": 50,
                },
            ),
        }
    )
    loaded = load_body_model_data(write(tmp_path / "basicModel_neutral.pkl", payload))
    np.testing.assert_array_equal(loaded["v_template"], v_template)
    np.testing.assert_array_equal(loaded["f"], faces)
    assert loaded["f"].dtype == np.uint32
    np.testing.assert_array_equal(loaded["J_regressor"], regressor)


def test_loader_imports_neither_chumpy_nor_scipy(tmp_path):
    published, plain = published_style_data()
    path = write(tmp_path / "SMPL_NEUTRAL.pkl", pickle.dumps(published, protocol=2))
    code = (
        "import sys; sys.modules['chumpy'] = sys.modules['scipy'] = None; "  # importing either now fails
        "from lib.models.safe_pickle import load_pickle; import numpy as np; "
        f"data = load_pickle({str(path)!r}); "
        "assert type(data['v_template']) is np.ndarray and type(data['J_regressor']) is np.ndarray; "
        "print(sorted(data['J_regressor'].shape))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[24, 40]"


def test_npz_loads_without_pickles(tmp_path):
    _, plain = published_style_data()
    np.savez(tmp_path / "model.npz", **plain, bs_type=np.array("lrotmin"))
    loaded = load_body_model_data(tmp_path / "model.npz")
    assert set(loaded) == set(plain)
    for key, expected in plain.items():
        np.testing.assert_array_equal(loaded[key], expected)


# ---------------------------------------------------------------------------------------------------------------
# Code in the file never runs
# ---------------------------------------------------------------------------------------------------------------


class _System:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Open:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("payload_class, refused", [(_System, "posix.system"), (_Open, ".open")])
@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_malicious_reduce_does_not_run(tmp_path, payload_class, refused, protocol):
    marker = tmp_path / "pwned"
    data = {"v_template": np.zeros((3, 3)), "shapedirs": payload_class(marker)}
    path = write(tmp_path / "SMPL_NEUTRAL.pkl", pickle.dumps(data, protocol=protocol))
    assert_refused(path, refused, "refused global")
    assert not marker.exists()


class _Call:
    """Pickles as a call of `function(*args)`; callable itself, so a `_Call` can be the function of another."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args

    def __call__(self, *args):  # only so that pickle accepts it as the callable of an outer _Call
        raise AssertionError("never called in the test process")


@pytest.mark.parametrize(
    "function, args, refused",
    [
        (getattr, ("text", "upper"), "builtins.getattr"),
        (pickle.loads, (b"N.",), "_pickle.loads"),
        (torch.load, ("model.pt",), "torch.serialization.load"),
        (np.testing._private.utils.runstring, ("import os", {}), "numpy.testing._private.utils.runstring"),
        (np.testing.assert_equal, (1, 1), "numpy.testing._private.utils.assert_equal"),
        (np.load, ("model.npy",), "numpy.load"),
        (scipy.sparse.coo_matrix, ((2, 2),), "scipy.sparse._coo.coo_matrix"),
    ],
)
def test_globals_outside_the_allow_list_are_refused(tmp_path, function, args, refused):
    path = write(tmp_path / "model.pkl", pickle.dumps({"v_template": _Call(function, *args)}, protocol=4))
    assert_refused(path, f"refused global {refused}")


def test_other_chumpy_classes_are_refused(tmp_path):
    expression = chumpy.array(np.ones(3)) + 1.0  # a chumpy.ch_ops node, not a plain Ch
    path = write(tmp_path / "model.pkl", pickle.dumps({"v_template": expression}, protocol=2))
    assert_refused(path, "refused global chumpy.ch_ops.")


@pytest.mark.parametrize(
    "payload",
    [
        # protocol 4: STACK_GLOBAL resolves dotted names attribute by attribute in the standard unpickler
        pickle.PROTO
        + b"\x04"
        + pickle.SHORT_BINUNICODE
        + b"\x15numpy.core.multiarray"
        + pickle.SHORT_BINUNICODE
        + b"\x18_reconstruct.__globals__"
        + pickle.STACK_GLOBAL
        + pickle.STOP,
        pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct.__globals__\n" + pickle.STOP,
    ],
    ids=["protocol4", "protocol0"],
)
def test_dotted_names_through_an_allowed_module_are_refused(tmp_path, payload):
    path = write(tmp_path / "model.pkl", payload)
    assert_refused(path, "numpy.core.multiarray._reconstruct.__globals__", "dotted")


@pytest.mark.parametrize("protocol", [2, 5])
def test_object_dtype_arrays_are_refused(tmp_path, protocol):
    objects = np.array([1, "text", None], dtype=object)
    path = write(tmp_path / "model.pkl", pickle.dumps({"v_template": objects}, protocol=protocol))
    assert_refused(path, "object-dtype")


def test_structured_dtype_arrays_are_refused(tmp_path):
    records = np.zeros(2, dtype=[("a", "f8"), ("b", "i4")])
    path = write(tmp_path / "model.pkl", pickle.dumps({"v_template": records}, protocol=2))
    assert_refused(path)


class _SubArray(np.ndarray):
    pass


class _ReconstructWithCh:
    """numpy's array reconstruction asked to build a non-ndarray type that is itself allowed."""

    def __reduce__(self):
        return np._core.multiarray._reconstruct, (chumpy.ch.Ch, (0,), b"b")


@pytest.mark.parametrize(
    "payload, refused",
    [
        (np.matrix(np.eye(2)), "refused global numpy.matrix"),
        (np.ma.masked_array(np.ones(3)), "refused global numpy.ma.core"),
        (np.zeros(3).view(_SubArray), "refused global test_safe_loading._SubArray"),
        (_ReconstructWithCh(), "ndarray subclasses"),
    ],
)
def test_ndarray_subclasses_are_refused(tmp_path, payload, refused):
    path = write(tmp_path / "model.pkl", pickle.dumps({"v_template": payload}, protocol=2))
    assert_refused(path, refused)


def test_persistent_ids_are_refused(tmp_path):
    class WithPersistentIds(pickle.Pickler):
        def persistent_id(self, obj):
            return "outside-object" if isinstance(obj, str) and obj == "external" else None

    stream = io.BytesIO()
    WithPersistentIds(stream, protocol=2).dump({"v_template": "external"})
    path = write(tmp_path / "model.pkl", stream.getvalue())
    assert_refused(path, "persistent id")


@pytest.mark.parametrize("codec", ["rot13", "utf-8", "hex"])
def test_codecs_encode_other_than_latin1_is_refused(tmp_path, codec):
    payload = _Call(codecs.encode, "abc" if codec != "hex" else b"abc", codec)
    path = write(tmp_path / "model.pkl", pickle.dumps({"v_template": payload}, protocol=2))
    assert_refused(path, "latin1 codec only")


def _ch_with_state(x) -> chumpy.Ch:
    ch = chumpy.Ch(np.zeros(3))
    ch.__dict__["x"] = x
    return ch


@pytest.mark.parametrize("x", ["not an array", [1.0, 2.0], 3.5, None], ids=["str", "list", "float", "none"])
def test_ch_with_non_numeric_state_is_refused(tmp_path, x):
    path = write(tmp_path / "model.pkl", pickle.dumps({"v_template": _ch_with_state(x)}, protocol=2))
    assert_refused(path, 'chumpy.ch.Ch state "x" must be a numeric numpy array')


def test_ch_with_nested_ch_or_without_x_is_refused(tmp_path):
    nested = _ch_with_state(chumpy.array(np.ones(3)))
    path = write(tmp_path / "model.pkl", pickle.dumps({"v_template": nested}, protocol=2))
    assert_refused(path, "must be a numeric numpy array")
    empty = chumpy.Ch(np.zeros(3))
    del empty.__dict__["x"]
    path = write(tmp_path / "model.pkl", pickle.dumps({"v_template": empty}, protocol=2))
    assert_refused(path, 'no "x" array')


def test_build_cannot_change_allowed_globals(tmp_path):
    """BUILD on a handed-out global (marker, checking function, stand-in class) is refused, not applied."""
    attacks = [
        pickle.GLOBAL + b"numpy\nndarray\n" + pickle.EMPTY_DICT + pickle.BUILD + pickle.STOP,
        pickle.GLOBAL + b"_codecs\nencode\n" + pickle.EMPTY_DICT + pickle.BUILD + pickle.STOP,
        # (None, {'_array_from_state': ...}) is a slot-state BUILD: setattr on the Ch stand-in class itself
        pickle.GLOBAL
        + b"chumpy.ch\nCh\n"
        + pickle.MARK
        + pickle.NONE
        + pickle.EMPTY_DICT
        + pickle.TUPLE
        + pickle.BUILD
        + pickle.STOP,
    ]
    for index, payload in enumerate(attacks):
        assert_refused(write(tmp_path / f"attack{index}.pkl", payload))
    published, plain = published_style_data()  # later files still load normally
    loaded = load_body_model_data(write(tmp_path / "ok.pkl", pickle.dumps(published, protocol=2)))
    np.testing.assert_array_equal(loaded["J_regressor"], plain["J_regressor"])


def test_array_data_must_match_its_shape(tmp_path):
    payload = pickle.dumps({"v_template": np.zeros((4, 3))}, protocol=2)
    # shape (4, 3) -> (9, 3): the data no longer covers the array (would read past the buffer)
    tampered = payload.replace(
        pickle.BININT1 + b"\x04" + pickle.BININT1 + b"\x03", pickle.BININT1 + b"\x09" + pickle.BININT1 + b"\x03", 1
    )
    assert tampered != payload
    assert_refused(write(tmp_path / "model.pkl", tampered), "bytes")


def test_inconsistent_sparse_matrix_is_refused(tmp_path):
    sparse = scipy.sparse.csc_matrix(np.eye(3))
    sparse.indices = np.array([0, 1, 7], dtype=np.int32)  # row 7 of a 3-row matrix
    path = write(tmp_path / "model.pkl", pickle.dumps({"J_regressor": sparse}, protocol=2))
    assert_refused(path, "inconsistent")


def test_garbage_and_non_dict_pickles_are_value_errors(tmp_path):
    assert_refused(write(tmp_path / "garbage.pkl", b"\x80\x02not a pickle at all"))
    assert_refused(write(tmp_path / "list.pkl", pickle.dumps([1, 2, 3], protocol=2)), "holds a dict")
    with pytest.raises(UnsafePickleError):
        loads_pickle(pickle.dumps(_Call(os.system, "true"), protocol=2))


# ---------------------------------------------------------------------------------------------------------------
# npz files
# ---------------------------------------------------------------------------------------------------------------


def test_npz_needing_pickles_for_model_arrays_is_refused(tmp_path):
    _, plain = published_style_data()
    plain["v_template"] = np.array([_Call(os.system, "true")], dtype=object)
    np.savez(tmp_path / "model.npz", **plain)
    assert_refused(tmp_path / "model.npz", "['v_template']", "stored as pickles")


def test_npz_pickled_metadata_is_skipped_not_unpickled(tmp_path):
    """SMPLX_NEUTRAL.npz keeps metadata dicts (e.g. joint2num) as pickles: skipped with a warning, never loaded."""
    marker = tmp_path / "pwned"
    _, plain = published_style_data()
    np.savez(tmp_path / "model.npz", **plain, joint2num=np.array([_System(marker)], dtype=object))
    with pytest.warns(UserWarning, match="joint2num"):
        loaded = load_body_model_data(tmp_path / "model.npz")
    assert "joint2num" not in loaded and set(loaded) == set(plain)
    assert not marker.exists()


def test_unreadable_or_unknown_files_are_value_errors(tmp_path):
    assert_refused(write(tmp_path / "model.npz", b"not a zip file"), "not a readable .npz")
    assert_refused(write(tmp_path / "model.json", b"{}"), "unsupported body-model file type")


# ---------------------------------------------------------------------------------------------------------------
# Every allow-list, pinned (lib/io/safe_io.py); a name added there must be added here, on purpose
# ---------------------------------------------------------------------------------------------------------------


def _both_numpy(*names: str) -> set[tuple[str, str]]:
    """('numpy._core.x', name) written once -> also the numpy 1 spelling ('numpy.core.x', name)."""
    pairs = {tuple(n.rsplit(".", 1)) for n in names}
    return pairs | {(m.replace("numpy._core", "numpy.core"), n) for m, n in pairs}


EXPECTED_BODY_MODEL_PICKLE = {
    ("builtins", "set"),
    ("builtins", "object"),
    ("builtins", "bytes"),
    ("__builtin__", "set"),
    ("__builtin__", "object"),
    ("__builtin__", "bytes"),
    ("_codecs", "encode"),
    ("copyreg", "_reconstructor"),
    ("copy_reg", "_reconstructor"),
    ("chumpy.ch", "Ch"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.numeric", "_frombuffer"),
    ("scipy.sparse._csc", "csc_matrix"),
    ("scipy.sparse._csr", "csr_matrix"),
    ("scipy.sparse.csc", "csc_matrix"),
    ("scipy.sparse.csr", "csr_matrix"),
}
EXPECTED_JOBLIB_DATABASE = {
    ("joblib.numpy_pickle", "NumpyArrayWrapper"),
    ("numpy", "ndarray"),
    ("numpy", "memmap"),
    ("numpy", "matrix"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.numeric", "_frombuffer"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "str"),
    ("builtins", "bytes"),
    ("builtins", "bytearray"),
    ("builtins", "int"),
    ("builtins", "float"),
    ("builtins", "complex"),
    ("builtins", "bool"),
    ("__builtin__", "dict"),
    ("__builtin__", "list"),
    ("__builtin__", "tuple"),
    ("__builtin__", "set"),
    ("__builtin__", "frozenset"),
    ("__builtin__", "str"),
    ("__builtin__", "bytes"),
    ("__builtin__", "bytearray"),
    ("__builtin__", "int"),
    ("__builtin__", "float"),
    ("__builtin__", "complex"),
    ("__builtin__", "bool"),
}
EXPECTED_SKELETON_2_BETA = {
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch.storage", "_load_from_bytes"),
    ("collections", "OrderedDict"),
}
EXPECTED_CHECKPOINT_GLOBALS = {
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    *(
        ("numpy.dtypes", f"{name}DType")
        for name in (
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
    ),
}


def _database_stand_ins():
    from lib.data.db import _stand_ins

    return _stand_ins()


def _body_model_stand_ins():
    from lib.models.safe_pickle import _STAND_INS

    return _STAND_INS


def _skeleton_2_beta_stand_ins():
    from lib.models.skeleton_2_beta import _STAND_INS

    return _STAND_INS


@pytest.mark.parametrize(
    "allowed, expected, stand_ins",
    [
        (safe_io.BODY_MODEL_PICKLE, EXPECTED_BODY_MODEL_PICKLE, _body_model_stand_ins),
        (safe_io.JOBLIB_DATABASE, EXPECTED_JOBLIB_DATABASE, _database_stand_ins),
        (safe_io.SKELETON_2_BETA, EXPECTED_SKELETON_2_BETA, _skeleton_2_beta_stand_ins),
    ],
    ids=["body_model_pkl", "database_pt", "skeleton_2_beta_npz"],
)
def test_allow_list_is_exactly_the_expected_set(allowed, expected, stand_ins):
    assert set(allowed.names) == expected, (
        f"added: {sorted(set(allowed.names) - expected)}, removed: {sorted(expected - set(allowed.names))}"
    )
    assert set(stand_ins()) == expected  # the loader's own table resolves exactly these names


def test_checkpoint_globals_are_exactly_the_expected_set():
    assert set(safe_io.CHECKPOINT_GLOBALS.names) == EXPECTED_CHECKPOINT_GLOBALS
    # what load_checkpoint hands to torch: these names (those the installed numpy has), each the real object
    registered = {name: obj for obj, name in safe_io.torch_safe_globals()}
    assert set(registered) <= {f"{m}.{n}" for m, n in EXPECTED_CHECKPOINT_GLOBALS}
    assert {
        "numpy.dtype",
        "numpy.ndarray",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.dtypes.Float64DType",
    } <= set(registered)
    assert registered["numpy.dtype"] is np.dtype and registered["numpy.dtypes.Float64DType"] is type(np.dtype("f8"))


def test_stand_ins_must_match_the_allow_list():
    with pytest.raises(RuntimeError, match=r"disagree on \[\('builtins', 'eval'\)\]"):
        safe_io.unpickle(
            io.BytesIO(pickle.dumps(1)),
            safe_io.SKELETON_2_BETA,
            {**_skeleton_2_beta_stand_ins(), ("builtins", "eval"): eval},
        )


# ---------------------------------------------------------------------------------------------------------------
# Code-running payloads, every loader: the refusal names the file and the global, and the marker never appears
# ---------------------------------------------------------------------------------------------------------------


def _import_then_call_system(importer, module_name: str, marker: Path) -> tuple:
    """(module, result): `importer(module_name)` is pickled first, then `getattr(module, 'system')('touch marker')`."""
    module = _Call(importer, module_name)
    return module, _Call(_Call(getattr, module, "system"), f"touch {marker}")


# name the refusal must give (the first global the pickle names) -> payload that touches `marker` when unpickled
PAYLOADS = {
    "builtins.eval": lambda marker: _Call(eval, f"__import__('os').system('touch {marker}')"),
    "builtins.exec": lambda marker: _Call(exec, f"import os; os.system('touch {marker}')"),
    "builtins.getattr": lambda marker: _Call(_Call(getattr, _Call(__import__, "os"), "system"), f"touch {marker}"),
    "builtins.__import__": lambda marker: _import_then_call_system(__import__, "os", marker),
    f"{os.system.__module__}.system": lambda marker: _Call(os.system, f"touch {marker}"),  # posix.system
    "subprocess.Popen": lambda marker: _Call(subprocess.Popen, ["touch", str(marker)]),
    "importlib.import_module": lambda marker: _import_then_call_system(importlib.import_module, "os", marker),
}


def _wait_for(marker: Path, seconds: float = 10.0) -> bool:
    """Popen runs `touch` in a child process: give it time before deciding the marker is absent."""
    deadline = time.monotonic() + seconds
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return marker.exists()


@pytest.mark.parametrize("refused", PAYLOADS)
def test_payloads_run_code_when_loaded_plainly(tmp_path, refused):
    """The payloads are real: a plain pickle.loads creates the marker (so its absence below means something)."""
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps({"v_template": PAYLOADS[refused](marker)}, protocol=4))
    assert _wait_for(marker)


def _body_model_pkl(path: Path, payload, protocol: int = 4) -> Callable:
    path.write_bytes(pickle.dumps({"v_template": np.zeros((3, 3)), "shapedirs": payload}, protocol=protocol))
    return lambda: load_body_model_data(path)


def _body_model_pkl_protocol2(path: Path, payload) -> Callable:
    """Protocol 2, as published SMPL files: names in their Python 2 spelling (__builtin__.eval, commands.Popen)."""
    return _body_model_pkl(path, payload, protocol=2)


def _python2_spelling(dotted: str) -> str:
    module, name = dotted.rsplit(".", 1)
    module, name = _compat_pickle.REVERSE_NAME_MAPPING.get((module, name), (module, name))
    return f"{_compat_pickle.REVERSE_IMPORT_MAPPING.get(module, module)}.{name}"


def _body_model_npz_required(path: Path, payload) -> Callable:
    _, plain = published_style_data()
    np.savez(path, **dict(plain, v_template=np.array([payload, 0], dtype=object)))
    return lambda: load_body_model_data(path)


def _database_pt(path: Path, payload) -> Callable:
    joblib.dump({"theta": np.zeros((2, 72), np.float32), "evil": payload}, path)
    return lambda: load_db(path, "smpl")


def _database_pt_object_array(path: Path, payload) -> Callable:
    joblib.dump({"theta": np.zeros((2, 72), np.float32), "vid_name": np.array(["a", payload], dtype=object)}, path)
    return lambda: load_db(path, "smpl")


def _database_pt_compressed(path: Path, payload) -> Callable:
    joblib.dump({"theta": np.zeros((2, 72), np.float32), "evil": payload}, path, compress=3)
    return lambda: load_db(path, "smpl")


def _skeleton_2_beta_npz(path: Path, payload) -> Callable:
    entry = np.empty((), dtype=object)
    entry[()] = {"A1": payload}
    np.savez(path, lr=entry)
    return lambda: load_skeleton_2_beta(path)


def _checkpoint_pth(path: Path, payload) -> Callable:
    torch.save({"gen_state_dict": {"w": torch.zeros(2)}, "epoch": 3, "extra": payload}, path)  # protocol 2
    return lambda: load_checkpoint(path)


# loader -> (file name, writer, whether the file spells globals the Python 2 way: pickle protocol < 3)
LOADERS = {
    "body_model_pkl": ("SMPL_NEUTRAL.pkl", _body_model_pkl, False),
    "body_model_pkl_protocol2": ("SMPL_NEUTRAL.pkl", _body_model_pkl_protocol2, True),
    "database_pt": ("amass_test_db.pt", _database_pt, False),
    "database_pt_object_array": ("amass_test_db.pt", _database_pt_object_array, False),
    "database_pt_compressed": ("amass_test_db.pt", _database_pt_compressed, False),
    "skeleton_2_beta_npz": ("skeleton_2_beta.npz", _skeleton_2_beta_npz, False),
    "checkpoint_pth": ("model_best.pth.tar", _checkpoint_pth, True),
}


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("refused", PAYLOADS)
def test_payload_is_refused_and_never_runs(tmp_path, loader, refused):
    marker = tmp_path / "marker"
    file_name, write, python2_names = LOADERS[loader]
    path = tmp_path / file_name
    load = write(path, PAYLOADS[refused](marker))
    with pytest.raises(ValueError) as error:
        load()
    message = str(error.value)
    assert str(path) in message, message
    if python2_names:
        refused = _python2_spelling(refused)
    if loader == "checkpoint_pth":  # torch's weights_only refusal (it writes builtins by name alone)
        assert "refused to unpickle arbitrary objects" in message, message
        assert f"GLOBAL {refused.replace('__builtin__.', '')} " in message, message
    else:
        assert f"refused global {refused}:" in message, message
    assert not _wait_for(marker, seconds=0.5 if refused == "subprocess.Popen" else 0.0)


@pytest.mark.parametrize("refused", PAYLOADS)
def test_body_model_npz_payload_is_never_unpickled(tmp_path, refused):
    """.npz body models are read with allow_pickle=False: a pickled required entry is refused, any other skipped."""
    marker = tmp_path / "marker"
    load = _body_model_npz_required(tmp_path / "model.npz", PAYLOADS[refused](marker))
    with pytest.raises(ValueError, match=r"\['v_template'\] are stored as pickles"):
        load()
    _, plain = published_style_data()
    np.savez(tmp_path / "extra.npz", **plain, joint2num=np.array([PAYLOADS[refused](marker)], dtype=object))
    with pytest.warns(UserWarning, match="joint2num"):
        assert set(load_body_model_data(tmp_path / "extra.npz")) == set(plain)
    assert not _wait_for(marker, seconds=0.5 if refused == "subprocess.Popen" else 0.0)


# ---------------------------------------------------------------------------------------------------------------
# atomic_write and file_digest
# ---------------------------------------------------------------------------------------------------------------


def test_atomic_write_bytes_text_and_writer_callbacks(tmp_path):
    out = tmp_path / "new" / "dir"
    with safe_io.atomic_write(out / "a.bin") as f:
        f.write(b"\x00\x01")
    with safe_io.atomic_write(out / "a.json", "w") as f:
        f.write('{"ä": 1}')
    with safe_io.atomic_write(out / "a.npz") as f:  # np.savez given a file adds no '.npz' to the name
        np.savez(f, x=np.arange(3))
    with safe_io.atomic_write(out / "a.pt") as f:
        joblib.dump({"x": np.arange(4)}, f)
    with safe_io.atomic_write(out / "a.pth") as f:
        torch.save({"x": torch.ones(2)}, f)
    assert sorted(os.listdir(out)) == ["a.bin", "a.json", "a.npz", "a.pt", "a.pth"]
    assert (out / "a.bin").read_bytes() == b"\x00\x01" and (out / "a.json").read_text("utf-8") == '{"ä": 1}'
    assert np.load(out / "a.npz")["x"].tolist() == [0, 1, 2]
    assert joblib.load(out / "a.pt")["x"].tolist() == [0, 1, 2, 3]
    assert torch.load(out / "a.pth", weights_only=True)["x"].tolist() == [1.0, 1.0]


def test_atomic_write_failure_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"old")
    with pytest.raises(OSError, match="disk full"), safe_io.atomic_write(path) as f:
        f.write(b"partial new content")
        raise OSError("disk full")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["data.bin"]
    with pytest.raises(ValueError, match="mode"), safe_io.atomic_write(path, "ab"):
        pass


def test_file_digest_is_the_sha1_prefix(tmp_path):
    path = tmp_path / "model.npz"
    path.write_bytes(b"abc" * 3_000_000)  # larger than one read chunk
    expected = hashlib.sha1(b"abc" * 3_000_000).hexdigest()
    assert safe_io.file_digest(path) == expected[:12] and safe_io.file_digest(path, length=40) == expected
    assert safe_io.file_digest(write(tmp_path / "empty", b"")) == "da39a3ee5e6b"  # sha1 of nothing


# ---------------------------------------------------------------------------------------------------------------
# skeleton_2_beta: the official layout in its variants still loads
# ---------------------------------------------------------------------------------------------------------------


def _skeleton_2_beta_file(path: Path, matrix, numpy1: bool = False) -> Path:
    """An official-layout npz (`['lr'].item()['A1']`) written by numpy; `numpy1` respells numpy._core as numpy 1 did."""
    entry = np.empty((), dtype=object)
    entry[()] = {"A1": matrix, "note": "lr fit", "meta": [1, 2.5]}
    stream = io.BytesIO()
    npy_format.write_array_header_1_0(stream, {"descr": "|O", "fortran_order": False, "shape": ()})
    pickled = pickle.dumps(entry, protocol=3)  # as numpy 1's np.save: GLOBAL 'module\nname\n', respellable in place
    if numpy1:
        assert b"numpy._core.multiarray\n" in pickled
        pickled = pickled.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    data = stream.getvalue() + pickled
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("lr.npy", data)
    return path


@pytest.mark.parametrize("numpy1", [False, True], ids=["numpy2", "numpy1"])
@pytest.mark.parametrize("as_tensor", [False, True], ids=["ndarray", "tensor"])
def test_skeleton_2_beta_variants_load(tmp_path, numpy1, as_tensor):
    matrix = np.random.default_rng(3).normal(size=(14, 10))
    stored = torch.as_tensor(matrix) if as_tensor else matrix.astype(">f8")  # big-endian: byte order kept
    path = _skeleton_2_beta_file(tmp_path / "skeleton_2_beta.npz", stored, numpy1)
    with warnings.catch_warnings():  # numpy 2 reads numpy.core through a deprecated alias
        warnings.simplefilter("ignore", DeprecationWarning)
        official = np.load(path, allow_pickle=True)["lr"].item()["A1"]  # what the reference does with the file
    np.testing.assert_array_equal(np.asarray(official), matrix)
    np.testing.assert_array_equal(load_skeleton_2_beta(path), matrix)


def test_skeleton_2_beta_object_arrays_only_hold_allowed_items(tmp_path):
    """The object array is the one non-numeric thing allowed; an object array inside it is still item-checked."""
    marker = tmp_path / "marker"
    inner = np.array([np.zeros(2), PAYLOADS["builtins.eval"](marker)], dtype=object)
    path = _skeleton_2_beta_file(tmp_path / "skeleton_2_beta.npz", inner)
    with pytest.raises(ValueError, match="refused global builtins.eval"):
        load_skeleton_2_beta(path)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------------------
# joblib databases: the official variants still load, equal to what joblib itself reads from a trusted file
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [0, 3])
def test_database_variants_load_as_joblib_reads_them(tmp_path, compress):
    from lib.data.db import safe_joblib_load

    rng = np.random.default_rng(5)
    db = {
        "theta": rng.normal(size=(6, 72)).astype(np.float32),
        "beta": np.asfortranarray(rng.normal(size=(6, 10))),  # Fortran order
        "twist_angle": rng.normal(size=(6, 23)).astype(">f8"),  # big-endian
        "valid": np.ones(6, dtype=bool),
        "frame": np.arange(6, dtype=np.int64),
        "vid_name": np.array(["seq_a"] * 3 + ["seq_b"] * 3, dtype=object),  # object array: a nested pickle
        "names_u": np.array(["a", "bc"]),
        "names_s": np.array([b"a", b"bc"]),
        "meta": {"fps": 30, "source": "amass", "order": [1, 2]},
    }
    joblib.dump(db, tmp_path / "db.pt", compress=compress)
    loaded, reference = safe_joblib_load(tmp_path / "db.pt"), joblib.load(tmp_path / "db.pt")
    assert set(loaded) == set(reference) and loaded["meta"] == reference["meta"]
    for key in set(db) - {"meta"}:
        assert type(loaded[key]) is np.ndarray and loaded[key].dtype == reference[key].dtype, key
        np.testing.assert_array_equal(loaded[key], reference[key], err_msg=key)


def test_database_build_cannot_change_an_allowed_class(tmp_path):
    """BUILD on a class the allow-list hands out (joblib's array wrapper) would set class attributes for every later
    file; it is refused and the class stays as it was."""
    from joblib.numpy_pickle import NumpyArrayWrapper

    before = dict(vars(NumpyArrayWrapper))
    payload = (
        pickle.PROTO
        + b"\x02"
        + pickle.GLOBAL
        + b"joblib.numpy_pickle\nNumpyArrayWrapper\n"
        + pickle.NONE
        + pickle.EMPTY_DICT
        + pickle.BINUNICODE
        + struct.pack("<I", 10)
        + b"read_array"
        + pickle.GLOBAL
        + b"builtins\ndict\n"
        + pickle.SETITEM
        + pickle.TUPLE2
        + pickle.BUILD
        + pickle.STOP
    )
    with pytest.raises(ValueError, match="refused BUILD on the class NumpyArrayWrapper"):
        load_db(write(tmp_path / "db.pt", payload), "smpl")
    assert dict(vars(NumpyArrayWrapper)) == before


@pytest.mark.parametrize("suffix", ["", ".gz", ".xz"])
def test_corrupt_database_is_a_format_error_naming_the_file(tmp_path, suffix):
    """Truncated (plain) or with garbage in the compressed stream (zlib / lzma errors): one error naming the file."""
    from lib.data.db import DatabaseFormatError

    path = tmp_path / f"amass_test_db.pt{suffix}"
    joblib.dump({"theta": np.random.default_rng(0).normal(size=(50, 72))}, path)  # the suffix picks the compression
    data = path.read_bytes()
    middle = len(data) // 2
    path.write_bytes(data[:-200] if not suffix else data[:middle] + bytes(64) + data[middle + 64 :])
    with pytest.raises(DatabaseFormatError, match="not a readable joblib database") as error:
        load_db(path, "smpl")
    assert str(path) in str(error.value)
