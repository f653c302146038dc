"""Tiny, format-exact ImageNet fixtures (tests, benchmarks): the JPEG folder tree the input
pipeline reads, and fake copies of the four official archives that `workloads.imagenet.prepare`
reads.

Every image is one flat colour that encodes (split, class, index within class) in 16 levels per
channel, so any crop, flip or resize keeps it and `decode_ids` recovers it from a normalised batch
(JPEG's error on a flat colour is a few levels out of 255; the levels are 16 apart).
"""

from __future__ import annotations

import io
import pathlib
import tarfile

import numpy as np
from PIL import Image

from algoperf.workloads.imagenet import input_pipeline as pipeline

SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}
MAX_CLASSES = MAX_PER_CLASS = 16
_LEVEL, _OFFSET = 16, 8


def wnid(class_index: int) -> str:
    """A fake wnid; sorted wnids follow the class index, as the real ones define it."""
    return f"n{1_000_000 + 37 * class_index:08d}"


def _colour(split: str, class_index: int, index: int) -> tuple[int, int, int]:
    return tuple(_OFFSET + _LEVEL * v for v in (class_index, index, SPLIT_CODES[split]))


def jpeg_bytes(split: str, class_index: int, index: int, size: int) -> bytes:
    """A flat-colour JPEG; the sides vary a little (landscape, portrait, square)."""
    width = size + 6 * (index % 3)
    height = size + 4 * ((index + class_index) % 2)
    image = Image.new("RGB", (width, height), _colour(split, class_index, index))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _check(num_classes: int, *counts: int) -> None:
    if not 0 < num_classes <= MAX_CLASSES or not all(0 < c <= MAX_PER_CLASS for c in counts):
        raise ValueError(f"fixture: at most {MAX_CLASSES} classes and {MAX_PER_CLASS} per class")


def _val_number(class_index: int, index: int) -> int:
    """Validation file numbers interleave the classes, as in the real archive."""
    return 1 + index * MAX_CLASSES + class_index


def make_imagenet_tree(
    root: str | pathlib.Path,
    num_classes: int = 4,
    per_class: int = 3,
    size: int = 40,
    *,
    val_per_class: int = 2,
    v2_per_class: int = 2,
) -> pathlib.Path:
    """Write <root>/imagenet/{train,val}/<wnid>/*.JPEG and <root>/imagenet/imagenet_v2/<i>/*.jpeg.

    Returns the folder to pass as --data_dir (`root`).
    """
    _check(num_classes, per_class, val_per_class, v2_per_class)
    root = pathlib.Path(root)
    base = root / pipeline.DATASET_DIR
    for class_index in range(num_classes):
        for split, folder, count in (
            ("train", base / "train" / wnid(class_index), per_class),
            ("validation", base / "val" / wnid(class_index), val_per_class),
            ("test", base / pipeline.V2_DIR / str(class_index), v2_per_class),
        ):
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                name = _file_name(split, class_index, index)
                (folder / name).write_bytes(jpeg_bytes(split, class_index, index, size))
    return root


def _file_name(split: str, class_index: int, index: int) -> str:
    if split == "train":
        return f"{wnid(class_index)}_{index}.JPEG"
    if split == "validation":
        return f"ILSVRC2012_val_{_val_number(class_index, index):08d}.JPEG"
    return f"{class_index:03d}{index:05d}abcdef.jpeg"


def decode_ids(inputs: np.ndarray) -> np.ndarray:
    """[B, 3] (split code, class, index) of each image of a normalised batch (NCHW or NHWC),
    read from its centre pixel."""
    if inputs.shape[1] == pipeline.NUM_CHANNELS:  # NCHW
        inputs = inputs.transpose(0, 2, 3, 1)
    height, width = inputs.shape[1:3]
    pixels = inputs[:, height // 2, width // 2, :] * pipeline.STD + pipeline.MEAN
    levels = np.rint((pixels * 255.0 - _OFFSET) / _LEVEL).astype(int)
    return levels[:, [2, 0, 1]]


# --- fake official archives (for prepare.py) ------------------------------------------------
def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _tar_bytes(members: dict[str, bytes], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, data in members.items():
            _add(tar, name, data)
    return buffer.getvalue()


def _meta_mat(num_classes: int) -> bytes:
    """A devkit meta.mat: the leaves get ILSVRC2012_IDs in an order that differs from the sorted
    wnids (as in the real file), followed by one non-leaf synset."""
    import scipy.io

    fields = [("ILSVRC2012_ID", object), ("WNID", object), ("words", object)]
    fields.append(("num_children", object))
    synsets = np.zeros((num_classes + 1, 1), dtype=fields)
    for class_index in range(num_classes):
        ilsvrc_id = num_classes - class_index  # reversed
        synsets[class_index, 0] = (
            np.array([[ilsvrc_id]], np.uint16), np.array([wnid(class_index)]),
            np.array([f"class {class_index}"]), np.array([[0]], np.uint8),
        )  # fmt: skip
    synsets[num_classes, 0] = (
        np.array([[num_classes + 1]], np.uint16), np.array(["n09999999"]),
        np.array(["a parent"]), np.array([[num_classes]], np.uint8),
    )  # fmt: skip
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"synsets": synsets})
    return buffer.getvalue()


