"""fastMRI knee single-coil slices as the data protocol: 4x-undersampled inputs, ESC targets.

The dataset-level pipeline of every fastmri workload (`SPEC.dataset == "fastmri"`). Layout (what
`workloads/fastmri/prepare.py` builds; upstream's folders are the same, plus our manifest):

  <data_dir>/fastmri/knee_singlecoil_train/file*.h5   973 volumes, 34,742 slices
  <data_dir>/fastmri/knee_singlecoil_val/file*.h5     199 volumes, 7,135 slices
  <data_dir>/fastmri/splits.json                      {split: [[relative path, slices], ...]}

Every slice is one example (docs/workloads.md, fastMRI). The manifest names the volumes of each
split in order (train: all train volumes; validation: the first 100 sorted val volumes; test: the
rest) with their slice counts, so loading opens no h5 file. Example construction: a column mask
(the centre floor(0.08 * cols) columns, each other one with probability
(cols/4 - n_low) / (cols - n_low)), masked k-space -> ifftshift -> 2-D IFFT -> fftshift ->
x sqrt(H*W) -> centre crop to the target's shape -> magnitude; normalised by the image's own mean
and std and clipped to [-6, 6]; the target `reconstruction_esc` normalised with the same mean
and std and clipped. Both are then centre-cropped to `image_size` (320, the real targets' size).

Mask seeds: a train example's mask is seeded by `(seed, example index)`, so each slice keeps one
mask for the whole trial (every epoch, any ranks or workers, after a resume), as upstream's
per-example `fold_in` of its shuffle key does; eval_train, being train examples, uses the same
rule; validation and test use seed 0 for every slice, as upstream's PRNGKey(0): the mask depends
only on the slice's width and is the same on every eval.

h5 reading and the FFTs run in the loader's worker processes (`algoperf.data.loader`); each rank
reads only its rows of every global batch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pathlib

import numpy as np

from algoperf.data import indices as index_rules
from algoperf.data import loader
from algoperf.data.pipeline import (
    LAYOUTS,
    InputPipeline,
    PipelineOptions,
    check_split,
    whole_number_option,
)
from algoperf.data.sharding import Shard

log = logging.getLogger(__name__)

DATASET_DIR = "fastmri"
TRAIN_DIR = "knee_singlecoil_train"
VAL_DIR = "knee_singlecoil_val"
MANIFEST = "splits.json"
SPLITS = ("train", "validation", "test")
EXPECTED_COUNTS = {"train": 34_742, "validation": 3_554, "test": 3_581}
NUM_VALIDATION_FILES = 100
IMAGE_SIZE = 320
CENTER_FRACTION = 0.08
ACCELERATION = 4
CLIP = 6.0
EVAL_MASK_SEED = 0
PREPARE_COMMAND = (
    "algoperf prepare fastmri --data_dir DIR --archive_dir "
    "FOLDER_WITH_knee_singlecoil_train.tar.xz_AND_knee_singlecoil_val.tar.xz"
)


# --- one example (pure numpy) ----------------------------------------------------------------
def column_mask(num_columns: int, rng: np.random.Generator) -> np.ndarray:
    """The 4x undersampling mask over k-space columns (bool [cols]): the centre
    floor(0.08 * cols) columns always, every other column with probability
    (cols/4 - n_low) / (cols - n_low), so cols/4 columns are kept on average."""
    num_low = int(math.floor(num_columns * CENTER_FRACTION))
    probability = (num_columns / ACCELERATION - num_low) / (num_columns - num_low)
    mask = rng.random(num_columns) < probability
    start = (num_columns - num_low + 1) // 2
    mask[start : start + num_low] = True
    return mask


def center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """The centred `height` x `width` window of the last two axes."""
    rows, cols = image.shape[-2:]
    if height > rows or width > cols:
        raise ValueError(f"cannot crop {rows}x{cols} to {height}x{width}")
    top, left = (rows - height) // 2, (cols - width) // 2
    return image[..., top : top + height, left : left + width]


def zero_filled_image(kspace: np.ndarray, mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Masked k-space -> ifftshift -> 2-D IFFT -> fftshift -> x sqrt(H*W) -> centre crop to
    `shape` -> magnitude (float32). The fftshift and the scaling are applied to the crop only
    (as indices into the unshifted image), the mask after the ifftshift: the same numbers."""
    import scipy.fft  # ~2x numpy's FFT on complex64 here

    rows, cols = kspace.shape[-2:]
    height, width = shape
    if height > rows or width > cols:
        raise ValueError(f"cannot crop {rows}x{cols} to {height}x{width}")
    shifted = np.fft.ifftshift(kspace, axes=(-2, -1))
    shifted *= np.fft.ifftshift(mask)[None, :]
    image = scipy.fft.ifft2(shifted, overwrite_x=True)
    top, left = (rows - height) // 2, (cols - width) // 2
    crop_rows = (np.arange(top, top + height) - rows // 2) % rows  # fftshift, then crop
    crop_cols = (np.arange(left, left + width) - cols // 2) % cols
    magnitude = np.abs(image[np.ix_(crop_rows, crop_cols)])
    return (magnitude * np.float32(math.sqrt(rows * cols))).astype(np.float32)


def make_example(
    kspace: np.ndarray, target: np.ndarray, rng: np.random.Generator, image_size: int
) -> dict[str, np.ndarray]:
    """One slice's model input and target, normalised by the input's own mean and std."""
    if image_size > min(target.shape):
        raise ValueError(
            f"image_size {image_size} exceeds the {target.shape[0]}x{target.shape[1]} targets; "
            f"set --workload_options image_size={min(target.shape)} or less."
        )
    image = zero_filled_image(kspace, column_mask(kspace.shape[-1], rng), target.shape)
    mean, std = np.float32(image.mean()), np.float32(image.std())
    scale = std if std > 0 else np.float32(1.0)  # an all-constant slice (none in the release)
    inputs = np.clip((image - mean) / scale, -CLIP, CLIP)
    targets = np.clip((target.astype(np.float32) - mean) / scale, -CLIP, CLIP)
    return {
        "inputs": center_crop(inputs, image_size, image_size).astype(np.float32),
        "targets": center_crop(targets, image_size, image_size).astype(np.float32),
        "mean": mean,
        "std": std,
    }


# --- the prepared splits -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Volumes:
    """One split: h5 files (relative to `root`) and the slice offsets of each (an example index
    `i` is slice `i - offsets[v]` of the volume `v` with offsets[v] <= i < offsets[v + 1])."""

    root: str
    files: tuple[str, ...]
    offsets: np.ndarray

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[str, int]:
        volume = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return os.path.join(self.root, self.files[volume]), index - int(self.offsets[volume])

    @classmethod
    def from_list(cls, root: pathlib.Path, entries: list) -> Volumes:
        files = tuple(str(name) for name, _ in entries)
        counts = np.asarray([int(count) for _, count in entries], np.int64)
        return cls(str(root), files, np.r_[0, np.cumsum(counts)].astype(np.int64))


def read_manifest(root: pathlib.Path) -> dict[str, Volumes]:
    """The splits that `prepare` recorded in `<root>/splits.json`."""
    path = root / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"fastMRI not prepared under {root.parent}: {path} is missing; build it with "
            f"`{PREPARE_COMMAND}`."
        )
    try:
        manifest = json.loads(path.read_text())
        splits = {name: Volumes.from_list(root, manifest[name]) for name in SPLITS}
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} is malformed ({error}); rerun `{PREPARE_COMMAND}`.") from None
    return splits


