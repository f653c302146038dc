"""ImageNet-2012 (train, validation) and ImageNet-v2 (test) from JPEG folders, without TensorFlow.

The dataset-level pipeline of imagenet_resnet and imagenet_vit (both SPECs say
`dataset="imagenet"`; the registry finds this module through that field). Layout (what
`prepare.py` builds; upstream's PyTorch layout `imagenet/pytorch/{train,val}` is found too):

  <data_dir>/imagenet/train/<wnid>/*.JPEG         1,281,167 images, 1,000 class folders
  <data_dir>/imagenet/val/<wnid>/*.JPEG           50,000 images
  <data_dir>/imagenet/imagenet_v2/<0..999>/*.jpeg 10,000 images (matched-frequency; folder = class)

Class index = position of the wnid among the sorted train folders (torchvision's ImageFolder rule,
and the order ImageNet-v2's numbered folders follow). Train: random-resized crop (area 0.08-1,
aspect 3/4-4/3, 10 tries, then a centre crop), bilinear resize, horizontal flip; eval: resize
the shorter side to size/0.875 (256 for 224) and centre-crop; both scale to [0, 1] and normalise
with the ImageNet mean/std (upstream's PyTorch path; docs/rules.md, "ImageNet data").
ImageNet-v2 uses the same eval preprocessing as validation (upstream sends it through its TF
path, a centre crop of the same 0.875 fraction with a bicubic resize).

JPEGs are decoded with PIL in worker processes (`algoperf.data.loader`); each rank reads only
its rows of every global batch. Every random choice is seeded by (seed, step, global row), so the
stream is the same for any number of workers or ranks and resumes exactly from a step. Batches
come back from the workers through shared memory (/dev/shm: ~2 batches per worker in flight, so
containers need a few GB there, e.g. `docker run --shm-size 16g`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import pathlib
from collections.abc import Callable

import numpy as np
from PIL import Image

from algoperf.data import indices as index_rules
from algoperf.data import loader
from algoperf.data.pipeline import InputPipeline, PipelineOptions, check_split, whole_number_option
from algoperf.data.sharding import Shard

log = logging.getLogger(__name__)

IMAGE_SIZE = 224
NUM_CLASSES = 1000
NUM_CHANNELS = 3
# Per channel, on pixels scaled to [0, 1] (both SPECs' train_mean / train_stddev).
MEAN = np.asarray((0.485, 0.456, 0.406), np.float32)
STD = np.asarray((0.229, 0.224, 0.225), np.float32)
# Eval resizes the shorter side to image_size / 0.875 (224 -> 256), then centre-crops.
CENTER_CROP_FRACTION = 0.875
CROP_AREA = (0.08, 1.0)
CROP_ASPECT = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 10
EXPECTED_COUNTS = {"train": 1_281_167, "validation": 50_000, "test": 10_000}
DATASET_DIR = "imagenet"
SPLIT_DIRS = {"train": "train", "validation": "val"}
V2_DIR = "imagenet_v2"
V2_RELEASE_DIR = "imagenetv2-matched-frequency-format-val"  # the folder the v2 tarball holds
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
LAYOUTS = ("NCHW", "NHWC")
PREPARE_COMMAND = (
    "algoperf prepare imagenet --data_dir DIR --archive_dir "
    "FOLDER_WITH_THE_ILSVRC2012_AND_IMAGENETV2_TARBALLS"
)


# --- file lists ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ImageFiles:
    """One split on disk: paths relative to `root` (a compact bytes array) and class indices."""

    root: str
    paths: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, index: int) -> str:
        return os.path.join(self.root, self.paths[index].decode())


def _images_in(folder: pathlib.Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(
            e.name
            for e in entries
            if e.is_file()
            and e.name.lower().endswith(IMAGE_SUFFIXES)
            and not e.name.startswith(".")
        )


def _class_folders(folder: pathlib.Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def list_split(folder: pathlib.Path, class_index: dict[str, int]) -> ImageFiles:
    """Every image in `folder/<class>/`, labelled by `class_index[<class>]`.

    Raises:
      ValueError: a class folder that `class_index` does not know.
    """
    paths, labels = [], []
    for name in _class_folders(folder):
        if name not in class_index:
            raise ValueError(
                f"{folder}/{name}: not one of the {len(class_index)} classes of the train split; "
                f"remove it or rebuild the folders with `{PREPARE_COMMAND}`."
            )
        files = _images_in(folder / name)
        paths += [f"{name}/{file}" for file in files]
        labels += [class_index[name]] * len(files)
    return ImageFiles(str(folder), np.asarray(paths, dtype=np.bytes_), np.asarray(labels, np.int64))


def find_root(data_dir: str | os.PathLike) -> pathlib.Path | None:
    """The folder holding `train/` and `val/`, searched in the usual places; None if absent."""
    base = pathlib.Path(data_dir).expanduser()
    for root in (base / DATASET_DIR, base, base / DATASET_DIR / "pytorch", base / "pytorch"):
        if all((root / name).is_dir() for name in SPLIT_DIRS.values()):
            return root
    return None


def find_v2_folder(root: pathlib.Path, imagenet_v2_data_dir: str | None) -> pathlib.Path | None:
    """The ImageNet-v2 folder of numbered class folders: the one given, or beside train/."""
    given = pathlib.Path(imagenet_v2_data_dir).expanduser() if imagenet_v2_data_dir else None
    candidates = [given, given / V2_RELEASE_DIR] if given else []
    candidates += [root / V2_DIR, root / V2_RELEASE_DIR, root.parent / V2_DIR]
    for folder in candidates:
        if folder.is_dir() and (folder / "0").is_dir():
            return folder
    return None


def list_v2(folder: pathlib.Path) -> ImageFiles:
    """ImageNet-v2 as released: folders `0` .. `999` named by class index.

    Raises:
      ValueError: a folder whose name is not a class index.
    """
    names = _class_folders(folder)
    bad = [n for n in names if not (n.isdigit() and 0 <= int(n) < NUM_CLASSES)]
    if bad:
        raise ValueError(
            f"{folder}: ImageNet-v2 class folders must be named 0..{NUM_CLASSES - 1}, found "
            f"{bad[:3]}; pass the folder that holds them with --imagenet_v2_data_dir."
        )
    return list_split(folder, {name: int(name) for name in names})


# --- preprocessing (one image; PIL) --------------------------------------------------------
def load_rgb(path: str) -> Image.Image:
    """Decode an image file (JPEG, also CMYK/greyscale or a PNG under a .JPEG name) as RGB.

    Raises:
      ValueError: the file is not a readable image.
    """
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(
            f"{path}: not a readable image ({error}); re-extract it (`{PREPARE_COMMAND}`)."
        ) from error


def random_resized_crop_box(
    width: int, height: int, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """(left, top, crop_width, crop_height): a random area fraction in CROP_AREA and aspect
    ratio in CROP_ASPECT (log-uniform); after CROP_ATTEMPTS misses, the largest centred crop
    whose aspect ratio lies in CROP_ASPECT."""
    area = width * height
    log_low, log_high = math.log(CROP_ASPECT[0]), math.log(CROP_ASPECT[1])
    for _ in range(CROP_ATTEMPTS):
        target_area = area * rng.uniform(*CROP_AREA)
        aspect = math.exp(rng.uniform(log_low, log_high))
        crop_width = round(math.sqrt(target_area * aspect))
        crop_height = round(math.sqrt(target_area / aspect))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = int(rng.integers(0, height - crop_height + 1))
            left = int(rng.integers(0, width - crop_width + 1))
            return left, top, crop_width, crop_height
    aspect = width / height
    if aspect < CROP_ASPECT[0]:
        crop_width, crop_height = width, round(width / CROP_ASPECT[0])
    elif aspect > CROP_ASPECT[1]:
        crop_width, crop_height = round(height * CROP_ASPECT[1]), height
    else:
        crop_width, crop_height = width, height
    return (width - crop_width) // 2, (height - crop_height) // 2, crop_width, crop_height


# (PIL image, rng) -> PIL image, run after the crop and flip (imagenet_vit: RandAugment).
Augment = Callable[[Image.Image, np.random.Generator], Image.Image]
# (batch, seed, step) -> batch, run on each stacked train batch (imagenet_vit: mixup).
Mixup = Callable[[dict, int, int], dict]


def train_image(
    image: Image.Image, size: int, rng: np.random.Generator, augment: Augment | None = None
) -> np.ndarray:
    """Random-resized crop to size x size (bilinear), a random horizontal flip, then `augment`
    (if any) with the same rng: uint8 HWC."""
    left, top, crop_width, crop_height = random_resized_crop_box(*image.size, rng)
    box = (left, top, left + crop_width, top + crop_height)
    image = image.resize((size, size), Image.Resampling.BILINEAR, box=box)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if augment is not None:
        image = augment(image, rng)
    return np.asarray(image, np.uint8)


def eval_image(image: Image.Image, size: int) -> np.ndarray:
    """Resize the shorter side to size / 0.875 (bilinear), centre-crop size x size: uint8 HWC."""
    resized_short = round(size / CENTER_CROP_FRACTION)
    width, height = image.size
    if width <= height:
        new_width, new_height = resized_short, int(resized_short * height / width)
    else:
        new_width, new_height = int(resized_short * width / height), resized_short
    if (new_width, new_height) != (width, height):
        image = image.resize((new_width, new_height), Image.Resampling.BILINEAR)
    top = int(round((new_height - size) / 2.0))
    left = int(round((new_width - size) / 2.0))
    return np.asarray(image.crop((left, top, left + size, top + size)), np.uint8)


def normalise(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 [..., H, W, 3] -> float32 scaled to [0, 1], minus the mean, over the std."""
    images = images_uint8.astype(np.float32) / 255.0
    images -= MEAN
    images /= STD
    return images


