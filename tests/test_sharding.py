"""Rank sharding of the in-memory streams (algoperf/data): every example once per epoch across
ranks, disjoint rank rows, determinism per seed, exact resume, eval counted once; the prefetch
thread. No processes."""

from __future__ import annotations

import gc
import itertools
import math
import threading

import numpy as np
import pytest

from algoperf.data import arrays
from algoperf.data.arrays import ArraySplit, eval_batches, train_batches
from algoperf.data.indices import epoch_order, global_batch_indices
from algoperf.data.prefetch import Prefetcher
from algoperf.data.sharding import Shard

NUM_EXAMPLES = 103  # prime: the global batch never divides it, so batches straddle epochs
GLOBAL_BATCH = 8
STEPS_PER_EPOCH = math.ceil(NUM_EXAMPLES / GLOBAL_BATCH)
TWO_RANKS = (Shard(0, 2), Shard(1, 2))


def make_split(num_examples: int = NUM_EXAMPLES) -> ArraySplit:
    ids = np.arange(num_examples)
    return ArraySplit({"inputs": ids[:, None].astype(np.float32) * [1.0, -1.0], "targets": ids})


def add_noise(batch, rng: np.random.Generator, rows: slice, global_batch_size: int):
    """An augmentation that draws from its generator (for every row of the global batch, keeping
    this rank's: `arrays.Transform`), so resume must restore the rng too."""
    noise = rng.random((global_batch_size, *batch["inputs"].shape[1:]))[rows]
    return {**batch, "inputs": batch["inputs"] + noise}


def take(stream, steps: int) -> list[dict[str, np.ndarray]]:
    return list(itertools.islice(stream, steps))


def global_ids(seed: int, steps: int, start_step: int = 0) -> np.ndarray:
    """The example ids of `steps` global batches, rebuilt from both ranks' shares in row order."""
    split = make_split()
    streams = [
        train_batches(split, GLOBAL_BATCH, seed=seed, shard=shard, start_step=start_step)
        for shard in TWO_RANKS
    ]
    per_rank = [take(stream, steps) for stream in streams]
    return np.concatenate(
        [np.concatenate([rank[step]["targets"] for rank in per_rank]) for step in range(steps)]
    )


def test_every_example_once_per_epoch_across_ranks():
    # Two epochs' worth of steps: the straddling batch at the end of epoch 0 must hand its
    # last rows to epoch 1, not drop or repeat them.
    ids = global_ids(seed=7, steps=2 * STEPS_PER_EPOCH)
    first, second = ids[:NUM_EXAMPLES], ids[NUM_EXAMPLES : 2 * NUM_EXAMPLES]
    assert sorted(first) == list(range(NUM_EXAMPLES))
    assert sorted(second) == list(range(NUM_EXAMPLES))
    assert not np.array_equal(first, second)  # each epoch is reshuffled


def test_rank_rows_are_disjoint_and_cover_the_global_batch():
    split = make_split()
    whole = take(train_batches(split, GLOBAL_BATCH, seed=3), STEPS_PER_EPOCH)
    ranks = [
        take(train_batches(split, GLOBAL_BATCH, seed=3, shard=shard), STEPS_PER_EPOCH)
        for shard in TWO_RANKS
    ]
    for step in range(STEPS_PER_EPOCH):
        rank0, rank1 = ranks[0][step]["targets"], ranks[1][step]["targets"]
        assert len(rank0) == len(rank1) == GLOBAL_BATCH // 2
        # Rank r holds rows [r * 4, r * 4 + 4) of the one-process global batch.
        np.testing.assert_array_equal(np.concatenate([rank0, rank1]), whole[step]["targets"])
        if step < STEPS_PER_EPOCH - 1:  # inside one epoch no id can repeat
            assert not set(rank0) & set(rank1)


def test_stream_is_deterministic_per_seed_and_differs_across_seeds():
    steps = 2 * STEPS_PER_EPOCH
    np.testing.assert_array_equal(global_ids(seed=11, steps=steps), global_ids(11, steps))
    assert not np.array_equal(global_ids(seed=11, steps=steps), global_ids(12, steps))


@pytest.mark.parametrize("start_step", [1, STEPS_PER_EPOCH - 1, STEPS_PER_EPOCH, 30])
@pytest.mark.parametrize("shard", TWO_RANKS, ids=["rank0", "rank1"])
def test_start_step_continues_the_uninterrupted_stream(start_step, shard):
    split = make_split()
    kwargs = dict(seed=5, shard=shard, transform=add_noise)
    uninterrupted = take(train_batches(split, GLOBAL_BATCH, **kwargs), start_step + 5)
    resumed = take(train_batches(split, GLOBAL_BATCH, start_step=start_step, **kwargs), 5)
    for expected, actual in zip(uninterrupted[start_step:], resumed):
        assert expected.keys() == actual.keys()
        for key in expected:
            np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


def test_augmented_batches_are_the_same_on_one_and_two_ranks():
    """Augmentation is a function of (seed, step, global row): two ranks' rows, stacked, are the
    one-process batch (docs/data.md)."""
    split = make_split()
    whole = take(train_batches(split, GLOBAL_BATCH, seed=3, transform=add_noise), 14)
    halves = [
        take(train_batches(split, GLOBAL_BATCH, seed=3, shard=shard, transform=add_noise), 14)
        for shard in TWO_RANKS
    ]
    for full, part0, part1 in zip(whole, *halves, strict=True):
        for key in full:
            np.testing.assert_array_equal(np.concatenate([part0[key], part1[key]]), full[key])
    assert not np.array_equal(whole[0]["inputs"][:, 0], whole[0]["targets"])  # noise was added


