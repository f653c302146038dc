"""The worker-process loader for pipelines that decode on the CPU (docs/data.md): ImageNet's JPEGs
now; audio, MRI slices and text next.

A pipeline gives three things: `decode(key) -> example` (a picklable callable: each key is what
the batch-key iterator yields, e.g. `(index, step, row)` for a train example or an index for an
eval one), the batch keys of this rank (from `algoperf.data.indices`, so every rank's workers
decode only its rows), and `collate(examples) -> batch` (numpy, any nesting). This module runs
`decode` and `collate` in worker processes and hands back numpy batches in order.

Built on torchdata's `StatefulDataLoader` (the DataLoader with the same worker machinery plus
state_dicts). Why it and not `torchdata.nodes`: a worker's batch comes back through shared memory
(tensors in /dev/shm) where `nodes.ParallelMapper`'s process mode pickles each item through a
queue, and exact resume here needs no loader state at all: the batch keys are a pure function of
(seed, step), so a resumed trial starts the key iterator at its checkpoint's step (the loader's
snapshots are switched off: `snapshot_every_n_steps=0`). Per-rank sharding lives in the keys too,
so the loader does the same thing on any number of ranks and for both frameworks.
"""

from __future__ import annotations

import multiprocessing
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from algoperf.data.tree import tree_map

MAX_DEFAULT_WORKERS = 16
PREFETCH_PER_WORKER = 2
"""Batches in flight per worker (each holds a batch in shared memory: size /dev/shm for it)."""


def default_num_workers() -> int:
    """Decoding processes per rank: this machine's cores split among its local ranks."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # set by torchrun
    return max(1, min(MAX_DEFAULT_WORKERS, (cores or 1) // max(1, local_ranks)))


class _Examples:
    """A map-style dataset over any keys: item `key` is `decode(key)`."""

    def __init__(self, decode: Callable[[Any], Any]) -> None:
        self.decode = decode

    def __getitem__(self, key):
        return self.decode(key)


class _Collate:
    """`collate`, then (in a worker) numpy arrays as tensors, which travel in shared memory."""

    def __init__(self, collate: Callable[[list], Any]) -> None:
        self.collate = collate

    def __call__(self, examples: list):
        from torch.utils.data import default_convert, get_worker_info

        batch = self.collate(examples)
        return default_convert(batch) if get_worker_info() is not None else batch


def _as_numpy(value):
    return value.numpy() if hasattr(value, "numpy") and not isinstance(value, np.ndarray) else value


def as_numpy(batch: Any) -> Any:
    """A batch from the workers (tensors) as numpy arrays, without copies."""
    return tree_map(_as_numpy, batch)


def _context(preload: Sequence[str]):
    # forkserver, not fork: forking a process that runs JAX (or CUDA) threads can deadlock. The
    # server imports the decoding modules once, so starting a worker is cheap.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["numpy", "torch.utils.data", __name__, *preload])
    return context


def worker_batches(
    decode: Callable[[Any], Any],
    batch_keys: Iterable[list],
    collate: Callable[[list], Any],
    *,
    num_workers: int | None = None,
    preload: Sequence[str] = (),
) -> Iterator[Any]:
    """The numpy batches `collate([decode(key) for key in keys])` for each `keys` of
    `batch_keys`, in order, decoded in `num_workers` processes (0: in this process; None:
    `default_num_workers()`). `decode` and `collate` must be picklable (module-level functions
    or objects of module-level classes); `preload` names the modules the workers import first.
    """
    from torchdata.stateful_dataloader import StatefulDataLoader

    workers = default_num_workers() if num_workers is None else num_workers
    with warnings.catch_warnings():  # torchdata 0.11 calls a torch function torch 2.14 deprecates
        warnings.filterwarnings("ignore", message="'set_vital' is deprecated")
        loader = StatefulDataLoader(
            _Examples(decode),
            batch_sampler=batch_keys,
            collate_fn=_Collate(collate),
            num_workers=workers,
            multiprocessing_context=_context(preload) if workers else None,
            prefetch_factor=PREFETCH_PER_WORKER if workers else None,
            snapshot_every_n_steps=0,  # resume comes from the keys (see the module docstring)
        )
    return (as_numpy(batch) for batch in loader)