def make_imagenet_archives(
    folder: str | pathlib.Path,
    num_classes: int = 4,
    per_class: int = 3,
    size: int = 24,
    *,
    val_per_class: int = 2,
    v2_per_class: int = 2,
) -> dict[str, pathlib.Path]:
    """Fake ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar, ILSVRC2012_devkit_t12.tar.gz and
    imagenetv2-matched-frequency.tar.gz in the official formats; returns prepare()'s keyword
    arguments (train_tar, val_tar, devkit, v2_tar)."""
    _check(num_classes, per_class, val_per_class, v2_per_class)
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    class_tars, val_files, v2_files, ground_truth = {}, {}, {}, {}
    for class_index in range(num_classes):
        inner = {
            _file_name("train", class_index, i): jpeg_bytes("train", class_index, i, size)
            for i in range(per_class)
        }
        class_tars[f"{wnid(class_index)}.tar"] = _tar_bytes(inner)
        for index in range(val_per_class):
            name = _file_name("validation", class_index, index)
            val_files[name] = jpeg_bytes("validation", class_index, index, size)
            ground_truth[_val_number(class_index, index)] = num_classes - class_index
        for index in range(v2_per_class):
            name = (
                f"{pipeline.V2_RELEASE_DIR}/{class_index}/{_file_name('test', class_index, index)}"
            )
            v2_files[name] = jpeg_bytes("test", class_index, index, size)
    # The ground truth has one line per validation file number, 1..max (gaps get class 1).
    lines = [str(ground_truth.get(n, 1)) for n in range(1, max(ground_truth) + 1)]
    devkit = {
        "ILSVRC2012_devkit_t12/data/meta.mat": _meta_mat(num_classes),
        "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt": (
            "\n".join(lines) + "\n"
        ).encode(),
    }
    paths = {
        "train_tar": folder / "ILSVRC2012_img_train.tar",
        "val_tar": folder / "ILSVRC2012_img_val.tar",
        "devkit": folder / "ILSVRC2012_devkit_t12.tar.gz",
        "v2_tar": folder / "imagenetv2-matched-frequency.tar.gz",
    }
    paths["train_tar"].write_bytes(_tar_bytes(class_tars))
    paths["val_tar"].write_bytes(_tar_bytes(dict(sorted(val_files.items()))))
    paths["devkit"].write_bytes(_tar_bytes(devkit, "w:gz"))
    paths["v2_tar"].write_bytes(_tar_bytes(v2_files, "w:gz"))
    return paths


# --- the fixture of the registry suite's CLI runs (imagenet_resnet, imagenet_vit) -------------
FIXTURE_CLASSES, FIXTURE_PER_CLASS, FIXTURE_EVAL_PER_CLASS = 4, 3, 2
FIXTURE_SIZES = {
    "validation": FIXTURE_CLASSES * FIXTURE_EVAL_PER_CLASS,
    "test": FIXTURE_CLASSES * FIXTURE_EVAL_PER_CLASS,
}
"""Examples per eval split of `write_fixture`'s tree (eval_train takes all 12 train images)."""


def write_fixture(folder: pathlib.Path) -> pathlib.Path:
    """A 4-class tree of 3 train, 2 validation and 2 ImageNet-v2 images per class; returns the
    --data_dir."""
    return make_imagenet_tree(
        folder, FIXTURE_CLASSES, FIXTURE_PER_CLASS,
        val_per_class=FIXTURE_EVAL_PER_CLASS, v2_per_class=FIXTURE_EVAL_PER_CLASS,
    )  # fmt: skip
