"""uint8 splits decoded as batches are made: numpy and torch give the same bits, the torch train
stream (decoded and cut a chunk at a time) is the numpy stream, and kept batches stay intact."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch

from algoperf import rng as np_rng
from algoperf import workloads
from algoperf.data import arrays
from algoperf.data.arrays import ArraySplit, Normalise, chunk_plans, train_batches
from algoperf.data.sharding import Shard
from algoperf.torch import chunks as torch_chunks
from algoperf.torch.chunks import normalise_tensor, tensor_train_batches
from algoperf.workloads.cifar import input_pipeline as cifar
from algoperf.workloads.mnist import input_pipeline as mnist

NORMALISERS = {
    "mnist": mnist.NORMALISE,
    "cifar NCHW": cifar.NORMALISE["NCHW"],
    "cifar NHWC": cifar.NORMALISE["NHWC"],
}


def every_pixel_value(normalise: Normalise) -> np.ndarray:
    """uint8 [256, *channel shape]: every value on every channel (the decode is elementwise)."""
    values = np.arange(256, dtype=np.uint8).reshape(256, *[1] * normalise.mean.ndim)
    return np.broadcast_to(values, (256, *normalise.mean.shape)).copy()


@pytest.mark.parametrize("name", NORMALISERS)
def test_numpy_and_torch_decode_give_the_same_bits(name):
    normalise = NORMALISERS[name]
    pixels = every_pixel_value(normalise)
    from_numpy = normalise.numpy(pixels)
    from_torch = normalise_tensor(torch.from_numpy(pixels), normalise).numpy()
    assert from_numpy.dtype == from_torch.dtype == np.float32
    np.testing.assert_array_equal(from_torch.view(np.uint32), from_numpy.view(np.uint32))
    # And the values are the normalisation's (float64 reference, float32 rounding).
    expected = (pixels / 255.0 - normalise.mean.astype(np.float64)) / normalise.std
    np.testing.assert_allclose(from_numpy, expected, rtol=0, atol=2e-6)


def test_decode_leaves_the_stored_pixels_alone():
    split = mnist.image_split(np.full((4, 1, 28, 28), 255, np.uint8), np.arange(4))
    batch = split.take(np.array([2, 0]))
    assert batch["inputs"].dtype == np.float32 and batch["targets"].tolist() == [2, 0]
    np.testing.assert_allclose(batch["inputs"], (1.0 - mnist.MEAN) / mnist.STD, rtol=1e-6)
    assert (split.arrays["inputs"] == 255).all()
    subset = split.subset(2, seed=0)
    assert subset.arrays["inputs"].dtype == np.uint8 and subset.decode == split.decode


def test_bad_decode_settings_are_clear_errors():
    with pytest.raises(ValueError, match="float32 numpy array"):
        Normalise(np.asarray(0.5), np.asarray(0.2, np.float32))
    with pytest.raises(ValueError, match=r"decode names arrays it does not hold: \['pixels'\]"):
        ArraySplit({"inputs": np.zeros((2, 3), np.uint8)}, {"pixels": mnist.NORMALISE})


def small_split(num_examples: int = 103) -> ArraySplit:
    """uint8 images whose pixels encode the example id, so rows are easy to trace."""
    ids = np.arange(num_examples)
    images = np.broadcast_to((ids % 251).astype(np.uint8)[:, None, None, None], (len(ids), 1, 2, 3))
    return mnist.image_split(np.ascontiguousarray(images), ids)


@pytest.mark.parametrize("chunk_steps", [1, 3, 7])
@pytest.mark.parametrize("start_step", [0, 5, 13])
@pytest.mark.parametrize("shard", [Shard(), Shard(0, 2), Shard(1, 2)], ids=str)
def test_tensor_stream_is_the_numpy_stream(monkeypatch, chunk_steps, start_step, shard):
    split = small_split()
    global_batch = 8
    local = shard.local_batch_size(global_batch)
    monkeypatch.setattr(arrays, "CHUNK_BYTES", chunk_steps * local * split.decoded_row_bytes())
    kwargs = dict(seed=4, shard=shard, start_step=start_step)
    plans = chunk_plans(split, global_batch, **kwargs)
    assert next(chunk_plans(split, global_batch, **kwargs)).steps == chunk_steps
    tensors = list(itertools.islice(tensor_train_batches(split, plans, pin=False), 30))
    numpys = list(itertools.islice(train_batches(split, global_batch, **kwargs), 30))
    kept = [{key: value.clone() for key, value in batch.items()} for batch in tensors]
    for got, want in zip(tensors, numpys, strict=True):
        assert got.keys() == want.keys() == {"inputs", "targets", "weights"}
        for key in want:
            assert got[key].dtype == torch.from_numpy(want[key]).dtype, key
            np.testing.assert_array_equal(got[key].numpy(), want[key], err_msg=key)
    # Later chunks never overwrite a batch a caller keeps (a kept chunk is never reused), in
    # either stream.
    kept_numpy = [{key: value.copy() for key, value in batch.items()} for batch in numpys]
    list(itertools.islice(tensor_train_batches(split, plans, pin=False), 40))
    list(itertools.islice(train_batches(split, global_batch, **kwargs), 40))
    for batch, copy in zip(tensors, kept):
        for key in copy:
            assert torch.equal(batch[key], copy[key]), key
    for batch, copy in zip(numpys, kept_numpy):
        for key in copy:
            np.testing.assert_array_equal(batch[key], copy[key], err_msg=key)


def chunk_storage(batch: dict[str, torch.Tensor]) -> int:
    """The address of the memory a batch lives in (all its keys share one chunk buffer)."""
    pointers = {value.untyped_storage().data_ptr() for value in batch.values()}
    assert len(pointers) == 1
    return pointers.pop()


def stream_and_expected(monkeypatch, chunk_steps: int = 3, global_batch: int = 8):
    split = small_split()
    monkeypatch.setattr(
        arrays, "CHUNK_BYTES", chunk_steps * global_batch * split.decoded_row_bytes()
    )
    stream = tensor_train_batches(split, chunk_plans(split, global_batch, seed=2), pin=False)
    return stream, train_batches(split, global_batch, seed=2)


def assert_batch_equal(got: dict[str, torch.Tensor], want: dict[str, np.ndarray]) -> None:
    for key in want:
        np.testing.assert_array_equal(got[key].numpy(), want[key], err_msg=key)


def test_chunk_buffers_are_reused_once_nothing_refers_to_them(monkeypatch):
    stream, expected = stream_and_expected(monkeypatch)
    storages = set()
    for _ in range(60):  # 20 chunks; the caller holds one batch at a time, as the runner does
        batch = next(stream)
        assert_batch_equal(batch, next(expected))
        storages.add(chunk_storage(batch))
    # The chunk being read and the one being filled: two buffers for the whole stream.
    assert len(storages) == 2


def test_a_kept_view_or_array_keeps_its_chunk_from_reuse(monkeypatch):
    stream, expected = stream_and_expected(monkeypatch)
    batch = next(stream)
    next(expected)
    # What a submission might keep of a batch: a view of an input, a numpy array of the targets
    # (neither is the batch's own tensor object, both share the chunk's memory).
    kept_view, kept_array = batch["inputs"][1:3], batch["targets"].numpy()
    copies = kept_view.clone(), kept_array.copy()
    del batch
    held = chunk_storage({"inputs": kept_view})
    for step in range(1, 31):  # the rest of the first chunk, then 9 more
        batch = next(stream)
        assert_batch_equal(batch, next(expected))
        assert (chunk_storage(batch) == held) == (step < 3), step
    assert torch.equal(kept_view, copies[0])
    np.testing.assert_array_equal(kept_array, copies[1])


def test_without_the_storage_count_every_chunk_is_new_memory(monkeypatch):
    monkeypatch.setattr(torch_chunks, "_storage_use_count", None)
    stream, expected = stream_and_expected(monkeypatch)
    firsts = []
    for step in range(30):
        batch = next(stream)
        assert_batch_equal(batch, next(expected))
        if step % 3 == 0:
            firsts.append(batch)  # kept, so no address can be recycled by the allocator
    assert len({chunk_storage(batch) for batch in firsts}) == 10


def test_pinned_chunks_are_left_to_torchs_pinned_allocator(monkeypatch):
    # On CUDA only torch's pinned-memory allocator knows when an asynchronous copy out of a buffer
    # has finished, so the pool never reuses pinned buffers itself (a fake buffer: no GPU here).
    made = []

    class FakeBuffer:
        def __init__(self, layout, steps, rows, *, pin):
            made.append(pin)

        def is_free(self):
            return True

    monkeypatch.setattr(torch_chunks, "ChunkBuffer", FakeBuffer)
    pinned = torch_chunks.ChunkPool({}, 2, 4, pin=True)
    assert pinned.take() is not pinned.take() and made == [True, True]
    plain = torch_chunks.ChunkPool({}, 2, 4, pin=False)
    assert plain.take() is plain.take() and made == [True, True, False]


def mnist_queue_batches(framework_stream: str, steps: int) -> list[dict]:
    warnings.filterwarnings("ignore", message="MNIST not found")
    workload = workloads.load("mnist", "pytorch", allow_download=False)
    data_rng = np_rng.prng_key(0)
    if framework_stream == "queue":
        queue = workload._build_input_queue(data_rng, "train", "/nonexistent", 128)
        return [{k: v.numpy() for k, v in b.items()} for b in itertools.islice(queue, steps)]
    seed = np_rng.seed_from_key(data_rng)
    stream = workload.numpy_batches("train", "/nonexistent", 128, seed, workload.shard)
    return list(itertools.islice(stream, steps))


def test_mnist_torch_queue_takes_the_tensor_stream_with_the_numpy_batches(monkeypatch):
    calls = []
    real = tensor_train_batches

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr("algoperf.torch.chunks.tensor_train_batches", spy)
    queue = mnist_queue_batches("queue", 45)  # 45 steps: across chunks of 20 and epochs of 31
    assert calls == [{"pin": False}]
    for got, want in zip(queue, mnist_queue_batches("numpy", 45), strict=True):
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_cifar_takes_no_chunk_fast_path():
    # Its train batches are augmented per step, so torch takes the numpy stream.
    assert cifar.Pipeline().train_chunks(None, 8, seed=0, shard=Shard()) is None
