"""Build the ImageNet folders the input pipeline reads, from the official tarballs (no network).

  algoperf prepare imagenet --data_dir ~/data --archive_dir ~/Downloads
  (the same as `python -m algoperf.workloads.imagenet.prepare ...`)

reads (names as distributed; each can be given explicitly with --train_tar, --val_tar, --devkit,
--v2_tar):
  ILSVRC2012_img_train.tar          a tar of 1,000 per-class tars (<wnid>.tar)
  ILSVRC2012_img_val.tar            50,000 JPEGs in one folder
  ILSVRC2012_devkit_t12.tar.gz      data/meta.mat (ILSVRC2012_ID -> wnid) and the validation
                                    ground truth (one ILSVRC2012_ID per validation image)
  imagenetv2-matched-frequency.tar.gz   ImageNet-v2, folders 0..999 named by class index
and writes <data_dir>/imagenet/{train,val}/<wnid>/*.JPEG and <data_dir>/imagenet/imagenet_v2/
<0..999>/*.jpeg, then checks the counts (1,281,167 / 50,000 / 10,000). Resumable: a train class
is extracted into a hidden folder and renamed into place when complete; validation and v2 files
are written atomically into a hidden folder renamed into place once the whole split checks out;
a rerun skips what is done.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import shutil
import sys
import tarfile

from algoperf.data import preparing
from algoperf.workloads.imagenet import input_pipeline as pipeline

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
V2_TAR = "imagenetv2-matched-frequency.tar.gz"
DEVKIT_META = "data/meta.mat"
DEVKIT_GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
NUM_CLASSES = pipeline.NUM_CLASSES
EXPECTED_COUNTS = dict(pipeline.EXPECTED_COUNTS)
SPLITS = ("train", "validation", "test")
_VAL_NAME = re.compile(r"^ILSVRC2012_val_(\d{8})\.JPEG$")
_WNID_TAR = re.compile(r"^(n\d{8})\.tar$")
_DONE = ".complete"  # written into a split's folder once its counts check out


def _safe_name(member: tarfile.TarInfo, archive: pathlib.Path) -> pathlib.PurePosixPath:
    path = pathlib.PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"{archive}: refusing to extract {member.name!r} (path leaves the folder)")
    return path


def _write_atomically(source, target: pathlib.Path) -> None:
    """Copy a file object to `target` through a temporary name (a crash leaves no half file)."""
    partial = target.with_name(f".{target.name}.part")
    with open(partial, "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
    os.replace(partial, target)


def _count_images(folder: pathlib.Path) -> int:
    return len(pipeline._images_in(folder))


def _check_counts(folder, split, images, classes, expected_counts, expected_classes, source):
    expected = expected_counts[split]
    if images != expected or classes != expected_classes:
        raise ValueError(
            f"{folder}: {images:,} images in {classes:,} classes after extraction, expected "
            f"{expected:,} in {expected_classes:,}; {source} is incomplete or not the right "
            f"archive (fix it, delete {folder} and run this command again)."
        )


@contextlib.contextmanager
def _reading(archive: pathlib.Path):
    """Turn tarfile's errors about a broken archive into one line that names the file."""
    try:
        yield
    except (EOFError, tarfile.TarError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise ValueError(
            f"{archive}: not a readable archive ({reason}); it may be truncated: download it again."
        ) from None


def _require(path: pathlib.Path | None, what: str) -> pathlib.Path:
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"{what} not found at {path}: download it (image-net.org for ILSVRC2012, the "
            "ImageNetV2 release for v2) and pass its path or --archive_dir."
        )
    return path