def load_splits(data_dir: str) -> dict[str, Volumes]:
    """The train, validation and test volumes under `data_dir` (checked to exist).

    Raises:
      FileNotFoundError: the manifest or a volume is missing (the message names `prepare`).
      ValueError: the manifest is malformed or a split is empty.
    """
    root = pathlib.Path(data_dir).expanduser() / DATASET_DIR
    splits = read_manifest(root)
    for name, volumes in splits.items():
        if not len(volumes):
            raise ValueError(f"{root / MANIFEST}: the {name} split is empty.")
        missing = [f for f in volumes.files if not (root / f).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{root / missing[0]} ({len(missing)} of the {name} volumes) is missing; "
                f"rebuild it with `{PREPARE_COMMAND}`."
            )
        if len(volumes) != EXPECTED_COUNTS[name]:
            log.warning(
                "fastMRI %s in %s holds %d slices, not %d: results are NOT comparable with the "
                "benchmark.", name, root, len(volumes), EXPECTED_COUNTS[name],
            )  # fmt: skip
    return splits


# --- decoding (runs inside the loader's workers) -------------------------------------------------
class DecodedSlices:
    """The `decode` of `algoperf.data.loader.worker_batches`. A key is `(index,)` for a train
    example (train and eval_train: mask from `(seed, index)`), `index` for validation/test (mask
    from seed 0), or -1 for a padding row. Open h5 files are cached per worker (never
    pickled)."""

    MAX_OPEN_FILES = 8

    def __init__(self, volumes: Volumes, image_size: int, *, seed: int = 0) -> None:
        self.volumes, self.image_size, self.seed = volumes, image_size, seed
        self._open: dict[str, object] = {}

    def __getstate__(self):
        return {**self.__dict__, "_open": {}}

    def _file(self, path: str):
        import h5py

        if path not in self._open:
            if len(self._open) >= self.MAX_OPEN_FILES:
                self._open.pop(next(iter(self._open))).close()
            self._open[path] = h5py.File(path, "r")
        return self._open[path]

    def _rng(self, key) -> tuple[int, np.random.Generator]:
        if isinstance(key, tuple):  # a train example: one mask per slice for the trial
            (index,) = key
            return index, np.random.default_rng([self.seed, index])
        return key, np.random.default_rng(EVAL_MASK_SEED)

    def __call__(self, key) -> dict:
        index, rng = self._rng(key)
        if index < 0:
            return padding_example(self.image_size)
        path, slice_index = self.volumes.locate(index)
        volume = self._file(path)
        example = make_example(
            volume["kspace"][slice_index],
            volume["reconstruction_esc"][slice_index],
            rng,
            self.image_size,
        )
        example["volume_max"] = np.float32(volume.attrs["max"])
        example["weights"] = np.float32(1.0)
        return example


