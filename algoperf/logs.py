"""The experiment directory in upstream's layout, and the files a trial writes there.

<experiment_dir>/<experiment_name>/<workload>_<framework>/trial_<k>/
  hparams.json  meta_data_<p>.json  flags_<p>.json  eval_measurements.csv  measurements.csv
Only rank 0 writes. JSON files are written atomically; CSV rows are appended (upstream re-reads
and rewrites the whole file on every row) with `\\n` line ends. Files get the modes the umask
allows (0644 under the usual 022), so others on a shared file system can read them. A file-system
failure is a one-line `StorageError` naming the path (docs/rules.md, "Log files").
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import functools
import io
import json
import math
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from algoperf.errors import StorageError

EVAL_FILE = "eval_measurements.csv"
ALL_FILE = "measurements.csv"
COMPLETE_FILE = "trial_complete.json"
"""Written when a trial ends normally; a resumed sweep skips trials that have it."""


def workload_dir(
    experiment_dir: str, experiment_name: str, workload: str, framework: str
) -> pathlib.Path:
    return (
        pathlib.Path(experiment_dir).expanduser().resolve()
        / experiment_name
        / (f"{workload}_{framework}")
    )


LOGS_FIX = "choose another --experiment_dir"
"""What a storage error under the experiment dir suggests last."""


@functools.cache
def umask() -> int:
    """The process umask, read once (from /proc where it can be read without changing it)."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)  # elsewhere: set and restore at once (cached, so done once)
    os.umask(current)
    return current


def file_mode() -> int:
    """What `open()` would give a new file (mkstemp makes 0600 ones)."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    """What `mkdir` would give a new folder (mkdtemp makes 0700 ones)."""
    return 0o777 & ~umask()


def _nearest_existing(path: pathlib.Path) -> pathlib.Path | None:
    """`path` or its closest ancestor that exists."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return None


def storage_error(
    error: OSError, path: str | pathlib.Path, doing: str, *, fix: str = LOGS_FIX
) -> StorageError:
    """`error`, raised while `doing` (e.g. "writing") `path`, as one line saying what to fix."""
    path = pathlib.Path(path)
    code = getattr(error, "errno", None)
    existing = _nearest_existing(path) or path
    if code in (errno.ENOSPC, errno.EDQUOT):
        message = f"no space left on device {doing} {path}: free space or {fix}"
    elif code in (errno.ENOTDIR, errno.EEXIST) and not existing.is_dir():
        message = f"{existing} is a file, not a folder; move it or {fix}"
    elif code in (errno.EACCES, errno.EPERM):
        message = f"{existing} is not writable ({doing} {path}); fix its permissions or {fix}"
    elif code == errno.EROFS:
        message = f"{existing} is on a read-only file system ({doing} {path}); {fix}"
    else:
        message = f"{doing} {path} failed: {error.strerror or error}; check the disk or {fix}"
    return StorageError(message)


def prepare_workload_dir(path: pathlib.Path, *, overwrite: bool, resume: bool) -> None:
    """Create the log folder; refuse an existing one unless asked to overwrite or resume.

    Raises:
      FileExistsError: the folder exists and neither --overwrite nor --resume_last_run was given.
      StorageError: the folder cannot be made or written (a file in the way, no permission, a
        read-only or full file system).
    """
    try:
        holds_logs = path.is_dir() and any(path.iterdir())
    except OSError as error:
        raise storage_error(error, path, "reading") from None
    if holds_logs and not overwrite and not resume:
        raise FileExistsError(
            f"{path} already holds logs; pass --overwrite to delete them, "
            "--resume_last_run to continue them, or choose another --experiment_name."
        )
    try:
        if holds_logs and overwrite:
            shutil.rmtree(path)
        make_dir(path)
        with tempfile.TemporaryFile(dir=path):  # a folder we may enter but not write into
            pass
    except StorageError:
        raise
    except OSError as error:
        raise storage_error(error, path, "creating files in") from None