# --- decoding and batch keys (run inside the loader's workers) ------------------------------
class DecodedImages:
    """The `decode` of `algoperf.data.loader.worker_batches`: key `index` (eval; -1 = padding)
    or `(index, step, row)` (train) -> one example dict (train examples also carry their "step",
    for a per-batch mixup)."""

    def __init__(
        self, files: ImageFiles, image_size: int, *, train: bool, seed: int = 0,
        augment: Augment | None = None,
    ):  # fmt: skip
        self.files, self.image_size, self.train, self.seed = files, image_size, train, seed
        self.augment = augment

    def __len__(self) -> int:
        return len(self.files)

    def __call__(self, key) -> dict:
        if self.train:
            index, step, row = key
            rng = index_rules.example_rng(self.seed, step, row)
            image = load_rgb(self.files.path(index))
            pixels = train_image(image, self.image_size, rng, self.augment)
            return {
                "inputs": normalise(pixels),
                "targets": self.files.labels[index],
                "weights": np.float32(1.0),
                "step": step,
            }
        if key < 0:  # padding row of the last eval batch
            size = self.image_size
            return {
                "inputs": np.zeros((size, size, NUM_CHANNELS), np.float32),
                "targets": np.int64(0),
                "weights": np.float32(0.0),
            }
        pixels = eval_image(load_rgb(self.files.path(key)), self.image_size)
        return {
            "inputs": normalise(pixels),
            "targets": self.files.labels[key],
            "weights": np.float32(1.0),
        }


