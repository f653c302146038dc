"""Download files with a checksum check, atomically (a partial download never looks finished)."""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import tempfile
import urllib.request


def file_digest(path: pathlib.Path, algorithm: str = "md5") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: pathlib.Path, md5: str) -> None:
    """Raise ValueError when `path` does not have the expected md5."""
    actual = file_digest(path)
    if actual != md5:
        raise ValueError(
            f"{path}: md5 {actual} does not match the expected {md5}; delete the file and "
            "download it again."
        )


def fetch(urls: list[str], destination: pathlib.Path, md5: str, *, timeout_s: float = 20.0) -> None:
    """Download the first URL that works to `destination`, checking its md5.

    Raises:
      OSError: no URL could be downloaded (offline, or every mirror failed).
    """
    if destination.exists():
        verify(destination, md5)
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        fd, tmp_name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as src:
                shutil.copyfileobj(src, out)
            verify(pathlib.Path(tmp_name), md5)
            os.replace(tmp_name, destination)
            return
        except (OSError, ValueError) as error:
            errors.append(f"{url}: {error}")
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
    raise OSError(f"could not download {destination.name}: " + "; ".join(errors))
