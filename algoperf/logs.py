"""The experiment directory in upstream's layout, and the files a trial writes there.

<experiment_dir>/<experiment_name>/<workload>_<framework>/trial_<k>/
  hparams.json  meta_data_<p>.json  flags_<p>.json  eval_measurements.csv  measurements.csv
Only rank 0 writes. JSON files are written atomically; CSV rows are appended (upstream re-reads
and rewrites the whole file on every row).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
from typing import Any

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


def prepare_workload_dir(path: pathlib.Path, *, overwrite: bool, resume: bool) -> None:
    """Create the log folder; refuse an existing one unless asked to overwrite or resume.

    Raises:
      FileExistsError: the folder exists and neither --overwrite nor --resume_last_run was given.
    """
    if path.exists() and any(path.iterdir()):
        if overwrite:
            shutil.rmtree(path)
        elif not resume:
            raise FileExistsError(
                f"{path} already holds logs; pass --overwrite to delete them, "
                "--resume_last_run to continue them, or choose another --experiment_name."
            )
    path.mkdir(parents=True, exist_ok=True)


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
        fd, tmp = tempfile.mkstemp(dir=trial_dir, prefix=f".{name}.")
        with os.fdopen(fd, "w", newline="") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)


def write_json(path: pathlib.Path, payload: Any) -> None:
    """Write JSON atomically (temp file + rename): a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, default=_json_default)
        handle.write("\n")
    os.replace(tmp, path)


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

    A row with a new key rewrites the file once with the union of columns.
    """

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.columns: list[str] | None = None
        if path.exists():
            with open(path, newline="") as handle:
                header = next(csv.reader(handle), None)
            self.columns = header or None

    def append(self, row: dict[str, Any]) -> None:
        row = {key: _cell(value) for key, value in row.items()}
        if self.columns is None:
            self.columns = sorted(row)
            with open(self.path, "w", newline="") as handle:
                csv.DictWriter(handle, self.columns).writeheader()
        elif set(row) - set(self.columns):
            self._widen(sorted(set(self.columns) | set(row)))
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, self.columns, restval="").writerow(row)

    def _widen(self, columns: list[str]) -> None:
        with open(self.path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        with os.fdopen(fd, "w", newline="") as handle:
            writer = csv.DictWriter(handle, columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)
        self.columns = columns


class MetricsLogger:
    """What submissions reach as `workload.metrics_logger` (rank 0 only, as upstream)."""

    def __init__(self, trial_dir: pathlib.Path, preemption_count: int = 0) -> None:
        trial_dir.mkdir(parents=True, exist_ok=True)
        self.trial_dir = trial_dir
        self.preemption_count = preemption_count
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

    def finish(self) -> None:
        """Upstream's logger API; files are closed after every row, nothing to flush."""


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