class TrainBatches:
    """This rank's rows of every global train batch from `start_step` on (an endless sampler)."""

    def __init__(
        self, num_examples: int, global_batch_size: int, seed: int, shard: Shard, start_step: int
    ):
        self.num_examples, self.global_batch_size = num_examples, global_batch_size
        self.seed, self.shard, self.start_step = seed, shard, start_step

    def __iter__(self):
        rows = np.arange(self.global_batch_size)[self.shard.rows(self.global_batch_size)]
        steps = index_rules.global_batch_indices(
            self.num_examples, self.global_batch_size, seed=self.seed, start_step=self.start_step
        )
        for step, indices in enumerate(steps, start=self.start_step):
            yield [(int(indices[row]), step, int(row)) for row in rows]


class Collate:
    """Stack examples into a batch in the model's layout, then apply `mixup(batch, seed, step)`
    (train only)."""

    def __init__(self, layout: str, mixup: Mixup | None = None, seed: int = 0):
        self.layout, self.mixup, self.seed = layout, mixup, seed

    def __call__(self, examples: list[dict]) -> dict:
        inputs = np.stack([e["inputs"] for e in examples])
        if self.layout == "NCHW":
            inputs = np.ascontiguousarray(inputs.transpose(0, 3, 1, 2))
        batch = {
            "inputs": inputs,
            "targets": np.asarray([e["targets"] for e in examples], np.int64),
            "weights": np.asarray([e["weights"] for e in examples], np.float32),
        }
        if self.mixup is not None:
            batch = self.mixup(batch, self.seed, int(examples[0]["step"]))
        return batch


