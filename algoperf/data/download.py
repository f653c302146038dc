"""Download files with a checksum check, atomically (a partial download never looks finished)."""

from __future__ import annotations

import hashlib
import http.client
import os
import pathlib
import urllib.request
from collections.abc import Callable


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


def fetch(
    urls: list[str],
    destination: pathlib.Path,
    md5: str | None,
    *,
    timeout_s: float = 20.0,
    check: Callable[[pathlib.Path], None] | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> None:
    """Download the first URL that works to `destination`, checking its md5 (or, where the
    publisher gives none, `check`, which raises ValueError on a bad file).

    The download goes to `.<name>.partial` beside the destination and is renamed into place only
    once checked, so a partial file never looks finished. An interrupted download continues from
    where it stopped when the server allows (an HTTP Range request); a file that fails its check
    is deleted. `progress(bytes so far, total or None)` is called as data arrives.

    Raises:
      OSError: no URL gave a good file (offline, every mirror failed, or failed its check).
    """
    validate = (lambda path: verify(path, md5)) if md5 is not None else check
    if destination.exists():
        if validate is not None:
            validate(destination)
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.partial")
    errors = []
    for url in urls:
        try:
            _download(url, partial, timeout_s, progress)
        except OSError as error:
            errors.append(f"{url}: {error}")
            continue
        try:
            if validate is not None:
                validate(partial)
        except ValueError as error:  # a bad file: deleted, and the next mirror tried
            partial.unlink(missing_ok=True)
            errors.append(f"{url}: {error}")
            continue
        os.replace(partial, destination)
        return
    raise OSError(
        f"could not download {destination.name} (a rerun continues it): " + "; ".join(errors)
    )


def _download(url: str, partial: pathlib.Path, timeout_s: float, progress) -> None:
    """Append `url`'s bytes to `partial`, continuing from its current size when the server
    honours a Range request (else starting over)."""
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=timeout_s) as source:
        resumed = have and getattr(source, "status", 200) == 206
        if not resumed:
            have = 0
        length = source.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(partial, "ab" if resumed else "wb") as out:
            try:
                while chunk := source.read(1 << 20):
                    out.write(chunk)
                    have += len(chunk)
                    if progress is not None:
                        progress(have, total)
            except http.client.HTTPException as error:  # e.g. IncompleteRead
                raise OSError(f"the connection broke after {have} bytes ({error!r})") from None
    if total is not None and have < total:
        raise OSError(f"the connection closed after {have} of {total} bytes")