@pytest.mark.parametrize("num_examples", [NUM_EXAMPLES, 8, 5, 1])
def test_every_eval_example_counted_once_across_ranks(num_examples):
    split = make_split(num_examples)
    counts = np.zeros(num_examples)
    num_batches = []
    for shard in TWO_RANKS:
        batches = list(eval_batches(split, GLOBAL_BATCH, shard=shard))
        num_batches.append(len(batches))
        for batch in batches:
            assert len(batch["targets"]) == GLOBAL_BATCH // 2  # fixed shapes, padded
            real = batch["weights"] == 1
            assert set(np.unique(batch["weights"])) <= {0.0, 1.0}
            np.add.at(counts, batch["targets"][real], 1)
            # Padded rows are zeros with weight 0, so weighted sums ignore them.
            assert not batch["inputs"][~real].any() and not batch["targets"][~real].any()
    assert num_batches[0] == num_batches[1] == math.ceil(num_examples / GLOBAL_BATCH)
    np.testing.assert_array_equal(counts, np.ones(num_examples))
    weight_sum = sum(
        b["weights"].sum() for shard in TWO_RANKS for b in eval_batches(split, 8, shard=shard)
    )
    assert weight_sum == num_examples


@pytest.mark.parametrize("num_examples, batch", [(103, 8), (96, 8), (10, 10), (7, 16)])
@pytest.mark.parametrize("start_step", [0, 5, 13])
def test_batch_indices_are_the_epoch_orders_cut_in_batches(num_examples, batch, start_step):
    """The stream is the concatenated epoch permutations, cut every `batch` indices."""
    steps = 30
    epochs = (start_step + steps) * batch // num_examples + 1
    flat = np.concatenate([epoch_order(num_examples, 4, epoch) for epoch in range(epochs)])
    stream = global_batch_indices(num_examples, batch, seed=4, start_step=start_step)
    for step, got in zip(range(start_step, start_step + steps), stream):
        np.testing.assert_array_equal(got, flat[step * batch : (step + 1) * batch])


def test_indivisible_batch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"global batch size 8 is not divisible by the 3"):
        Shard(0, 3).local_batch_size(8)
    with pytest.raises(ValueError, match="not divisible"):
        next(train_batches(make_split(), 8, seed=0, shard=Shard(2, 3)))
    with pytest.raises(ValueError, match="index < count"):
        Shard(2, 2)


@pytest.mark.parametrize("chunk_steps", [1, 3, 7, 64])
@pytest.mark.parametrize("start_step", [0, 5, 13])
def test_chunked_gathers_give_each_steps_own_batch(monkeypatch, chunk_steps, start_step):
    # The stream gathers `chunk_steps` batches at once; the batches must be exactly the
    # per-step definition (the rank's rows of each global batch), across chunk boundaries.
    split = make_split()
    row_bytes = 16 + 8  # float64 pair + int64 id
    local = GLOBAL_BATCH // 2
    monkeypatch.setattr(arrays, "CHUNK_BYTES", chunk_steps * local * row_bytes)
    for shard in TWO_RANKS:
        rows = shard.rows(GLOBAL_BATCH)
        per_step = global_batch_indices(NUM_EXAMPLES, GLOBAL_BATCH, seed=4, start_step=start_step)
        stream = train_batches(split, GLOBAL_BATCH, seed=4, shard=shard, start_step=start_step)
        got = take(stream, 30)
        kept = [{key: value.copy() for key, value in batch.items()} for batch in got]
        for batch, indices in zip(got, itertools.islice(per_step, 30)):
            want = split.take(indices[rows])
            np.testing.assert_array_equal(batch["targets"], want["targets"])
            np.testing.assert_array_equal(batch["inputs"], want["inputs"])
            np.testing.assert_array_equal(batch["weights"], np.ones(local, np.float32))
        # Batches a caller keeps are never overwritten by later ones (every chunk is new).
        take(stream, 40)
        for batch, copy in zip(got, kept):
            for key in copy:
                np.testing.assert_array_equal(batch[key], copy[key])


# --- the prefetch thread (used on GPUs to make the next batches while the step runs) ----------
def test_prefetcher_keeps_order_and_converts_in_its_thread():
    threads = set()

    def convert(batch):
        threads.add(threading.get_ident())
        return {key: value * 1 for key, value in batch.items()}

    split = make_split()
    expected = take(train_batches(split, GLOBAL_BATCH, seed=2, shard=TWO_RANKS[1]), 30)
    prefetched = Prefetcher(
        train_batches(split, GLOBAL_BATCH, seed=2, shard=TWO_RANKS[1]), convert, depth=3
    )
    for want, got in zip(expected, take(prefetched, 30)):
        np.testing.assert_array_equal(got["targets"], want["targets"])
    assert threads and threading.get_ident() not in threads
    prefetched.close()
    assert not prefetched._thread.is_alive()
    with pytest.raises(StopIteration):
        next(prefetched)


def test_prefetcher_ends_with_its_source_and_reraises_errors():
    assert list(Prefetcher(iter(range(5)))) == [0, 1, 2, 3, 4]

    def failing():
        yield 1
        raise FileNotFoundError("shard missing")

    prefetched = Prefetcher(failing())
    assert next(prefetched) == 1
    with pytest.raises(FileNotFoundError, match="shard missing"):
        next(prefetched)
    with pytest.raises(ValueError, match="depth"):
        Prefetcher(iter(()), depth=0)


def test_abandoned_prefetcher_stops_its_thread():
    prefetched = Prefetcher(itertools.count(), depth=1)
    next(prefetched)
    thread = prefetched._thread
    del prefetched
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()
