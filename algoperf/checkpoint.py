"""Resumable trial state: model, optimizer, model state, RNG, data position, clock, eval history.

A checkpoint is a folder `trial_<k>/checkpoint_<global_step>/` holding the framework's state
(written by the backend: `state.pt`, or the orbax folder `state/`) and `loop.json` (everything
else). It is written into a temporary folder and renamed into place, and `loop.json` is written
last, so a folder without a readable `loop.json` is never taken for a checkpoint. Older
checkpoints are removed after the new one is in place. A save the file system refuses (full,
read-only, no permission) leaves no temporary folder and raises a one-line `StorageError`.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any

from algoperf import logs
from algoperf.errors import StorageError
from algoperf.loop import LoopState

PREFIX = "checkpoint_"
LOOP_FILE = "loop.json"
LOW_SPACE_BYTES = 1 << 20
"""Free space below which a failed save is reported as a full disk: torch.save reports one as
a RuntimeError ("basic_ios::clear: iostream error", "unexpected pos"), never as ENOSPC."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says what to do."""


@dataclasses.dataclass
class Meta:
    """Facts a resumed trial must share with the one that wrote the checkpoint."""

    workload: str
    framework: str
    benchmark_version: str
    tuning_ruleset: str
    run_seed: int
    trial_seed: int
    global_batch_size: int
    batches_consumed: int
    """Training batches taken from the input queue so far (the data position)."""
    saved_at: float
    """Wall time of the save; a resume shifts absolute times by the time spent stopped."""


def save(trial_dir: pathlib.Path, backend, variables, state: LoopState, meta: Meta) -> pathlib.Path:
    """Write a checkpoint of the current step atomically; returns its folder.

    Raises:
      StorageError: the file system refused; no temporary folder is left behind.
    """
    final = trial_dir / f"{PREFIX}{state.global_step}"
    try:
        tmp = pathlib.Path(tempfile.mkdtemp(dir=trial_dir, prefix=".checkpoint_tmp_"))
    except OSError as error:
        raise logs.storage_error(error, final, "writing checkpoint") from None
    try:
        os.chmod(tmp, logs.dir_mode())  # mkdtemp's 0700 would hide it from others
        backend.save_state(tmp, variables)
        payload = {"loop_state": dataclasses.asdict(state), "meta": dataclasses.asdict(meta)}
        with open(tmp / LOOP_FILE, "w") as handle:
            json.dump(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException as error:
        full = _disk_full(error, tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise StorageError(
                f"no space left on device writing checkpoint {final}: free space, or pass "
                "--save_checkpoints false, or choose another --experiment_dir"
            ) from None
        if isinstance(error, OSError) and not isinstance(error, StorageError):
            raise logs.storage_error(error, final, "writing checkpoint") from None
        raise
    for old in trial_dir.glob(f"{PREFIX}*"):
        if old != final and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return final


def _disk_full(error: BaseException, folder: pathlib.Path) -> bool:
    """Whether a failed save ran out of space (checked before its partial files are removed)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if not isinstance(error, OSError | RuntimeError):
        return False
    try:
        return shutil.disk_usage(folder).free < LOW_SPACE_BYTES
    except OSError:
        return False


def latest(trial_dir: pathlib.Path) -> pathlib.Path | None:
    """The newest complete checkpoint folder of a trial, if any."""
    candidates = []
    for folder in trial_dir.glob(f"{PREFIX}*"):
        suffix = folder.name[len(PREFIX) :]
        if folder.is_dir() and suffix.isdigit() and (folder / LOOP_FILE).exists():
            candidates.append((int(suffix), folder))
    return max(candidates)[1] if candidates else None


def read(folder: pathlib.Path) -> tuple[LoopState, Meta]:
    """The loop state and meta of a checkpoint folder.

    Raises:
      CheckpointError: the folder is partial or corrupt.
    """
    try:
        payload = json.loads((folder / LOOP_FILE).read_text())
        state = LoopState(**payload["loop_state"])
        meta = Meta(**payload["meta"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"checkpoint {folder} is corrupt or partial ({type(error).__name__}: {error}); "
            "delete that folder to restart the trial from its previous checkpoint or from step 0."
        ) from None
    state.eval_results = [(int(step), dict(result)) for step, result in state.eval_results]
    return state, meta


def check_compatible(meta: Meta, expected: dict[str, Any], folder: pathlib.Path) -> None:
    """Refuse to resume a checkpoint written by a different workload, framework or setup."""
    for key, value in expected.items():
        if getattr(meta, key) != value:
            raise CheckpointError(
                f"checkpoint {folder} was written with {key}={getattr(meta, key)!r}, this run has "
                f"{key}={value!r}; resume with the same settings, or pass --overwrite to start "
                "over (that deletes the old logs)."
            )
