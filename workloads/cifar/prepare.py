"""Download, verify and extract the CIFAR-10 python distribution into `<data_dir>/cifar10/`.

Usage: `algoperf prepare cifar --data_dir ~/data`
(the same as `python -m algoperf.workloads.cifar.prepare --data_dir ~/data`).
The batch files end up in `<data_dir>/cifar10/cifar-10-batches-py/`.
"""

from __future__ import annotations

import pathlib
import sys
import tarfile
from collections.abc import Callable

from algoperf.data import preparing
from algoperf.data.download import fetch

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE = "cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"  # published by the dataset's authors
BATCHES_DIR = "cifar-10-batches-py"
BATCH_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")


def _check_member(member: tarfile.TarInfo, archive: pathlib.Path) -> None:
    path = pathlib.PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts or member.name.startswith(("/", "\\")):
        raise ValueError(f"{archive}: refusing to extract {member.name!r} (path leaves the folder)")
    if not (member.isfile() or member.isdir()):
        raise ValueError(f"{archive}: refusing to extract {member.name!r} (not a file or folder)")


def extract(archive: pathlib.Path, target: pathlib.Path) -> None:
    """Extract `archive` into `target`, rejecting absolute paths, `..`, links and devices.

    Raises:
      ValueError: the archive holds a member that would escape `target` or is not a plain file.
    """
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        for member in members:
            _check_member(member, archive)
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: the stdlib's own safety filter
            tar.extractall(target, members=members, filter="data")
        else:  # pragma: no cover - older Pythons; the members were checked above
            tar.extractall(target, members=members)


def missing_files(folder: pathlib.Path) -> list[str]:
    return [name for name in BATCH_FILES if not (folder / name).is_file()]


def prepare(
    data_dir: str | pathlib.Path,
    *,
    timeout_s: float = 60.0,
    log: Callable[[str], None] | None = None,
) -> pathlib.Path:
    """Download (if needed), verify and extract CIFAR-10; returns the batch-file folder.
    `log` (if given) hears of the download and the extraction.

    Raises:
      OSError: the archive could not be downloaded (e.g. no internet).
      ValueError: the archive has the wrong checksum, an unsafe member, or lacks a batch file.
    """
    target = pathlib.Path(data_dir).expanduser() / "cifar10"
    folder = target / BATCHES_DIR
    if not missing_files(folder):
        return folder
    archive = target / ARCHIVE
    if log is not None and not archive.exists():
        log(f"downloading {URL} to {archive}")
    fetch([URL], archive, MD5, timeout_s=timeout_s)
    if log is not None:
        log(f"extracting {archive}")
    extract(archive, target)
    missing = missing_files(folder)
    if missing:
        raise ValueError(
            f"{archive} did not contain {', '.join(missing)} under {BATCHES_DIR}/; delete the "
            "archive and run this command again."
        )
    return folder


def main(argv=None) -> int:
    return preparing.main(
        argv,
        dataset="cifar",
        title="CIFAR-10",
        description=__doc__,
        prepare=lambda args: prepare(args.data_dir, log=preparing.progress),
    )


if __name__ == "__main__":
    sys.exit(main())