# --- splits and batches ----------------------------------------------------------------------
@dataclasses.dataclass
class ImageNetSplits:
    """The file lists of the train and validation splits (the test split is listed on first
    use, from the folder the pipeline's `extra_data_dir` names or the usual places)."""

    root: pathlib.Path
    train: ImageFiles
    validation: ImageFiles
    _tests: dict = dataclasses.field(default_factory=dict)

    def test(self, imagenet_v2_data_dir: str | None) -> ImageFiles:
        """ImageNet-v2, listed once per folder.

        Raises:
          FileNotFoundError: no ImageNet-v2 folder was found.
        """
        if imagenet_v2_data_dir not in self._tests:
            folder = find_v2_folder(self.root, imagenet_v2_data_dir)
            if folder is None:
                where = imagenet_v2_data_dir or f"{self.root / V2_DIR}"
                raise FileNotFoundError(
                    f"ImageNet-v2 (the test split) not found in {where}: expected class folders "
                    f"0..999 there; build them with `{PREPARE_COMMAND}` or pass "
                    "--imagenet_v2_data_dir."
                )
            self._tests[imagenet_v2_data_dir] = list_v2(folder)
            _warn_if_not_full(folder, "test", len(self._tests[imagenet_v2_data_dir]))
        return self._tests[imagenet_v2_data_dir]


def _warn_if_not_full(folder: pathlib.Path, split: str, count: int) -> None:
    if count != EXPECTED_COUNTS[split]:
        log.warning(
            "ImageNet %s in %s holds %d images, not %d: results are NOT comparable with the "
            "benchmark.", split, folder, count, EXPECTED_COUNTS[split],
        )  # fmt: skip


def load_splits(data_dir: str) -> ImageNetSplits:
    """List the train and validation images under `data_dir` (ImageNet cannot be downloaded).

    Raises:
      FileNotFoundError: no train/ and val/ folders (the message says where and how to build them).
      ValueError: an empty split or a validation class that train lacks.
    """
    root = find_root(data_dir)
    if root is None:
        raise FileNotFoundError(
            f"ImageNet not found under {data_dir}: expected {DATASET_DIR}/train/<wnid>/*.JPEG and "
            f"{DATASET_DIR}/val/<wnid>/*.JPEG there; build them with `{PREPARE_COMMAND}`."
        )
    classes = _class_folders(root / SPLIT_DIRS["train"])
    if not 0 < len(classes) <= NUM_CLASSES:
        raise ValueError(
            f"{root / 'train'}: {len(classes)} class folders, expected 1..{NUM_CLASSES}; "
            f"rebuild it with `{PREPARE_COMMAND}`."
        )
    class_index = {name: index for index, name in enumerate(classes)}
    files = {split: list_split(root / name, class_index) for split, name in SPLIT_DIRS.items()}
    for split, split_files in files.items():
        if not len(split_files):
            raise ValueError(
                f"{root / SPLIT_DIRS[split]}: no images; rebuild it with `{PREPARE_COMMAND}`."
            )
        _warn_if_not_full(root, split, len(split_files))
    return ImageNetSplits(root, files["train"], files["validation"])


