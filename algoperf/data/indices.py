"""The index-level sampling rules every input pipeline follows (docs/data.md), framework-free.

Which examples make each global train batch, which rows of it a rank reads, how an eval split is
cut into padded batches with a valid mask, which examples form the eval_train subset, and how
random augmentation is seeded. In-memory pipelines (`algoperf.data.arrays`) and file-backed ones
(ImageNet's decoding workers) both use these functions, so the rules are written once:

- train: global batch `s` is the examples at positions `[s * B, (s + 1) * B)` of the concatenated
  epoch orders (each epoch a permutation seeded by `(seed, epoch)`); a pure function of
  `(seed, step)`, so a resumed trial continues the stream exactly.
- a rank reads the rows `shard.rows(B)` of every global batch, for train and eval alike.
- eval: one pass in split order, the last global batch padded; padding rows have index -1 and
  weight 0, so every example counts exactly once on any number of ranks and shapes never change.
- eval_train: a fixed subset of the train split drawn with the trial's data seed, in split order.
- augmentation: every random choice is a function of `(seed, step, global row)` only, never of
  the rank or the number of ranks (`batch_rng` draws for a whole global batch, `example_rng` for
  one example).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from algoperf.data.sharding import Shard

PADDING = -1
"""The index of a padding row in an eval batch."""


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The example order of one epoch: the same on every rank for a given seed."""
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def index_runs(
    num_examples: int, run_length: int, *, seed: int, start: int
) -> Iterator[np.ndarray]:
    """The concatenated epoch orders from position `start` on, cut every `run_length` (infinite).

    Epochs (each a seeded permutation) follow one another, so a run may straddle two and every
    example appears exactly once per epoch.
    """
    epoch, position = divmod(start, num_examples)
    order = epoch_order(num_examples, seed, epoch)
    while True:
        end = position + run_length
        if end < num_examples:  # the common case: inside one epoch
            yield order[position:end]
            position = end
            continue
        needed, parts = run_length, []
        while needed:
            take = min(needed, num_examples - position)
            parts.append(order[position : position + take])
            position += take
            needed -= take
            if position == num_examples:
                epoch, position = epoch + 1, 0
                order = epoch_order(num_examples, seed, epoch)
        yield parts[0] if len(parts) == 1 else np.concatenate(parts)


def global_batch_indices(
    num_examples: int, global_batch_size: int, *, seed: int, start_step: int = 0
) -> Iterator[np.ndarray]:
    """The example indices of every global train batch, from batch `start_step` on (infinite)."""
    return index_runs(
        num_examples, global_batch_size, seed=seed, start=start_step * global_batch_size
    )


def eval_batch_indices(
    num_examples: int, global_batch_size: int, shard: Shard | None = None
) -> Iterator[np.ndarray]:
    """This rank's example indices of each global eval batch, in split order; `PADDING` (-1)
    fills the rows past the end of the split in the last batch."""
    rows = (shard or Shard()).rows(global_batch_size)
    for start in range(0, num_examples, global_batch_size):
        indices = np.arange(start, start + global_batch_size)[rows]
        yield np.where(indices < num_examples, indices, PADDING)


def valid_mask(indices: np.ndarray) -> np.ndarray:
    """float32 weights of an eval batch: 1 on real rows, 0 on padding."""
    return (indices != PADDING).astype(np.float32)


def eval_train_indices(num_examples: int, num_eval_train_examples: int, seed: int) -> np.ndarray:
    """The eval_train subset of a train split of `num_examples`: a fixed random sample of
    `num_eval_train_examples` drawn with `seed`, sorted (all of it if the split is smaller)."""
    if num_eval_train_examples >= num_examples:
        return np.arange(num_examples)
    order = np.random.default_rng(seed).permutation(num_examples)
    return np.sort(order[:num_eval_train_examples])


def batch_rng(seed: int, step: int) -> np.random.Generator:
    """The generator of global train batch `step`'s random choices. A pipeline draws for all
    `global_batch_size` rows and keeps its rank's, so the choices do not depend on the ranks."""
    return np.random.default_rng([seed, step, 0])


def example_rng(seed: int, step: int, row: int) -> np.random.Generator:
    """The generator of one example's random choices (row = its row in the global batch), for
    pipelines that augment example by example (e.g. in decoding workers)."""
    return np.random.default_rng([seed, step, row])
