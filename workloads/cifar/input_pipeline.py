"""CIFAR-10 reader (the python distribution, no torchvision/TensorFlow), augmentation, fake_batch.

Splits as upstream (docs/workloads.md): train = the first 45,000 training images, validation =
the last 5,000, test = the 10,000 test images. Pixels are held as uint8 and, as batches are made,
scaled to [0, 1] and normalised per channel with the SPEC mean/std; train batches get pad-4 +
random 32x32 crop + random horizontal flip (PyTorch upstream's augmentation; upstream JAX pads
only 2 px, a quirk).
"""

from __future__ import annotations

import logging
import pathlib
import pickle

import numpy as np

from algoperf.data.arrays import ArrayPipeline, ArraySplit, Normalise
from algoperf.workloads.cifar import SPEC

log = logging.getLogger(__name__)

MEAN = np.asarray(SPEC.train_mean, np.float32)
STD = np.asarray(SPEC.train_stddev, np.float32)
IMAGE_SIZE, NUM_CHANNELS, NUM_CLASSES = 32, 3, 10
PIXELS_PER_IMAGE = NUM_CHANNELS * IMAGE_SIZE * IMAGE_SIZE
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
BATCHES_DIR = "cifar-10-batches-py"
NUM_TRAIN_FILE_IMAGES, NUM_TEST_IMAGES = 50_000, 10_000
# Validation = the last tenth of the 50,000 training images (5,000, as upstream). The same rule
# splits smaller format-exact fixture files (e.g. 100 images -> 90 train / 10 validation).
VALIDATION_FRACTION_DENOMINATOR = 10
PAD = 4
LAYOUTS = ("NCHW", "NHWC")
PREPARE_COMMAND = "algoperf prepare cifar --data_dir DIR"

# The real files are Python-2 pickles of numpy arrays; only these globals may be loaded, so a
# tampered file cannot run code through pickle.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 writes bytes at protocol 2 (re-pickled copies)
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR file")
        return super().find_class(module, name)


def read_batch_file(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch file -> (uint8 images [N, 3072] channel-major, int64 labels [N]).

    Raises:
      ValueError: the file is not a CIFAR-10 python batch (corrupt, truncated, wrong content).
    """
    fix = f"delete it and run `{PREPARE_COMMAND}` again."
    try:
        with open(path, "rb") as handle:
            content = _NumpyOnlyUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"{path}: not a readable CIFAR-10 batch file ({error}); {fix}") from error
    if not isinstance(content, dict) or b"data" not in content or b"labels" not in content:
        raise ValueError(f"{path}: expected a dict with b'data' and b'labels'; {fix}")
    images = np.asarray(content[b"data"])
    labels = np.asarray(content[b"labels"])
    if images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != PIXELS_PER_IMAGE:
        raise ValueError(
            f"{path}: b'data' is {images.dtype} {images.shape}, expected uint8 [N, "
            f"{PIXELS_PER_IMAGE}]; {fix}"
        )
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}: {labels.shape} labels for {len(images)} images (need one int each); {fix}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(f"{path}: labels outside [0, {NUM_CLASSES}); {fix}")
    return images, labels.astype(np.int64)


def find_batches_dir(data_dir: str | pathlib.Path) -> pathlib.Path | None:
    """The folder holding the six batch files, searched in the usual places; None if absent."""
    root = pathlib.Path(data_dir).expanduser()
    candidates = (root, root / "cifar10", root / BATCHES_DIR, root / "cifar10" / BATCHES_DIR)
    for folder in candidates:
        if all((folder / name).is_file() for name in (*TRAIN_FILES, TEST_FILE)):
            return folder
    return None


NORMALISE = {
    "NCHW": Normalise(MEAN[:, None, None], STD[:, None, None]),
    "NHWC": Normalise(MEAN, STD),
}
"""Pixels -> model inputs per layout; the splits hold uint8 and the streams decode a chunk at a
time (a quarter of the float32 memory: the train split is 138 MB, not 553 MB, per process)."""


def shaped(images_uint8: np.ndarray, layout: str) -> np.ndarray:
    """uint8 [N, 3072] (channel-major) -> uint8 [N, 3, 32, 32] or [N, 32, 32, 3], contiguous."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
    images = images_uint8.reshape(-1, NUM_CHANNELS, IMAGE_SIZE, IMAGE_SIZE)
    if layout == "NHWC":
        images = images.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images)


def normalise(images_uint8: np.ndarray, layout: str) -> np.ndarray:
    """uint8 [N, 3072] (channel-major) -> float32 [N, 3, 32, 32] or [N, 32, 32, 3], normalised."""
    return NORMALISE[layout].numpy(shaped(images_uint8, layout))


