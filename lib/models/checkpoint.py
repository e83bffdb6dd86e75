"""Reading and writing Part-aware Network checkpoints without running code from the file.

A checkpoint is a dict (official and ours): ``gen_state_dict`` (the network's state dict, official key layout, see
``lib/models/pan.py``) plus training state (``epoch``, ``gen_optimizer``, ``performace``, ...). Files are read with
``torch.load(weights_only=True)``: tensors, numbers, strings, containers and numpy scalars / arrays only; anything
that would need arbitrary unpickling is refused. Files are written atomically (temp file in the same directory, then
``os.replace``) and only with content that ``weights_only`` loading accepts (store configs as YAML strings).
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from pickle import UnpicklingError

import torch
from torch import nn

from lib.io.safe_io import atomic_write, torch_safe_globals

DDP_PREFIX = "module."


# Phrases of torch's weights_only unpickler when a file asks for a class or function it will not run.
_REFUSAL_PHRASES = (
    "Unsupported global",
    "is blocked",
    "Can only build",
    "Can only create new object",
    "Trying to call reduce",
)


def _unpickling_reason(err: Exception) -> str:
    """The part of torch's weights_only error that says what went wrong (e.g. the refused class), on one line."""
    text = str(err)
    match = re.search(r"WeightsUnpickler error:(.*?)(?:Check the documentation|$)", text, flags=re.S)
    reason = " ".join((match.group(1) if match else text).split())
    return reason.split(" Please use ")[0].rstrip(".")


def load_checkpoint(path: str | os.PathLike, hint: str = "") -> dict:
    """Load a checkpoint dict on the CPU with weights-only unpickling.

    Args:
        path: the checkpoint file (a ready path: the caller resolves config-relative paths).
        hint: appended to the error when the path is empty or the file is missing (the caller says where the path
            came from and how to get a checkpoint).

    Raises:
        FileNotFoundError: no such file (the message ends with ``hint``).
        ValueError: the file needs arbitrary unpickling (refused), is not a readable torch file, or is not a dict.
    """
    if not str(path).strip():
        raise FileNotFoundError(f"no checkpoint given (empty path) {hint}".rstrip())
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint not found: {file} {hint}".rstrip())
    try:
        with torch.serialization.safe_globals(torch_safe_globals()):
            checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except UnpicklingError as err:
        if not any(phrase in str(err) for phrase in _REFUSAL_PHRASES):
            raise ValueError(
                f"{file}: not a readable torch checkpoint (corrupt, or not written by torch.save?): "
                f"{_unpickling_reason(err)}"
            ) from err
        raise ValueError(
            f"{file}: refused to unpickle arbitrary objects (weights_only loading): {_unpickling_reason(err)}. "
            "Checkpoints may hold only tensors, numbers, strings, lists and dicts; if you trust the file, re-save "
            "it with plain data (e.g. a config as a YAML string)"
        ) from err
    except (RuntimeError, KeyError, EOFError, OSError) as err:
        raise ValueError(f"{file}: not a readable torch checkpoint (corrupt or truncated?): {err}") from err
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{file}: expected a checkpoint dict (with 'gen_state_dict'), got {type(checkpoint).__name__}")
    return checkpoint


def _is_state_dict(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def strip_ddp_prefix(state_dict: Mapping[str, torch.Tensor]) -> OrderedDict:
    """Drop the ``module.`` prefix DistributedDataParallel puts on every key (keys without it are kept)."""
    return OrderedDict((k[len(DDP_PREFIX) :] if k.startswith(DDP_PREFIX) else k, v) for k, v in state_dict.items())


def _summarise(keys: list[str], limit: int = 8) -> str:
    prefixes = sorted({k.split(".")[0] for k in keys})
    shown = ", ".join(keys[:limit]) + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")
    return f"{len(keys)} under {', '.join(prefixes)}: {shown}"


def load_pan_weights(network: nn.Module, path_or_state: str | os.PathLike | Mapping, hint: str = "") -> dict:
    """Load Part-aware Network weights strictly (every key present, no extra key, every shape equal).

    Args:
        network: a ``PartAwareNetwork`` (or a DDP / DataParallel wrapper of one).
        path_or_state: a checkpoint file, a checkpoint dict with ``gen_state_dict`` (official or ours), or a bare
            state dict. A DDP ``module.`` key prefix is removed.
        hint: appended to the error if the file is missing (see :func:`load_checkpoint`).

    Returns:
        The checkpoint dict (for a bare state dict: ``{'gen_state_dict': state}``).

    Raises:
        ValueError: missing or unexpected keys, or shape mismatches, listed with the parts they belong to.
    """
    if isinstance(path_or_state, Mapping):
        checkpoint = dict(path_or_state)
    else:
        checkpoint = load_checkpoint(path_or_state, hint)
    if "gen_state_dict" in checkpoint:
        state = checkpoint["gen_state_dict"]
    elif _is_state_dict(checkpoint):
        state, checkpoint = checkpoint, {"gen_state_dict": checkpoint}
    else:
        raise ValueError(f"checkpoint has no 'gen_state_dict' (keys: {sorted(checkpoint)[:10]})")
    state = strip_ddp_prefix(state)

    wrapped = isinstance(network, (nn.DataParallel, nn.parallel.DistributedDataParallel))
    target = network.module if wrapped else network
    expected = target.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({_summarise(missing)})")
    if unexpected:
        problems.append(f"unexpected keys ({_summarise(unexpected)})")
    if mismatched:
        problems.append(f"shape mismatches ({_summarise(mismatched)})")
    if problems:
        raise ValueError(
            "PAN checkpoint does not match the network (a checkpoint for another body model or "
            "EMBED_DIM?): " + "; ".join(problems)
        )
    target.load_state_dict(state, strict=True)
    return checkpoint


_PLAIN_LEAVES = (bool, int, float, str, bytes, type(None))
_TORCH_LEAVES = (torch.Tensor, torch.dtype, torch.device, torch.Size)


def _check_plain(obj, where: str) -> None:
    """Raise TypeError at the first value weights_only loading would refuse (exact container types only)."""
    if type(obj) in (dict, OrderedDict):
        for k, v in obj.items():
            if type(k) not in (str, int):
                raise TypeError(f"checkpoint key {where}[{k!r}]: keys must be str or int")
            _check_plain(v, f"{where}[{k!r}]")
    elif type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif type(obj) not in _PLAIN_LEAVES and not isinstance(obj, _TORCH_LEAVES):
        # e.g. a yacs CfgNode (a dict subclass) or a numpy number: pickled by class name, refused on load
        raise TypeError(
            f"checkpoint value {where} is a {type(obj).__module__}.{type(obj).__qualname__}, which "
            "weights_only loading refuses: store tensors, numbers, strings, lists and dicts only "
            "(e.g. a config as cfg.dump(), a numpy number as float(x))"
        )


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` with ``torch.save`` atomically (``lib.io.safe_io.atomic_write``).

    A reader (or a crash) sees either the old file or the complete new one, never a partial write. ``state`` must be
    plain data (checked first, so the file stays loadable with ``weights_only=True``). Returns the written path.
    """
    if type(state) not in (dict, OrderedDict):
        raise TypeError(f"checkpoint state must be a dict, got {type(state).__name__}")
    _check_plain(state, "state")
    with atomic_write(path) as file:
        torch.save(state, file)
    return Path(path)
