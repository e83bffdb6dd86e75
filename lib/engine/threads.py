"""Thread policy (docs/speed.md): the solver's work is many small tensor operations, so it never relies on intra-op
threads, whose barriers stall as soon as another process takes a core (measured: 50x slower under load).

- Intra-op threads: one (``torch.set_num_threads(1)``), set once by :func:`apply_thread_policy`.
- More cores are used by solving batch chunks side by side (:func:`map_chunks`, ``THREADS`` workers, each on one
  intra-op thread); a busy core then slows only the chunk running on it, nothing waits at a barrier.
Results do not depend on the setting: every sample's arithmetic is the same whatever chunk it lands in.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields, is_dataclass, replace
from functools import cache

import torch
from torch import Tensor

DEFAULT_THREADS = 1
# Chunks smaller than this are not split further: below it the per-op overhead outweighs a second core.
MIN_CHUNK = 256


def available_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def apply_thread_policy(threads: int) -> int:
    """One intra-op thread for torch; ``threads`` (>= 1, or 0 = all available cores) chunk workers. Returns the
    number of workers :func:`map_chunks` should use."""
    if threads < 0:
        raise ValueError(f"THREADS={threads}: use 0 (all cores) or a positive number of worker threads")
    torch.set_num_threads(1)
    return threads or available_cores()


@cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="solver-chunk")


def _run_chunk(fn: Callable, grad: bool, *args):
    # Worker threads do not inherit the caller's grad mode or thread count.
    torch.set_num_threads(1)
    with torch.set_grad_enabled(grad):
        return fn(*args)


def map_chunks(fn: Callable, tensors: tuple[Tensor, ...], workers: int, min_chunk: int = MIN_CHUNK):
    """``fn(*tensors)`` computed on batch chunks by ``workers`` threads, results joined along the batch.

    ``tensors`` share their first (batch) dimension. ``fn`` returns a tensor, a list / tuple of them, or a
    dataclass of them (e.g. a :class:`~lib.solver.pipeline.Solution`); None and strings pass through. With one
    worker or a small batch, ``fn`` runs once on the whole batch.
    """
    batch = tensors[0].shape[0]
    pieces = min(workers, batch // min_chunk)
    if pieces <= 1:
        return fn(*tensors)
    chunks = zip(*(t.chunk(pieces) for t in tensors), strict=True)
    grad = torch.is_grad_enabled()
    results = list(_pool(workers).map(lambda args: _run_chunk(fn, grad, *args), chunks))
    return join_batches(results)


def join_batches(results: list):
    """Concatenate per-chunk results (tensors, lists / tuples of them, dataclasses of them) along the batch."""
    first = results[0]
    if first is None or isinstance(first, (str, int, float)):
        return first
    if torch.is_tensor(first):
        return torch.cat(results)
    if isinstance(first, dict):
        return {key: join_batches([r[key] for r in results]) for key in first}
    if isinstance(first, (list, tuple)):
        return type(first)(join_batches(list(items)) for items in zip(*results, strict=True))
    if is_dataclass(first):
        return replace(first, **{f.name: join_batches([getattr(r, f.name) for r in results]) for f in fields(first)})
    raise TypeError(f"cannot join chunk results of type {type(first).__name__}")