def eval_train_subset(files: ImageFiles, num_examples: int, seed: int) -> ImageFiles:
    """The eval_train subset of the train files (`indices.eval_train_indices`)."""
    if num_examples >= len(files):
        return files
    rows = index_rules.eval_train_indices(len(files), num_examples, seed)
    return ImageFiles(files.root, files.paths[rows], files.labels[rows])


def fake_batch(
    batch_size: int, *, layout: str = "NCHW", seed: int = 0, image_size: int = IMAGE_SIZE
) -> dict[str, np.ndarray]:
    """A batch with the real dtypes and layout (random pixels and labels), for tests."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (batch_size, image_size, image_size, NUM_CHANNELS), np.uint8)
    inputs = normalise(pixels)
    if layout == "NCHW":
        inputs = np.ascontiguousarray(inputs.transpose(0, 3, 1, 2))
    return {
        "inputs": inputs,
        "targets": rng.integers(0, NUM_CLASSES, size=batch_size).astype(np.int64),
        "weights": np.ones(batch_size, np.float32),
    }


# --- the data protocol -----------------------------------------------------------------------
AUGMENTATIONS = ("crop_flip", "randaugment_mixup")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Options(PipelineOptions):
    """ImageNet's options (`--workload_options KEY=VALUE`; `extra_data_dir` is ImageNet-v2)."""

    image_size: int = IMAGE_SIZE
    """Side of the square model input (224; tests use a few dozen pixels)."""
    num_workers: int | None = None
    """Decoding processes per rank (default: the cores split among local ranks; 0 decodes in
    the training process)."""
    augmentation: str = "crop_flip"
    """Train augmentation: `crop_flip` (random-resized crop + flip: imagenet_resnet) or
    `randaugment_mixup` (then RandAugment per image and mixup per batch: imagenet_vit)."""

    def __post_init__(self):
        object.__setattr__(
            self, "image_size", whole_number_option("image_size", self.image_size, 1)
        )
        if self.num_workers is not None:
            workers = whole_number_option("num_workers", self.num_workers, 0)
            object.__setattr__(self, "num_workers", workers)
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(
                f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got "
                f"{self.augmentation!r}."
            )


class Pipeline(InputPipeline):
    """ImageNet as the data protocol: JPEGs decoded in worker processes, each rank its rows."""

    Options = Options

    def _augmentation(self) -> tuple[Augment | None, Mixup | None]:
        if self.options.augmentation == "crop_flip":
            return None, None
        from algoperf.workloads.imagenet import (
            augment,  # module-level functions: picklable to workers
        )

        return augment.rand_augment, augment.mixup_batch

    def load(self, data_dir: str) -> ImageNetSplits:
        return load_splits(data_dir)

    def train_batches(self, dataset, global_batch_size, *, seed, shard, start_step=0):
        files, (per_image, mixup) = dataset.train, self._augmentation()
        sampler = TrainBatches(len(files), global_batch_size, seed, shard, start_step)
        images = DecodedImages(
            files, self.options.image_size, train=True, seed=seed, augment=per_image
        )
        collate = Collate(self.layout, mixup, seed)
        return self._batches(images, sampler, collate)

    def eval_batches(
        self, dataset, split, global_batch_size, *, seed, shard, num_eval_train_examples
    ):
        check_split(split)
        if split == "eval_train":
            files = eval_train_subset(dataset.train, num_eval_train_examples, seed)
        elif split == "validation":
            files = dataset.validation
        else:
            files = dataset.test(self.options.extra_data_dir)
        keys = [
            rows.tolist()
            for rows in index_rules.eval_batch_indices(len(files), global_batch_size, shard)
        ]
        images = DecodedImages(files, self.options.image_size, train=False)
        return self._batches(images, keys, Collate(self.layout))

    def _batches(self, images: DecodedImages, keys, collate: Collate):
        return loader.worker_batches(
            images, keys, collate, num_workers=self.options.num_workers,
            preload=["PIL.Image", __name__],
        )  # fmt: skip

    def fake_batch(self, batch_size: int, *, seed: int = 0) -> dict[str, np.ndarray]:
        return fake_batch(
            batch_size, layout=self.layout, seed=seed, image_size=self.options.image_size
        )