# --- train ----------------------------------------------------------------------------------
def extract_class(outer: tarfile.TarFile, member: tarfile.TarInfo, folder: pathlib.Path) -> int:
    """Extract one per-class tar into `folder` (which must not exist yet); returns its count."""
    archive = pathlib.Path(outer.name or "train tar")
    partial = folder.with_name(f".tmp_{folder.name}")
    shutil.rmtree(partial, ignore_errors=True)  # left over from an interrupted run
    partial.mkdir(parents=True)
    count = 0
    with tarfile.open(fileobj=outer.extractfile(member), mode="r|") as inner:
        for item in inner:
            name = _safe_name(item, archive)
            if not item.isfile():
                continue
            with inner.extractfile(item) as source, open(partial / name.name, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
            count += 1
    os.rename(partial, folder)  # the class is complete only once it has its final name
    return count


def prepare_train(train_tar, target, expected_counts, expected_classes) -> None:
    if (target / _DONE).exists():
        return
    target.mkdir(parents=True, exist_ok=True)
    total, classes = 0, 0
    with tarfile.open(train_tar, "r:") as outer:
        for member in outer:
            match = _WNID_TAR.match(member.name)
            if not member.isfile() or match is None:
                raise ValueError(
                    f"{train_tar}: unexpected member {member.name!r} (expected <wnid>.tar per "
                    f"class); is this {TRAIN_TAR}?"
                )
            folder = target / match.group(1)
            if folder.is_dir():  # finished by an earlier run
                total += _count_images(folder)
            else:
                total += extract_class(outer, member, folder)
            classes += 1
    _check_counts(target, "train", total, classes, expected_counts, expected_classes, train_tar)
    (target / _DONE).write_text(f"{total}\n")


# --- validation -----------------------------------------------------------------------------
def read_devkit(devkit: pathlib.Path) -> list[str]:
    """The wnid of every validation image, in file-number order, from the devkit tarball.

    Raises:
      ValueError: the tarball lacks meta.mat or the ground truth, or they disagree.
    """
    import io

    try:
        import scipy.io
    except ImportError:
        raise ValueError(
            "reading the devkit's meta.mat needs scipy: `pip install scipy` (or the `data` "
            "extra: `pip install -e .[data]`)."
        ) from None
    contents = {}
    with tarfile.open(devkit, "r:*") as tar:
        for member in tar:
            for key in (DEVKIT_META, DEVKIT_GROUND_TRUTH):
                if member.isfile() and member.name.endswith(key):
                    contents[key] = tar.extractfile(member).read()
    missing = [key for key in (DEVKIT_META, DEVKIT_GROUND_TRUTH) if key not in contents]
    if missing:
        raise ValueError(f"{devkit}: lacks {', '.join(missing)}; is this {DEVKIT}?")
    synsets = scipy.io.loadmat(io.BytesIO(contents[DEVKIT_META]), squeeze_me=True)["synsets"]
    synsets = synsets.reshape(-1)  # one synset holds no array dimension after squeezing
    wnid_of = {
        int(ilsvrc_id): str(wnid)
        for ilsvrc_id, wnid, children in zip(
            synsets["ILSVRC2012_ID"], synsets["WNID"], synsets["num_children"]
        )
        if int(children) == 0  # the leaves are the 1,000 classes
    }
    try:
        ids = [int(line) for line in contents[DEVKIT_GROUND_TRUTH].decode().split()]
        return [wnid_of[i] for i in ids]
    except (ValueError, KeyError) as error:
        raise ValueError(
            f"{devkit}: the validation ground truth names an unknown class ({error})"
        ) from None


def _extract_flat(archive, mode, partial, folder_of) -> None:
    """Write every file of `archive` to `partial / folder_of(name) / basename`, skipping files an
    interrupted run already wrote (each was written atomically)."""
    partial.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, mode) as tar:
        for member in tar:
            name = _safe_name(member, pathlib.Path(archive))
            if not member.isfile():
                continue
            target = partial / folder_of(name) / name.name
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as source:
                _write_atomically(source, target)


def _finish_split(partial, target, split, source, expected_counts, expected_classes) -> None:
    folders = pipeline._class_folders(partial)
    images = sum(_count_images(partial / name) for name in folders)
    _check_counts(partial, split, images, len(folders), expected_counts, expected_classes, source)
    (partial / _DONE).write_text(f"{images}\n")
    os.rename(partial, target)


def prepare_validation(val_tar, wnids, target, expected_counts, expected_classes) -> None:
    """Sort the flat validation archive into class folders; `wnids` from `read_devkit`."""
    partial = target.with_name(f".tmp_{target.name}")

    def folder_of(name: pathlib.PurePosixPath) -> str:
        match = _VAL_NAME.match(name.name)
        if match is None or not 0 < int(match.group(1)) <= len(wnids):
            raise ValueError(
                f"{val_tar}: unexpected member {str(name)!r} (expected ILSVRC2012_val_<number>"
                f".JPEG with a label in the devkit); is this {VAL_TAR}?"
            )
        return wnids[int(match.group(1)) - 1]

    _extract_flat(val_tar, "r:*", partial, folder_of)
    _finish_split(partial, target, "validation", val_tar, expected_counts, expected_classes)


