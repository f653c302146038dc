"""In-memory datasets (mnist, cifar): splits held as arrays, chunked train streams, padded eval
passes, and `ArrayPipeline`, the data protocol (`algoperf.data.pipeline`) for such datasets.

The sampling rules are `algoperf.data.indices`' (train rows per (seed, step), eval padding with a
valid mask, the eval_train subset, augmentation seeded per (seed, step, global row))."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from algoperf.data import indices as index_rules
from algoperf.data.pipeline import Batch, InputPipeline, check_split
from algoperf.data.sharding import Shard

CHUNK_BYTES = 8 << 20
"""The train stream gathers about this many bytes of (decoded) batches at once (`train_chunks`)."""
MAX_CHUNK_STEPS = 64
Transform = Callable[[Batch, np.random.Generator, slice, int], Batch]
"""`(batch, rng, rows, global_batch_size) -> batch`: a train-time augmentation. `rng` is
`indices.batch_rng(seed, step)`; the transform draws for all `global_batch_size` rows and applies
the draws of `rows` (this rank's rows), so the result does not depend on the ranks."""


@dataclasses.dataclass(frozen=True)
class Normalise:
    """How stored uint8 pixels become model inputs: float32 `(pixels / divisor - mean) / std`.

    Splits keep the pixels as uint8 (a quarter of the float32 memory, and a quarter of the bytes
    each gather moves) and a whole chunk of batches is decoded at once. `numpy` here and the
    torch stream (`algoperf.torch.workload.tensor_train_batches`) run the same four float32
    operations in the same order, each correctly rounded, so both give the same bits
    (tests/test_decode.py checks every pixel value on every channel).
    """

    mean: np.ndarray
    """float32, broadcastable against one example (a scalar, or per channel, e.g. [C, 1, 1])."""
    std: np.ndarray
    """float32, the same shape as `mean`."""
    divisor: float = 255.0

    def __post_init__(self):
        for name in ("mean", "std"):
            value = getattr(self, name)
            if not isinstance(value, np.ndarray) or value.dtype != np.float32:
                raise ValueError(f"Normalise.{name} must be a float32 numpy array, got {value!r}.")

    def numpy(self, pixels: np.ndarray) -> np.ndarray:
        out = pixels.astype(np.float32)  # a new array: the in-place steps never touch the split
        out /= np.float32(self.divisor)
        out -= self.mean
        out /= self.std
        return out


@dataclasses.dataclass(frozen=True)
class ArraySplit:
    """One split held in memory: arrays with the same first dimension, stored as `decode` says.

    `take` gives model-ready rows (each `decode[key]` applied); `take_stored` the stored rows.
    """

    arrays: Mapping[str, np.ndarray]
    decode: Mapping[str, Normalise] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        sizes = {len(a) for a in self.arrays.values()}
        if len(sizes) != 1:
            raise ValueError(f"ArraySplit: arrays have different lengths {sorted(sizes)}.")
        unknown = set(self.decode) - set(self.arrays)
        if unknown:
            raise ValueError(
                f"ArraySplit: decode names arrays it does not hold: {sorted(unknown)}."
            )

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def take_stored(self, indices: np.ndarray) -> Batch:
        # ndarray.take, not np.take: the function is a Python wrapper around the method, and
        # this runs in timed steps.
        return {key: array.take(indices, axis=0) for key, array in self.arrays.items()}

    def decoded(self, stored: Batch) -> Batch:
        """Stored rows -> model-ready rows (keys without a decoder pass as they are)."""
        return {
            key: self.decode[key].numpy(value) if key in self.decode else value
            for key, value in stored.items()
        }

    def take(self, indices: np.ndarray) -> Batch:
        return self.decoded(self.take_stored(indices))

    def decoded_row_bytes(self) -> int:
        """Bytes of one model-ready example (decoded arrays count as float32)."""
        return sum(
            array[:1].size * 4 if key in self.decode else array[:1].nbytes
            for key, array in self.arrays.items()
        )

    def subset(self, num_examples: int, seed: int) -> ArraySplit:
        """A fixed random subset (the eval_train split); the whole split if it is smaller."""
        if num_examples >= len(self):
            return self
        rows = index_rules.eval_train_indices(len(self), num_examples, seed)
        return ArraySplit(self.take_stored(rows), self.decode)


@dataclasses.dataclass(frozen=True)
class ChunkPlan:
    """Which examples make this rank's rows of `steps` consecutive train batches."""

    indices: np.ndarray
    """int64 example indices, `steps * rows` long: batch `first_step + i` is rows
    `i * rows : (i + 1) * rows`."""
    steps: int
    rows: int
    """Rows of each batch (the local batch size)."""
    first_step: int


@dataclasses.dataclass(frozen=True)
class Chunk:
    """This rank's rows of `steps` consecutive train batches, in their stored form."""

    arrays: Batch
    """Stored arrays (`ArraySplit.take_stored`) plus float32 `weights`, `steps * rows` long."""
    steps: int
    rows: int
    """Rows of each batch (the local batch size)."""
    first_step: int


def steps_per_chunk(split: ArraySplit, local_batch_size: int) -> int:
    """How many batches `train_chunks` gathers at once: ~CHUNK_BYTES of model-ready rows."""
    batch_bytes = local_batch_size * max(1, split.decoded_row_bytes())
    return max(1, min(MAX_CHUNK_STEPS, CHUNK_BYTES // batch_bytes))


def chunk_plans(
    split: ArraySplit,
    global_batch_size: int,
    *,
    seed: int,
    shard: Shard | None = None,
    start_step: int = 0,
) -> Iterator[ChunkPlan]:
    """This rank's share of each global batch from batch `start_step`, as example indices,
    `steps_per_chunk` batches at a time (infinite; nothing is dropped).

    Batches follow `global_batch_indices`. A framework gathers a plan's rows in one go
    (`train_chunks` in numpy; `algoperf.torch.chunks.tensor_train_batches` in torch).
    """
    shard = shard or Shard()
    rows = shard.rows(global_batch_size)
    local_size = rows.stop - rows.start
    chunk_steps = steps_per_chunk(split, local_size)
    runs = index_rules.index_runs(
        len(split), chunk_steps * global_batch_size, seed=seed,
        start=start_step * global_batch_size,
    )  # fmt: skip
    step = start_step
    for indices in runs:
        if shard.count > 1:  # this rank's rows of each global batch in the run
            indices = indices.reshape(chunk_steps, global_batch_size)[:, rows].reshape(-1)
        yield ChunkPlan(indices, chunk_steps, local_size, step)
        step += chunk_steps


def train_chunks(
    split: ArraySplit,
    global_batch_size: int,
    *,
    seed: int,
    shard: Shard | None = None,
    start_step: int = 0,
) -> Iterator[Chunk]:
    """The rows of each `chunk_plans` plan, gathered in their stored form.

    This runs inside timed steps (docs/rules.md, "Each step"): one gather for ~CHUNK_BYTES of
    batches, then each step is a view of its slice, instead of a gather, a decode and three
    tensor wraps per step (scripts/bench_dataloader.py). Every chunk is a new array, so nothing
    a caller keeps is ever overwritten (a kept batch keeps its chunk alive).
    """
    for plan in chunk_plans(
        split, global_batch_size, seed=seed, shard=shard, start_step=start_step
    ):
        arrays = split.take_stored(plan.indices)
        arrays["weights"] = np.ones(len(plan.indices), np.float32)
        yield Chunk(arrays, plan.steps, plan.rows, plan.first_step)


def train_batches(
    split: ArraySplit,
    global_batch_size: int,
    *,
    seed: int,
    shard: Shard | None = None,
    transform: Transform | None = None,
    start_step: int = 0,
) -> Iterator[Batch]:
    """An infinite stream of this rank's model-ready share of each global batch (numpy).

    The batches of `train_chunks`, decoded a chunk at a time; `transform` (augmentation) gets
    `indices.batch_rng(seed, step)` and this rank's rows, so the stream is deterministic per seed
    and the same for any number of ranks.
    """
    shard = shard or Shard()
    rows = shard.rows(global_batch_size)
    for chunk in train_chunks(
        split, global_batch_size, seed=seed, shard=shard, start_step=start_step
    ):
        arrays = split.decoded(chunk.arrays)
        for offset in range(chunk.steps):
            start = offset * chunk.rows
            batch = {key: array[start : start + chunk.rows] for key, array in arrays.items()}
            if transform is not None:
                rng = index_rules.batch_rng(seed, chunk.first_step + offset)
                batch = transform(batch, rng, rows, global_batch_size)
            yield batch


def eval_batches(
    split: ArraySplit, global_batch_size: int, *, shard: Shard | None = None
) -> Iterator[Batch]:
    """One pass over a split in fixed-size global batches; the last is zero-padded.

    `weights` is 1 on real rows and 0 on padding (`indices.eval_batch_indices`), so every example
    counts exactly once across ranks and the shapes never change (no recompilation for a short
    last batch).
    """
    for rows in index_rules.eval_batch_indices(len(split), global_batch_size, shard):
        weights = index_rules.valid_mask(rows)
        batch = split.take(np.where(weights > 0, rows, 0))
        if not weights.all():
            for array in batch.values():
                array[weights == 0] = 0
        batch["weights"] = weights
        yield batch


class ArrayPipeline(InputPipeline):
    """The data protocol for datasets held in memory as `ArraySplit`s.

    A subclass implements `load_splits(data_dir) -> {"train", "validation", "test"}` and
    `fake_batch`, and may set `train_transform` (an augmentation; without one, the train stream
    takes the chunked fast path of `train_chunks` in PyTorch).
    """

    train_transform: Transform | None = None
    data_source: str = "full"
    """What `load` loaded: "full" (the workload's dataset from the data dir), or, set by a
    pipeline that falls back, what it loaded instead and why (docs/data.md, "Data source")."""

    def load(self, data_dir: str) -> dict[str, ArraySplit]:
        return self.load_splits(data_dir)

    def load_splits(self, data_dir: str) -> dict[str, ArraySplit]:
        raise NotImplementedError

    def train_batches(self, dataset, global_batch_size, *, seed, shard, start_step=0):
        transform = type(self).train_transform  # a plain function, not bound to the pipeline
        return train_batches(
            dataset["train"], global_batch_size, seed=seed, shard=shard,
            transform=transform, start_step=start_step,
        )  # fmt: skip

    def eval_batches(
        self, dataset, split, global_batch_size, *, seed, shard, num_eval_train_examples
    ):
        check_split(split)
        if split == "eval_train":
            source = dataset["train"].subset(num_eval_train_examples, seed)
        else:
            source = dataset[split]
        return eval_batches(source, global_batch_size, shard=shard)

    def train_chunks(self, dataset, global_batch_size, *, seed, shard, start_step=0):
        if type(self).train_transform is not None:
            return None
        split = dataset["train"]
        plans = chunk_plans(split, global_batch_size, seed=seed, shard=shard, start_step=start_step)
        return split, plans
