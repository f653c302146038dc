"""The train stream of an in-memory split as torch tensors: each chunk of batches gathered, decoded
and cut once, into buffers that are reused once nothing refers to them any more.

Why reuse: on a VM every first touch of fresh memory is a page fault costing microseconds (3.5 us a
4 KB page measured on this project's 2-vCPU machines), and an 8 MB chunk is 2,048 pages; a
buffer that is written again costs none. Why it is safe: a buffer is reused only when its storage's
reference count says that no tensor outside the pool (a kept batch, a view or a numpy array of
one, a tensor autograd saved) still refers to it; otherwise the pool makes a new one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from algoperf.data import arrays

# How many chunk buffers a stream keeps for reuse (one is being read while the next is filled).
POOL_SIZE = 3
# The storage reference count that `ChunkPool` reads (torch's cudagraph trees use it too); without
# it, every chunk gets a new buffer.
_storage_use_count = getattr(torch._C, "_storage_Use_Count", None)
_ALIGN_BYTES = 64
Layout = dict[str, tuple[torch.dtype, tuple[int, ...]]]
"""key -> (dtype, shape of one row) of the arrays a chunk holds."""


def normalise_into(pixels: torch.Tensor, out: torch.Tensor, normalise: arrays.Normalise) -> None:
    """`arrays.Normalise.numpy` in torch, written into `out` (float32, the shape of `pixels`): the
    same float32 operations in the same order (the same bits), on torch's intra-op threads."""
    out.copy_(pixels)  # uint8 -> float32 is exact, as numpy's astype
    out.div_(float(np.float32(normalise.divisor)))
    out.sub_(torch.from_numpy(normalise.mean))
    out.div_(torch.from_numpy(normalise.std))


def normalise_tensor(pixels: torch.Tensor, normalise: arrays.Normalise) -> torch.Tensor:
    """`normalise_into` a new float32 tensor."""
    out = torch.empty(pixels.shape, dtype=torch.float32)
    normalise_into(pixels, out, normalise)
    return out


class ChunkBuffer:
    """One chunk's batches: a [steps, rows, ...] tensor per key, all carved from one storage, so
    one reference count says whether anything still refers to any batch of the chunk."""

    def __init__(self, layout: Layout, steps: int, rows: int, *, pin: bool) -> None:
        spans, total = {}, 0
        for key, (dtype, row_shape) in layout.items():
            start = -(-total // _ALIGN_BYTES) * _ALIGN_BYTES  # typed views need aligned offsets
            total = start + steps * rows * math.prod(row_shape) * dtype.itemsize
            spans[key] = (start, total)
        raw = torch.empty(total, dtype=torch.uint8, pin_memory=pin)
        self.batched = {
            key: raw[start:end].view(dtype).view(steps, rows, *row_shape)
            for (key, (dtype, row_shape)), (start, end) in zip(layout.items(), spans.values())
        }
        """key -> [steps, rows, ...]: batch `i` of the chunk is `batched[key][i]`."""
        self.flat = {key: value.flatten(0, 1) for key, value in self.batched.items()}
        """key -> [steps * rows, ...], the same memory (what a gather writes into)."""
        self._storage = raw.untyped_storage()  # kept: its handle is what the count is read from
        del raw  # the count when idle: this object's views and storage handle, nothing else
        self._idle_count = self._use_count()

    def _use_count(self) -> int:
        return _storage_use_count(self._storage._cdata) if _storage_use_count else -1

    def is_free(self) -> bool:
        """True when only this object refers to the memory (so it may be overwritten)."""
        return _storage_use_count is not None and self._use_count() == self._idle_count


class ChunkPool:
    """Hands out a free `ChunkBuffer` (reused) or a new one. Pinned buffers (CUDA) are never reused
    here: torch's pinned-memory allocator already recycles them, and only it knows when an
    asynchronous copy out of one has finished."""

    def __init__(self, layout: Layout, steps: int, rows: int, *, pin: bool, size: int = POOL_SIZE):
        self._make = lambda: ChunkBuffer(layout, steps, rows, pin=pin)
        self._size = 0 if pin else size
        self._buffers: list[ChunkBuffer] = []

    def take(self) -> ChunkBuffer:
        for buffer in self._buffers:
            if buffer.is_free():
                return buffer
        buffer = self._make()
        if len(self._buffers) < self._size:
            self._buffers.append(buffer)
        return buffer


def tensor_train_batches(
    split: arrays.ArraySplit, plans: Iterator[arrays.ChunkPlan], *, pin: bool
) -> Iterator[dict[str, torch.Tensor]]:
    """Train batches as CPU tensors, the same values as `arrays.train_batches`
    (tests/test_decode.py): per chunk, one torch gather per stored array (on the intra-op
    threads), the decode in place, and a view per batch; a step's `next` is a few lookups."""
    sources = {key: torch.from_numpy(array) for key, array in split.arrays.items()}
    layout = {
        key: (torch.float32 if key in split.decode else source.dtype, tuple(source.shape[1:]))
        for key, source in sources.items()
    }
    layout["weights"] = (torch.float32, ())
    pool = scratch = None
    for plan in plans:
        if pool is None:  # every plan of a stream has the same steps and rows
            pool = ChunkPool(layout, plan.steps, plan.rows, pin=pin)
            scratch = {  # stored rows of decoded arrays, never handed out: reused freely
                key: torch.empty((len(plan.indices), *layout[key][1]), dtype=sources[key].dtype)
                for key in split.decode
            }
        buffer = pool.take()
        indices = torch.from_numpy(plan.indices)
        for key, source in sources.items():
            if key in split.decode:
                torch.index_select(source, 0, indices, out=scratch[key])
                normalise_into(scratch[key], buffer.flat[key], split.decode[key])
            else:
                torch.index_select(source, 0, indices, out=buffer.flat[key])
        buffer.flat["weights"].fill_(1.0)
        views = [(key, batched.unbind(0)) for key, batched in buffer.batched.items()]
        del buffer, indices
        for offset in range(plan.steps):
            yield {key: batches[offset] for key, batches in views}
        del views  # so that the pool sees this chunk free once the caller lets go of it