def make_dir(path: pathlib.Path) -> None:
    """`path.mkdir(parents=True, exist_ok=True)`, a file in the way named as such.

    Raises:
      StorageError: the folder cannot be made.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise storage_error(error, path, "creating") from None


def clear_unfinished_trial(trial_dir: pathlib.Path) -> bool:
    """Remove the logs of a trial that started but did not finish (hparams.json is kept).

    Returns whether there was anything to remove.
    """
    names = [EVAL_FILE, ALL_FILE, COMPLETE_FILE]
    stale = [trial_dir / name for name in names]
    stale += list(trial_dir.glob("meta_data_*.json")) + list(trial_dir.glob("flags_*.json"))
    found = [path for path in stale if path.exists()]
    for path in found:
        path.unlink()
    return any(path.name == EVAL_FILE for path in found)


def truncate_after_step(trial_dir: pathlib.Path, global_step: int) -> None:
    """Drop CSV rows logged after `global_step` (a resumed trial logs them again)."""
    for name in (EVAL_FILE, ALL_FILE):
        path = trial_dir / name
        if not path.exists():
            continue
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            rows = [r for r in reader if int(float(r.get("global_step") or 0)) <= global_step]
        write_atomically(path, functools.partial(_write_csv, columns=columns, rows=rows))


def _write_csv(handle, *, columns: list[str], rows: list[dict]) -> None:
    writer = csv.DictWriter(handle, columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def write_atomically(
    path: pathlib.Path, write: Callable[[Any], None], *, binary: bool = False
) -> None:
    """`write(handle)` into a temp file beside `path`, renamed over it: a reader never sees half
    a file, and a failure leaves neither a temp file nor a changed `path`. The handle is a text
    one, or a bytes one with `binary`.

    Raises:
      StorageError: the file system refused (the message names `path` and what to do).
    """
    make_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as error:
        raise storage_error(error, path, "writing") from None
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", newline="") as handle:
            os.fchmod(fd, file_mode())  # mkstemp's 0600 would hide logs from others
            write(handle)
        os.replace(tmp, path)
    except BaseException as error:
        pathlib.Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and not isinstance(error, StorageError):
            raise storage_error(error, path, "writing") from None
        raise


def write_json(path: pathlib.Path, payload: Any) -> None:
    """Write JSON atomically (`write_atomically`).

    Raises:
      StorageError: the file system refused.
    """

    def dump(handle) -> None:
        json.dump(payload, handle, indent=2, sort_keys=True, default=_json_default)
        handle.write("\n")

    write_atomically(path, dump)


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return str(value)


def _cell(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


class CSVLog:
    """Rows appended to a CSV whose columns are sorted when it is created (as upstream).

    A row with a new key rewrites the file once with the union of columns. Lines end in `\\n`
    (the csv module's default is `\\r\\n`); files with either are read. A row that cannot be
    written (a full disk) is taken back, so the file never ends in half a row.
    """

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.columns: list[str] | None = None
        if path.exists():
            with open(path, newline="") as handle:
                header = next(csv.reader(handle), None)
            self.columns = header or None

    def append(self, row: dict[str, Any]) -> None:
        """Appends one row.

        Raises:
          StorageError: the file system refused (the file is left as it was).
        """
        row = {key: _cell(value) for key, value in row.items()}
        columns = self.columns
        if columns is not None and set(row) - set(columns):
            self._widen(sorted(set(columns) | set(row)), row)
            return
        text = io.StringIO()
        writer = csv.DictWriter(text, columns or sorted(row), restval="", lineterminator="\n")
        if columns is None:
            writer.writeheader()
        writer.writerow(row)
        self._write(text.getvalue(), new=columns is None)
        self.columns = writer.fieldnames

    def _write(self, text: str, *, new: bool) -> None:
        size = 0 if new else self.path.stat().st_size
        try:
            with open(self.path, "w" if new else "a", newline="") as handle:
                handle.write(text)
        except OSError as error:
            try:  # take the half row back (truncating needs no space)
                if new:
                    self.path.unlink(missing_ok=True)
                else:
                    os.truncate(self.path, size)
            except OSError:
                pass
            raise storage_error(error, self.path, "writing") from None

    def _widen(self, columns: list[str], row: dict[str, Any]) -> None:
        """Rewrites the file with `columns` and `row` appended, in one atomic step."""
        with open(self.path, newline="") as handle:
            rows = [*csv.DictReader(handle), row]
        write_atomically(self.path, functools.partial(_write_csv, columns=columns, rows=rows))
        self.columns = columns


class MetricsLogger:
    """What submissions reach as `workload.metrics_logger` (rank 0 only, as upstream).

    Every row also goes to `sinks` (TensorBoard, W&B: `algoperf.sinks.Sinks`), with the CSV
    column names as tags; `finish` closes them.
    """

    def __init__(self, trial_dir: pathlib.Path, preemption_count: int = 0, sinks=None) -> None:
        make_dir(trial_dir)
        self.trial_dir = trial_dir
        self.preemption_count = preemption_count
        self.sinks = sinks
        self._eval = CSVLog(trial_dir / EVAL_FILE)
        self._all = CSVLog(trial_dir / ALL_FILE)

    def append_scalar_metrics(
        self,
        metrics: dict[str, Any],
        global_step: int,
        preemption_count: int | None = None,
        is_eval: bool = False,
    ) -> None:
        row = dict(metrics)
        row["global_step"] = global_step
        row["preemption_count"] = (
            self.preemption_count if preemption_count is None else preemption_count
        )
        self._all.append(row)
        if is_eval:
            self._eval.append(row)
        if self.sinks is not None:
            self.sinks.scalars(metrics, global_step)

    def finish(self) -> None:
        """Upstream's logger API: CSV files are closed after every row; the sinks close here."""
        if self.sinks is not None:
            self.sinks.close()


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=pathlib.Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def system_info() -> dict[str, Any]:
    """Machine, software and git facts recorded in meta_data_<p>.json."""
    info: dict[str, Any] = {
        "os_platform": platform.platform(),
        "python_version": sys.version.split()[0],
        "cpu_model_name": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "git_branch": _git("rev-parse", "--abbrev-ref", "HEAD"),
        "git_commit_hash": _git("rev-parse", "HEAD"),
    }
    try:
        import psutil

        memory = psutil.virtual_memory()
        info["cpu_memory_total_bytes"] = memory.total
        info["cpu_memory_available_bytes"] = memory.available
    except ImportError:
        pass
    for name in ("torch", "jax", "flax", "optax", "numpy"):
        module = sys.modules.get(name)
        if module is not None:
            info[f"{name}_version"] = getattr(module, "__version__", None)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        info["gpu_count"] = torch.cuda.device_count()
        info["gpu_model_name"] = torch.cuda.get_device_name(0)
    return info


def workload_properties(workload) -> dict[str, Any]:
    """Each primitive-valued public workload property, as `workload.<name>` (upstream's keys)."""
    props: dict[str, Any] = {}
    for name in dir(type(workload)):
        if name.startswith("_") or not isinstance(getattr(type(workload), name, None), property):
            continue
        try:
            value = getattr(workload, name)
        except Exception:  # noqa: BLE001 - a property may legitimately raise (e.g. train_mean)
            continue  # upstream records the previous property's value here (a bug)
        if isinstance(value, str | int | float | bool) or value is None:
            props[f"workload.{name}"] = value
        elif hasattr(value, "name") and hasattr(value, "value"):  # enums
            props[f"workload.{name}"] = str(value)
    return props
