"""Batches from datasets that fit in memory (mnist, cifar): infinite shuffled train streams and
finite, padded eval passes that visit every example exactly once across ranks."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from algoperf.data.sharding import Shard

Batch = dict[str, np.ndarray]

CHUNK_BYTES = 8 << 20
"""The train stream gathers about this many bytes of batches at once (see `train_batches`)."""
MAX_CHUNK_STEPS = 64
Transform = Callable[[Batch, np.random.Generator], Batch]


@dataclasses.dataclass(frozen=True)
class ArraySplit:
    """One split held in memory: arrays with the same first dimension."""

    arrays: Mapping[str, np.ndarray]

    def __post_init__(self):
        sizes = {len(a) for a in self.arrays.values()}
        if len(sizes) != 1:
            raise ValueError(f"ArraySplit: arrays have different lengths {sorted(sizes)}.")

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def take(self, indices: np.ndarray) -> Batch:
        # ndarray.take, not np.take: the function is a Python wrapper around the method, and
        # this runs in timed steps.
        return {key: array.take(indices, axis=0) for key, array in self.arrays.items()}

    def subset(self, num_examples: int, seed: int) -> ArraySplit:
        """A fixed random subset (the eval_train split); the whole split if it is smaller."""
        if num_examples >= len(self):
            return self
        indices = np.sort(np.random.default_rng(seed).permutation(len(self))[:num_examples])
        return ArraySplit(self.take(indices))


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The example order of one epoch: the same on every rank for a given seed."""
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def global_batch_indices(
    num_examples: int, global_batch_size: int, *, seed: int, start_step: int = 0
) -> Iterator[np.ndarray]:
    """The example indices of every global batch, from batch `start_step` on (infinite).

    Epochs (each a seeded permutation) are concatenated, so a batch may straddle two and every
    example appears exactly once per epoch. A pure function of (seed, step): a resumed trial
    continues the stream exactly.
    """
    epoch, position = divmod(start_step * global_batch_size, num_examples)
    order = epoch_order(num_examples, seed, epoch)
    while True:
        end = position + global_batch_size
        if end < num_examples:  # the common case: inside one epoch
            yield order[position:end]
            position = end
            continue
        needed, parts = global_batch_size, []
        while needed:
            take = min(needed, num_examples - position)
            parts.append(order[position : position + take])
            position += take
            needed -= take
            if position == num_examples:
                epoch, position = epoch + 1, 0
                order = epoch_order(num_examples, seed, epoch)
        yield parts[0] if len(parts) == 1 else np.concatenate(parts)


def train_batches(
    split: ArraySplit,
    global_batch_size: int,
    *,
    seed: int,
    shard: Shard | None = None,
    transform: Transform | None = None,
    start_step: int = 0,
) -> Iterator[Batch]:
    """An infinite stream of this rank's share of each global batch, from batch `start_step`.

    Batches follow `global_batch_indices` (nothing is dropped). Augmentation gets a generator
    seeded per (seed, step, rank), so the stream is deterministic per seed.
    """
    shard = shard or Shard()
    rows = shard.rows(global_batch_size)
    local_size = rows.stop - rows.start
    indices_per_step = global_batch_indices(
        len(split), global_batch_size, seed=seed, start_step=start_step
    )
    if shard.count == 1:
        rows = slice(None)  # the whole batch: index with the global indices as they are
    # This runs inside timed steps (spec/RULES.md §4). The rows of `chunk_steps` batches
    # (~CHUNK_BYTES) are gathered in one `take`, and each batch is a view of its slice of
    # that chunk: per step, a few slices instead of a gather (scripts/bench_dataloader.py:
    # the median mnist step with the loader fell from 1.10x to ~1.04x a cached batch's; the
    # mean, which carries the chunk steps, from ~1.09x to ~1.08x). Every chunk is a new array,
    # so nothing a caller keeps is ever overwritten (a kept batch keeps its chunk alive).
    row_bytes = sum(array[:1].nbytes for array in split.arrays.values())
    chunk_steps = max(1, min(MAX_CHUNK_STEPS, CHUNK_BYTES // max(1, local_size * row_bytes)))
    step = start_step
    while True:
        indices = [next(indices_per_step)[rows] for _ in range(chunk_steps)]
        chunk = split.take(np.concatenate(indices))
        chunk["weights"] = np.ones(chunk_steps * local_size, np.float32)
        for start in range(0, chunk_steps * local_size, local_size):
            end = start + local_size
            batch = {key: array[start:end] for key, array in chunk.items()}
            if transform is not None:
                batch = transform(batch, np.random.default_rng([seed, step, shard.index]))
            step += 1
            yield batch


def eval_batches(
    split: ArraySplit,
    global_batch_size: int,
    *,
    shard: Shard | None = None,
    transform: Transform | None = None,
) -> Iterator[Batch]:
    """One pass over a split in fixed-size global batches; the last is zero-padded.

    `weights` is 1 on real rows and 0 on padding, so every example counts exactly once across
    ranks and the shapes never change (no recompilation for a short last batch).
    """
    shard = shard or Shard()
    rows = shard.rows(global_batch_size)
    num_examples = len(split)
    for start in range(0, num_examples, global_batch_size):
        indices = np.arange(start, start + global_batch_size)[rows]
        valid = indices < num_examples
        batch = split.take(np.where(valid, indices, 0))
        if not valid.all():
            for array in batch.values():
                array[~valid] = 0
        batch["weights"] = valid.astype(np.float32)
        if transform is not None:
            batch = transform(batch, np.random.default_rng(0))
        yield batch