def splits_from_dir(folder: pathlib.Path, layout: str) -> dict[str, ArraySplit]:
    """Read the six batch files in `folder` into train / validation / test splits."""
    parts = [read_batch_file(folder / name) for name in TRAIN_FILES]
    train_images = np.concatenate([images for images, _ in parts])
    train_labels = np.concatenate([labels for _, labels in parts])
    test_images, test_labels = read_batch_file(folder / TEST_FILE)
    num_validation = len(train_images) // VALIDATION_FRACTION_DENOMINATOR
    num_train = len(train_images) - num_validation
    if num_train < 1 or num_validation < 1 or len(test_images) < 1:
        raise ValueError(
            f"{folder}: {len(train_images)} training and {len(test_images)} test images are too "
            f"few to split; run `{PREPARE_COMMAND}` to get the real dataset."
        )
    if len(train_images) != NUM_TRAIN_FILE_IMAGES or len(test_images) != NUM_TEST_IMAGES:
        log.warning(
            "CIFAR-10 in %s holds %d training and %d test images, not %d and %d: using %d train / "
            "%d validation / %d test. Results are NOT comparable with the benchmark.",
            folder, len(train_images), len(test_images), NUM_TRAIN_FILE_IMAGES, NUM_TEST_IMAGES,
            num_train, num_validation, len(test_images),
        )  # fmt: skip
    images, decode = shaped(train_images, layout), {"inputs": NORMALISE[layout]}
    return {
        "train": ArraySplit(
            {"inputs": images[:num_train], "targets": train_labels[:num_train]}, decode
        ),
        "validation": ArraySplit(
            {"inputs": images[num_train:], "targets": train_labels[num_train:]}, decode
        ),
        "test": ArraySplit({"inputs": shaped(test_images, layout), "targets": test_labels}, decode),
    }


def load_splits(data_dir: str, *, layout: str, allow_download: bool) -> dict[str, ArraySplit]:
    """CIFAR-10 from `data_dir` (downloaded first if allowed).

    Raises:
      FileNotFoundError: the batch files are not there (the message says where and how to get them).
      ValueError: a batch file is corrupt.
    """
    folder = find_batches_dir(data_dir)
    why = "downloading is off (--download false)"
    if folder is None and allow_download:
        from algoperf.workloads.cifar.prepare import prepare

        try:
            prepare(data_dir)
            why = "the download left no batch files"
        except (OSError, ValueError) as error:
            why = f"the download failed ({error})"
        folder = find_batches_dir(data_dir)
    if folder is None:
        files = ", ".join((*TRAIN_FILES, TEST_FILE))
        raise FileNotFoundError(
            f"CIFAR-10 not found under {data_dir} and {why}: expected the python distribution's "
            f"folder {BATCHES_DIR}/ ({files}) in DIR, DIR/cifar10 or DIR/{BATCHES_DIR}. Get it "
            f"with `{PREPARE_COMMAND}`."
        )
    return splits_from_dir(folder, layout)


def random_crop_and_flip(
    batch: dict[str, np.ndarray],
    rng: np.random.Generator,
    rows: slice | None = None,
    global_batch_size: int | None = None,
) -> dict:
    """Pad 4 px, take a random 32x32 crop and flip half the images horizontally, in one gather.

    The offsets and flips are drawn for all `global_batch_size` rows of the global batch and
    `rows` (this rank's) are applied (`algoperf.data.arrays.Transform`: the same augmentation on
    any number of ranks); by default the batch is the whole global batch. The padding is black
    in pixel space ((0 - mean) / std after normalisation), as torchvision's
    `RandomCrop(32, padding=4)` before `Normalize` in upstream's PyTorch pipeline.
    """
    images = batch["inputs"]
    rows = rows if rows is not None else slice(0, len(images))
    global_batch_size = global_batch_size or len(images)
    channels_last = images.shape[-1] == NUM_CHANNELS  # NHWC; NCHW ends with the width, 32
    hw_images = images if channels_last else images.transpose(0, 2, 3, 1)  # a view, no copy
    size = hw_images.shape[0]
    fill = (0.0 - MEAN) / STD
    padded = np.empty((size, IMAGE_SIZE + 2 * PAD, IMAGE_SIZE + 2 * PAD, NUM_CHANNELS), np.float32)
    padded[...] = fill
    padded[:, PAD:-PAD, PAD:-PAD, :] = hw_images
    top = rng.integers(0, 2 * PAD + 1, global_batch_size)[rows]
    left = rng.integers(0, 2 * PAD + 1, global_batch_size)[rows]
    flip = (rng.random(global_batch_size) < 0.5)[rows]
    offsets = np.arange(IMAGE_SIZE)
    rows = top[:, None] + offsets  # [B, 32]
    cols = left[:, None] + np.where(flip[:, None], offsets[::-1], offsets)  # [B, 32]
    cropped = padded[np.arange(size)[:, None, None], rows[:, :, None], cols[:, None, :]]
    if not channels_last:
        cropped = cropped.transpose(0, 3, 1, 2)
    return {**batch, "inputs": np.ascontiguousarray(cropped)}


class Pipeline(ArrayPipeline):
    """CIFAR-10 as the data protocol: in-memory splits, train batches cropped and flipped."""

    train_transform = staticmethod(random_crop_and_flip)

    def load_splits(self, data_dir: str) -> dict[str, ArraySplit]:
        return load_splits(data_dir, layout=self.layout, allow_download=self.allow_download)

    def fake_batch(self, batch_size: int, *, seed: int = 0) -> dict[str, np.ndarray]:
        return fake_batch(batch_size, layout=self.layout, seed=seed)


def fake_batch(batch_size: int, *, layout: str = "NCHW", seed: int = 0) -> dict[str, np.ndarray]:
    """A batch with the real shapes and dtypes (random pixels and labels), for tests."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(batch_size, PIXELS_PER_IMAGE), dtype=np.uint8)
    return {
        "inputs": normalise(images, layout),
        "targets": rng.integers(0, NUM_CLASSES, size=batch_size).astype(np.int64),
        "weights": np.ones(batch_size, np.float32),
    }