# --- ImageNet-v2 ----------------------------------------------------------------------------
def prepare_v2(v2_tar, target, expected_counts, expected_classes) -> None:
    if target.is_dir():
        return
    partial = target.with_name(f".tmp_{target.name}")

    def folder_of(name: pathlib.PurePosixPath) -> str:
        label = name.parent.name
        if not (label.isdigit() and 0 <= int(label) < NUM_CLASSES):
            raise ValueError(
                f"{v2_tar}: unexpected member {str(name)!r} (expected <class index>/<file>); is "
                f"this {V2_TAR}?"
            )
        return label

    _extract_flat(v2_tar, "r|*", partial, folder_of)
    _finish_split(partial, target, "test", v2_tar, expected_counts, expected_classes)


# --- entry points ---------------------------------------------------------------------------
def _path(value: str | os.PathLike | None) -> pathlib.Path | None:
    return None if value is None else pathlib.Path(value).expanduser()


def prepare(
    data_dir: str | os.PathLike,
    *,
    train_tar: str | os.PathLike | None = None,
    val_tar: str | os.PathLike | None = None,
    devkit: str | os.PathLike | None = None,
    v2_tar: str | os.PathLike | None = None,
    splits: tuple[str, ...] = SPLITS,
    expected_counts: dict[str, int] | None = None,
    expected_classes: int = NUM_CLASSES,
) -> pathlib.Path:
    """Build `<data_dir>/imagenet/` from the tarballs; returns that folder.

    `expected_counts` and `expected_classes` exist for tests on small fake archives.

    Raises:
      FileNotFoundError: an archive a requested split needs is missing.
      ValueError: an archive holds something unexpected, or a split's counts are wrong.
    """
    counts = {**EXPECTED_COUNTS, **(expected_counts or {})}
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}; choose from {', '.join(SPLITS)}.")
    needed = {"train": (TRAIN_TAR,), "validation": (VAL_TAR, DEVKIT), "test": (V2_TAR,)}
    given = {TRAIN_TAR: train_tar, VAL_TAR: val_tar, DEVKIT: devkit, V2_TAR: v2_tar}
    # Every archive the requested splits need is checked before anything is written.
    archives = {name: _require(_path(given[name]), name) for s in splits for name in needed[s]}
    root = pathlib.Path(data_dir).expanduser() / pipeline.DATASET_DIR
    root.mkdir(parents=True, exist_ok=True)
    if "train" in splits:
        with _reading(archives[TRAIN_TAR]):
            prepare_train(
                archives[TRAIN_TAR], root / pipeline.SPLIT_DIRS["train"], counts, expected_classes
            )
    target = root / pipeline.SPLIT_DIRS["validation"]
    if "validation" in splits and not target.is_dir():
        with _reading(archives[DEVKIT]):
            wnids = read_devkit(archives[DEVKIT])
        with _reading(archives[VAL_TAR]):
            prepare_validation(archives[VAL_TAR], wnids, target, counts, expected_classes)
    if "test" in splits:
        with _reading(archives[V2_TAR]):
            prepare_v2(archives[V2_TAR], root / pipeline.V2_DIR, counts, expected_classes)
    return root


def _add_arguments(parser) -> None:
    parser.add_argument(
        "--archive_dir", "--archive-dir", default=None, metavar="DIR",
        help="folder holding the four archives under their distributed names (default: DATA_DIR)",
    )  # fmt: skip
    for flag, name in (
        ("train_tar", TRAIN_TAR), ("val_tar", VAL_TAR), ("devkit", DEVKIT), ("v2_tar", V2_TAR)
    ):  # fmt: skip
        parser.add_argument(f"--{flag}", default=None, help=f"path of {name}")
    parser.add_argument(
        "--splits", default=",".join(SPLITS), help="comma-separated subset of " + ",".join(SPLITS)
    )


def _prepare(args) -> pathlib.Path:
    folder = pathlib.Path(args.archive_dir or args.data_dir).expanduser()

    def archive(given, name):
        return given if given is not None else folder / name

    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    preparing.progress(f"building {', '.join(splits)} from the archives in {folder}")
    return prepare(
        args.data_dir,
        train_tar=archive(args.train_tar, TRAIN_TAR),
        val_tar=archive(args.val_tar, VAL_TAR),
        devkit=archive(args.devkit, DEVKIT),
        v2_tar=archive(args.v2_tar, V2_TAR),
        splits=splits,
    )


def main(argv=None) -> int:
    return preparing.main(
        argv,
        dataset="imagenet",
        title="ImageNet",
        description=__doc__,
        prepare=_prepare,
        add_arguments=_add_arguments,
    )


if __name__ == "__main__":
    sys.exit(main())