def padding_example(image_size: int) -> dict:
    """A padding row: zeros, std and volume_max 1 (nothing divides by 0), weight 0."""
    zeros = np.zeros((image_size, image_size), np.float32)
    return {
        "inputs": zeros,
        "targets": zeros,
        "mean": np.float32(0.0),
        "std": np.float32(1.0),
        "volume_max": np.float32(1.0),
        "weights": np.float32(0.0),
    }


def collate(examples: list[dict]) -> dict[str, np.ndarray]:
    """Stack examples: inputs/targets [B, H, W]; mean, std, volume_max, weights [B]."""
    return {key: np.stack([e[key] for e in examples]) for key in examples[0]}


class TrainBatches:
    """This rank's keys `(index,)` of every global train batch from `start_step` on."""

    def __init__(self, num_examples, global_batch_size, seed, shard: Shard, start_step):
        self.num_examples, self.global_batch_size = num_examples, global_batch_size
        self.seed, self.shard, self.start_step = seed, shard, start_step

    def __iter__(self):
        rows = np.arange(self.global_batch_size)[self.shard.rows(self.global_batch_size)]
        steps = index_rules.global_batch_indices(
            self.num_examples, self.global_batch_size, seed=self.seed, start_step=self.start_step
        )
        for batch_indices in steps:
            yield [(int(batch_indices[row]),) for row in rows]


