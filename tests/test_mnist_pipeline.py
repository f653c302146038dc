"""MNIST readers on format-exact idx fixture files (written here), the offline fallback, and the
checksummed download helper."""

from __future__ import annotations

import hashlib
import logging
import struct

import data_utils
import numpy as np
import pytest

from algoperf import logs
from algoperf.data.download import fetch
from algoperf.data.sharding import Shard
from algoperf.errors import StorageError
from algoperf.workload_base import SpecWorkload
from algoperf.workloads.mnist import SPEC
from algoperf.workloads.mnist import input_pipeline as mnist


@pytest.fixture
def fixture_dir(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "mnist"
    folder.mkdir()
    train = rng.integers(0, 256, (60, 28, 28))
    mnist.write_idx(folder / "train-images-idx3-ubyte", train, compress=True)
    mnist.write_idx(folder / "train-labels-idx1-ubyte", np.arange(60) % 10, compress=True)
    mnist.write_idx(folder / "t10k-images-idx3-ubyte", rng.integers(0, 256, (12, 28, 28)))
    mnist.write_idx(folder / "t10k-labels-idx1-ubyte", np.arange(12) % 10)
    return tmp_path, train


def load(data_dir, layout="NCHW"):
    return mnist.load_splits(str(data_dir), layout=layout, allow_download=False)


def fallback_warnings(caplog) -> list[str]:
    """The fallback warnings mnist's logger gave."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == mnist.__name__ and "NOT comparable" in record.getMessage()
    ]


def test_reads_idx_files_gz_and_plain(fixture_dir):
    data_dir, train = fixture_dir
    splits = load(data_dir)
    assert (len(splits["train"]), len(splits["validation"]), len(splits["test"])) == (50, 10, 12)
    stored = splits["train"].arrays["inputs"]  # uint8 pixels, decoded as batches are made
    assert stored.dtype == np.uint8 and stored.shape == (50, 1, 28, 28)
    np.testing.assert_array_equal(stored[:, 0], train[:50])
    first = splits["train"].take(np.array([0]))["inputs"][0]
    assert first.shape == (1, 28, 28) and first.dtype == np.float32
    np.testing.assert_allclose(first[0], (train[0] / 255.0 - 0.1307) / 0.3081, rtol=1e-6)
    assert splits["validation"].arrays["targets"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert load(data_dir, "NHWC")["test"].arrays["inputs"].shape == (12, 28, 28, 1)


def test_batches_shard_and_pad(fixture_dir):
    splits = load(fixture_dir[0])
    rank_batches = [
        next(
            data_utils.batches(
                mnist.Pipeline(),
                splits,
                "train",
                8,
                seed=1,
                shard=Shard(r, 2),
                num_eval_train_examples=20,
            )
        )
        for r in range(2)
    ]
    assert rank_batches[0]["inputs"].shape == (4, 1, 28, 28)
    full = next(
        data_utils.batches(
            mnist.Pipeline(), splits, "train", 8, seed=1, shard=Shard(), num_eval_train_examples=20
        )
    )
    np.testing.assert_array_equal(
        np.concatenate([b["targets"] for b in rank_batches]), full["targets"]
    )
    weights = [
        b["weights"].sum()
        for r in range(2)
        for b in data_utils.batches(
            mnist.Pipeline(),
            splits,
            "test",
            8,
            seed=0,
            shard=Shard(r, 2),
            num_eval_train_examples=20,
        )
    ]
    assert sum(weights) == 12  # every test image once, padding weighted 0
    eval_train = list(
        data_utils.batches(
            mnist.Pipeline(),
            splits,
            "eval_train",
            8,
            seed=3,
            shard=Shard(),
            num_eval_train_examples=20,
        )
    )
    assert sum(b["weights"].sum() for b in eval_train) == 20


def test_corrupt_and_missing_files(tmp_path, fixture_dir):
    data_dir, _ = fixture_dir
    bad = tmp_path / "bad-idx"
    bad.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">III", 5, 28, 28) + b"\x00" * 10)
    with pytest.raises(StorageError, match="truncated or corrupt.*delete it and run again"):
        mnist.read_idx(bad)
    bad.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(StorageError, match="bad magic"):
        mnist.read_idx(bad)
    assert mnist.find_files(tmp_path / "nowhere") is None


def test_truncated_gz_file_is_one_line_naming_it(fixture_dir):
    data_dir, _ = fixture_dir
    path = data_dir / "mnist" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(StorageError) as raised:
        load(data_dir)
    message = str(raised.value)
    assert message.startswith(f"{path} is truncated or corrupt") and "\n" not in message
    assert "delete it and run again with --download true" in message
    path.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(StorageError, match="is truncated or corrupt"):
        load(data_dir)


def test_offline_fallback_is_loud_and_deterministic(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        splits = mnist.load_splits(str(tmp_path), layout="NCHW", allow_download=False)
    assert len(fallback_warnings(caplog)) == 1
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [4000, 500, 500]
    again = mnist.fallback_splits("NCHW")
    np.testing.assert_array_equal(splits["test"].arrays["targets"], again["test"].arrays["targets"])
    counts = np.bincount(splits["validation"].arrays["targets"], minlength=10)
    assert counts.min() > 30  # shuffled before splitting: every digit in validation


def test_fetch_checks_md5_and_leaves_nothing_half_written(tmp_path):
    source = tmp_path / "src.bin"
    source.write_bytes(b"hello mnist")
    md5 = hashlib.md5(b"hello mnist").hexdigest()
    target = tmp_path / "out" / "file.bin"
    fetch([source.as_uri()], target, md5)
    assert target.read_bytes() == b"hello mnist"
    other = tmp_path / "out" / "other.bin"
    with pytest.raises(OSError, match="md5"):
        fetch([source.as_uri()], other, "0" * 32)
    assert sorted(p.name for p in other.parent.iterdir()) == ["file.bin"]
    with pytest.raises(OSError, match="could not download"):
        fetch([(tmp_path / "missing").as_uri()], other, md5)


def test_fallback_says_why(tmp_path, monkeypatch, caplog):
    """The warning said "could not be downloaded" even with downloading off."""
    with caplog.at_level(logging.WARNING):
        mnist.load_splits(str(tmp_path / "typo"), layout="NCHW", allow_download=False)
    (message,) = fallback_warnings(caplog)
    assert f"--data_dir {tmp_path / 'typo'} does not exist and downloading is off" in message
    assert "could not be downloaded" not in message
    assert "pass --download true" in message and "algoperf prepare mnist" in message
    caplog.clear()

    def offline(data_dir, timeout_s):
        raise OSError("could not download train-images-idx3-ubyte.gz: no network")

    monkeypatch.setattr("algoperf.workloads.mnist.prepare.prepare", offline)
    with caplog.at_level(logging.WARNING):
        mnist.load_splits(str(tmp_path), layout="NCHW", allow_download=True)
    (message,) = fallback_warnings(caplog)
    assert "no MNIST idx files in" in message and "the download failed (could" in message
    assert "pass --download true" not in message


def stub_workload():
    """A SpecWorkload with the mnist spec and pipeline; model methods are never called."""
    cls = type("Stub", (SpecWorkload,), dict.fromkeys(SpecWorkload.__abstractmethods__))
    return cls(SPEC, pipeline_class=mnist.Pipeline)


def test_metadata_records_the_data_actually_loaded(tmp_path, fixture_dir):
    """meta_data_<p>.json takes every workload property (logs.workload_properties): it said
    num_train_examples 50000 for a run on the 4,000-image fallback sample."""
    workload = stub_workload()
    assert logs.workload_properties(workload)["workload.data_source"] is None  # nothing loaded
    workload.dataset(str(tmp_path / "typo"))
    props = logs.workload_properties(workload)
    assert props["workload.data_source"] == (
        f"fallback sample (4000 train images): --data_dir {tmp_path / 'typo'} does not exist "
        "and downloading is off (--download false)"
    )
    assert props["workload.data_num_train_examples"] == 4000
    assert props["workload.data_num_validation_examples"] == 500
    workload = stub_workload()  # idx files, but not the 60,000: counted and named
    workload.dataset(str(fixture_dir[0]))
    props = logs.workload_properties(workload)
    assert props["workload.data_num_train_examples"] == 50
    assert "with 60 training images, not 60,000" in props["workload.data_source"]
