"""Download and verify the MNIST distribution files (idx format) into `<data_dir>/mnist/`.

Usage: `algoperf prepare mnist --data_dir ~/data`
(the same as `python -m algoperf.workloads.mnist.prepare --data_dir ~/data`).
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Callable

from algoperf.data import preparing
from algoperf.data.download import fetch

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
# The published md5 sums of the four gzipped idx files.
FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def prepare(
    data_dir: str | pathlib.Path,
    *,
    timeout_s: float = 20.0,
    log: Callable[[str], None] | None = None,
) -> pathlib.Path:
    """Download the missing files to `<data_dir>/mnist` and verify all four; returns that folder.
    `log` (if given) hears of each download.

    Raises:
      OSError: a file could not be downloaded (e.g. no internet).
      ValueError: a file on disk has the wrong checksum.
    """
    target = pathlib.Path(data_dir).expanduser() / "mnist"
    for name, md5 in FILES.items():
        if log is not None and not (target / name).exists():
            log(f"downloading {name} to {target}")
        fetch([mirror + name for mirror in MIRRORS], target / name, md5, timeout_s=timeout_s)
    return target


def main(argv=None) -> int:
    return preparing.main(
        argv,
        dataset="mnist",
        title="MNIST",
        description=__doc__,
        prepare=lambda args: prepare(args.data_dir, log=preparing.progress),
    )


if __name__ == "__main__":
    sys.exit(main())