def eval_keys(split, num_examples, global_batch_size, shard, eval_train_rows=None) -> list:
    """This rank's keys of each padded global eval batch (see `DecodedSlices`)."""
    batches = []
    for positions in index_rules.eval_batch_indices(num_examples, global_batch_size, shard):
        if split == "eval_train":
            keys = [(int(eval_train_rows[p]),) if p >= 0 else -1 for p in positions]
        else:
            keys = [int(p) for p in positions]
        batches.append(keys)
    return batches


# --- fake batches ----------------------------------------------------------------------------
def fake_batch(
    batch_size: int, *, layout: str = "NCHW", seed: int = 0, image_size: int = IMAGE_SIZE
) -> dict[str, np.ndarray]:
    """A batch with the real keys, shapes and dtypes (random values; `layout` is checked but
    changes nothing: the images carry no channel axis)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
    rng = np.random.default_rng(seed)
    shape = (batch_size, image_size, image_size)
    return {
        "inputs": np.clip(rng.standard_normal(shape), -CLIP, CLIP).astype(np.float32),
        "targets": np.clip(rng.standard_normal(shape), -CLIP, CLIP).astype(np.float32),
        "mean": rng.uniform(1e-5, 1e-4, batch_size).astype(np.float32),
        "std": rng.uniform(1e-5, 1e-4, batch_size).astype(np.float32),
        "volume_max": rng.uniform(5e-4, 2e-3, batch_size).astype(np.float32),
        "weights": np.ones(batch_size, np.float32),
    }


# --- the data protocol ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class Options(PipelineOptions):
    """fastMRI's options (`--workload_options KEY=VALUE`)."""

    image_size: int = IMAGE_SIZE
    """Side of the square input and target, centre-cropped from the 320x320 target window
    (tests use a few dozen pixels)."""
    num_workers: int | None = None
    """Decoding processes per rank (default: the cores split among local ranks; 0 decodes in
    the training process)."""

    def __post_init__(self):
        object.__setattr__(
            self, "image_size", whole_number_option("image_size", self.image_size, 1)
        )
        if self.num_workers is not None:
            workers = whole_number_option("num_workers", self.num_workers, 0)
            object.__setattr__(self, "num_workers", workers)


class Pipeline(InputPipeline):
    """fastMRI as the data protocol: h5 slices read and transformed in worker processes."""

    Options = Options

    def load(self, data_dir: str) -> dict[str, Volumes]:
        return load_splits(data_dir)

    def train_batches(self, dataset, global_batch_size, *, seed, shard, start_step=0):
        volumes = dataset["train"]
        keys = TrainBatches(len(volumes), global_batch_size, seed, shard, start_step)
        return self._batches(DecodedSlices(volumes, self.options.image_size, seed=seed), keys)

    def eval_batches(
        self, dataset, split, global_batch_size, *, seed, shard, num_eval_train_examples
    ):
        check_split(split)
        rows = None
        if split == "eval_train":
            volumes = dataset["train"]
            rows = index_rules.eval_train_indices(len(volumes), num_eval_train_examples, seed)
            count = len(rows)
        else:
            volumes = dataset[split]
            count = len(volumes)
        keys = eval_keys(split, count, global_batch_size, shard, rows)
        return self._batches(DecodedSlices(volumes, self.options.image_size, seed=seed), keys)

    def _batches(self, slices: DecodedSlices, keys):
        return loader.worker_batches(
            slices, keys, collate, num_workers=self.options.num_workers,
            preload=["h5py", __name__],
        )  # fmt: skip

    def fake_batch(self, batch_size: int, *, seed: int = 0) -> dict[str, np.ndarray]:
        return fake_batch(
            batch_size, layout=self.layout, seed=seed, image_size=self.options.image_size
        )
