"""Build fastMRI knee single-coil's splits from the NYU release archives (no network, no TF).

  algoperf prepare fastmri --data_dir ~/data --archive_dir ~/Downloads
  (the same as `python -m algoperf.workloads.fastmri.prepare ...`)

reads `knee_singlecoil_train.tar.xz` and `knee_singlecoil_val.tar.xz` (downloaded by hand from
fastmri.med.nyu.edu after signing its data-sharing agreement; the test archive is not used) and
writes, under `<data_dir>/fastmri/`:

  knee_singlecoil_train/file*.h5   every train volume (34,742 slices)
  knee_singlecoil_val/file*.h5     every val volume: the first 100 sorted are the validation
                                   split (3,554 slices), the rest the test split (3,581 slices)
  splits.json                      {split: [[relative path, slices], ...]}: what the pipeline reads

Each archive is extracted into a hidden folder (each file written atomically, so a rerun skips
the files already there) that is renamed into place once every volume in it opens and its
slices are counted; `splits.json` is written last, after the slice counts check out. Folders
that upstream's setup script extracted (same names) are used as they are.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import sys
import tarfile
import time
from collections.abc import Callable, Mapping

from algoperf.data import preparing
from algoperf.workloads.fastmri import input_pipeline as pipeline

ARCHIVES = {
    pipeline.TRAIN_DIR: "knee_singlecoil_train.tar.xz",
    pipeline.VAL_DIR: "knee_singlecoil_val.tar.xz",
}
COUNTS_FILE = ".slices.json"  # slices per volume, written into a folder before it is renamed
RELEASE_URL = "https://fastmri.med.nyu.edu (after signing the data-sharing agreement)"


def _safe_name(member: tarfile.TarInfo, archive: pathlib.Path) -> pathlib.PurePosixPath:
    path = pathlib.PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"{archive}: refusing to extract {member.name!r} (path leaves the folder)")
    if member.issym() or member.islnk():
        raise ValueError(f"{archive}: refusing to extract the link {member.name!r}")
    return path


def extract(archive: pathlib.Path, partial: pathlib.Path, log: Callable[[str], None]) -> int:
    """Write every `.h5` of `archive` into `partial/` (flat, each atomically), skipping those
    an interrupted run wrote already; returns the number of volumes."""
    partial.mkdir(parents=True, exist_ok=True)
    count, size, start = 0, 0, time.time()
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                name = _safe_name(member, archive)
                if not member.isfile() or not name.name.endswith(".h5"):
                    continue
                target = partial / name.name
                count += 1
                size += member.size
                if not target.exists():
                    part = partial / f".{name.name}.part"
                    with tar.extractfile(member) as source, open(part, "wb") as out:
                        shutil.copyfileobj(source, out, 1 << 20)
                    os.replace(part, target)
                if count % 50 == 0:
                    log(f"  {archive.name}: {count} volumes, {size / 2**30:.1f} GiB "
                        f"({time.time() - start:.0f} s)")  # fmt: skip
    except (EOFError, tarfile.TarError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise ValueError(
            f"{archive}: not a readable archive ({reason}); it may be truncated: download it again."
        ) from None
    return count


def count_slices(folder: pathlib.Path) -> dict[str, int]:
    """Slices per volume of `folder` (from its COUNTS_FILE when prepare wrote one).

    Raises:
      ValueError: a volume that does not open or lacks what the pipeline reads.
    """
    import h5py

    recorded = folder / COUNTS_FILE
    if recorded.is_file():
        return json.loads(recorded.read_text())
    counts = {}
    for path in sorted(folder.glob("*.h5")):
        try:
            with h5py.File(path, "r") as volume:
                slices = volume["kspace"].shape[0]
                if volume["reconstruction_esc"].shape[0] != slices or "max" not in volume.attrs:
                    raise ValueError("kspace and reconstruction_esc differ in slices, or no max")
        except (OSError, KeyError, ValueError) as error:
            raise ValueError(
                f"{path}: not a fastMRI single-coil volume ({error}); delete it and run this "
                "command again."
            ) from None
        counts[path.name] = int(slices)
    return counts


def prepare_folder(root, name, archive_dir, log) -> dict[str, int]:
    """`<root>/<name>/` extracted from its archive (unless there already): slices per volume."""
    folder = root / name
    if not folder.is_dir():
        archive = archive_dir / ARCHIVES[name]
        partial = root / f".tmp_{name}"
        log(f"extracting {archive} into {folder}")
        volumes = extract(archive, partial, log)
        counts = count_slices(partial)
        if len(counts) != volumes or not counts:
            raise ValueError(f"{archive}: {volumes} volumes extracted, {len(counts)} readable.")
        (partial / COUNTS_FILE).write_text(json.dumps(counts))
        os.rename(partial, folder)  # the folder is complete only under its final name
    counts = count_slices(folder)
    log(f"{folder}: {len(counts)} volumes, {sum(counts.values()):,} slices")
    return counts


def _missing_archives(root: pathlib.Path, archive_dir: pathlib.Path) -> list[str]:
    return [
        str(archive_dir / archive)
        for name, archive in ARCHIVES.items()
        if not (root / name).is_dir() and not (archive_dir / archive).is_file()
    ]


def prepare(
    data_dir: str | os.PathLike,
    archive_dir: str | os.PathLike | None = None,
    *,
    expected_counts: Mapping[str, int] | None = pipeline.EXPECTED_COUNTS,
    num_validation_files: int = pipeline.NUM_VALIDATION_FILES,
    log: Callable[[str], None] = print,
) -> pathlib.Path:
    """Build `<data_dir>/fastmri/` from the archives in `archive_dir` (default: `data_dir`);
    returns that folder. `expected_counts` (slices per split) and `num_validation_files` (the
    val volumes, in sorted order, that form the validation split) are for tests.

    Raises:
      FileNotFoundError: an archive is missing (checked before anything is written).
      ValueError: an archive is unreadable or unsafe, or the slice counts are wrong.
    """
    root = pathlib.Path(data_dir).expanduser() / pipeline.DATASET_DIR
    if (root / pipeline.MANIFEST).is_file():
        log(f"fastMRI is already prepared in {root}")
        return root
    archives = pathlib.Path(archive_dir if archive_dir is not None else data_dir).expanduser()
    missing = _missing_archives(root, archives)
    if missing:
        raise FileNotFoundError(
            f"{' and '.join(missing)} not found: download them from {RELEASE_URL} and pass "
            "their folder as --archive_dir."
        )
    root.mkdir(parents=True, exist_ok=True)
    train = prepare_folder(root, pipeline.TRAIN_DIR, archives, log)
    val = prepare_folder(root, pipeline.VAL_DIR, archives, log)
    val_files = sorted(val)
    listed = {
        "train": [(pipeline.TRAIN_DIR, f) for f in sorted(train)],
        "validation": [(pipeline.VAL_DIR, f) for f in val_files[:num_validation_files]],
        "test": [(pipeline.VAL_DIR, f) for f in val_files[num_validation_files:]],
    }
    slices = {**{(pipeline.TRAIN_DIR, f): n for f, n in train.items()},
              **{(pipeline.VAL_DIR, f): n for f, n in val.items()}}  # fmt: skip
    manifest = {
        split: [[f"{folder}/{name}", slices[(folder, name)]] for folder, name in entries]
        for split, entries in listed.items()
    }
    counts = {split: sum(n for _, n in entries) for split, entries in manifest.items()}
    if expected_counts is not None and counts != dict(expected_counts):
        raise ValueError(
            f"{root}: slices per split {counts} differ from fastMRI's {dict(expected_counts)}; "
            "an archive is incomplete or not the knee single-coil release (delete the folder "
            "and run this command again)."
        )
    partial = root / f".{pipeline.MANIFEST}.part"
    partial.write_text(json.dumps(manifest))
    os.replace(partial, root / pipeline.MANIFEST)
    log(f"wrote {root / pipeline.MANIFEST}: " + ", ".join(f"{s} {n:,}" for s, n in counts.items()))
    return root


def main(argv=None) -> int:
    return preparing.main(
        argv,
        dataset="fastmri",
        title="fastMRI",
        description=__doc__,
        prepare=lambda args: prepare(args.data_dir, args.archive_dir, log=preparing.progress),
        add_arguments=lambda parser: parser.add_argument(
            "--archive_dir",
            "--archive-dir",
            default=None,
            metavar="DIR",
            help="folder holding the two .tar.xz archives (default: DATA_DIR)",
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
