"""Where a trial's scalars go besides the CSVs: TensorBoard event files and Weights & Biases.

TensorBoard files are written here without TensorFlow or torch: `Event` protos from the
tensorboard package, framed as TFRecords (length, masked CRC32C, data, masked CRC32C). Only rank 0
writes. A resumed trial cuts the files back to what its checkpoint had seen, so no step is shown
twice (docs/rules.md, "Observability").
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import socket
import struct
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

from algoperf import logs
from algoperf.errors import StorageError

log = logging.getLogger(__name__)

EVENTS_PREFIX = "events.out.tfevents."
"""TensorBoard finds event files by this part of their name."""
MARKS_FILE = ".tensorboard_checkpoints.json"
"""Per checkpointed step: the event file and the byte offset it had reached (for a resume)."""
WANDB_INSTALL = "pip install algoperf[wandb]"


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)  # Castagnoli, reflected
        table.append(crc)
    return tuple(table)


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked checksum (a CRC of data that holds CRCs stays informative)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One TFRecord: little-endian uint64 length, its masked CRC, the data, the data's CRC."""
    length = struct.pack("<Q", len(data))
    return (
        length
        + struct.pack("<I", masked_crc32c(length))
        + data
        + struct.pack("<I", masked_crc32c(data))
    )


def read_records(path: pathlib.Path) -> Iterator[tuple[int, bytes]]:
    """(end offset, data) of each whole record of a TFRecord file; stops at a torn tail."""
    with open(path, "rb") as handle:
        blob = handle.read()
    offset = 0
    while offset + 12 <= len(blob):
        (length,) = struct.unpack_from("<Q", blob, offset)
        end = offset + 12 + length + 4
        if end > len(blob):
            return
        yield end, blob[offset + 12 : offset + 12 + length]
        offset = end


def scalar_values(values: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of `values` as floats (strings and None are left out)."""
    out = {}
    for key, value in values.items():
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, int | float) and not isinstance(value, str):
            out[key] = float(value)
    return out


class EventWriter:
    """A TensorBoard event file in `folder`, written by this process only."""

    _opened = 0

    def __init__(self, folder: pathlib.Path) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
        EventWriter._opened += 1
        stamp = f"{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
        self.path = folder / f"{EVENTS_PREFIX}{stamp}.{EventWriter._opened}"
        try:
            self._file = open(self.path, "ab")  # noqa: SIM115 (closed in close())
        except OSError as error:
            raise logs.storage_error(error, self.path, "writing") from None
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        self.flush()

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        """One event holding every value of `values` as a scalar at `step`."""
        summary = self._summary_pb2.Summary(
            value=[
                self._summary_pb2.Summary.Value(tag=tag, simple_value=value)
                for tag, value in values.items()
            ]
        )
        self._write(self._event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def _write(self, event) -> None:
        try:
            self._file.write(frame(event.SerializeToString()))
        except OSError as error:
            raise logs.storage_error(error, self.path, "writing") from None

    def flush(self) -> int:
        """Writes out what is buffered; returns the file's length (a record boundary)."""
        try:
            self._file.flush()
        except OSError as error:
            raise logs.storage_error(error, self.path, "writing") from None
        return self._file.tell()

    def close(self) -> None:
        if not self._file.closed:
            try:
                self._file.close()
            except OSError as error:
                raise logs.storage_error(error, self.path, "writing") from None


class TensorBoardSink:
    """Scalars into an event file in the trial folder, and where it stood at each checkpoint."""

    def __init__(self, trial_dir: pathlib.Path) -> None:
        self.trial_dir = trial_dir
        self.writer = EventWriter(trial_dir)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        self.writer.scalars(values, step)

    def flush(self) -> None:
        self.writer.flush()

    def checkpointed(self, step: int) -> None:
        """Record the file and offset the checkpoint of `step` corresponds to (before it is
        written: a checkpoint never exists without its mark)."""
        offset = self.writer.flush()
        marks = _read_marks(self.trial_dir)
        marks[str(step)] = [self.writer.path.name, offset]
        logs.write_json(self.trial_dir / MARKS_FILE, marks)

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """Scalars into a Weights & Biases run (`--use_wandb`); WANDB_MODE=offline keeps it local."""

    def __init__(self, *, trial_dir: pathlib.Path, name: str, group: str, tags, config) -> None:
        wandb = import_wandb()
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "algoperf"),
            group=group,
            name=name,
            tags=list(tags),
            config=config,
            dir=str(trial_dir),
            # The run's console stays ours (the progress line rewrites itself on a terminal).
            settings=wandb.Settings(console="off"),
        )

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def flush(self) -> None:
        pass

    def checkpointed(self, step: int) -> None:
        del step

    def close(self) -> None:
        """Finish the run; one closed while an error propagates is marked failed."""
        if self.run is not None:
            self.run.finish(exit_code=1 if sys.exc_info()[0] is not None else 0)
            self.run = None


def import_wandb():
    """The wandb module.

    Raises:
      ValueError: it is not installed (one line naming the extra to install).
    """
    try:
        import wandb
    except ImportError:
        raise ValueError(f"--use_wandb needs the wandb package: {WANDB_INSTALL}") from None
    return wandb


class Sinks:
    """Every sink of a trial (none on ranks other than 0); each call goes to all of them."""

    def __init__(self, sinks=()) -> None:
        self.sinks = list(sinks)
        self._last: dict[str, tuple[int, float]] = {}

    def __bool__(self) -> bool:
        return bool(self.sinks)

    def scalars(self, values: Mapping[str, Any], step: int) -> None:
        """Each numeric value at `step`, less repeats of what a tag already holds at that step
        (the final `score` row repeats the last eval's when training ended with one)."""
        if not self.sinks:
            return
        last = self._last
        values = {
            tag: value
            for tag, value in scalar_values(values).items()
            if last.get(tag) != (step, value)
        }
        last.update((tag, (step, value)) for tag, value in values.items())
        if values:
            for sink in self.sinks:
                sink.scalars(values, step)

    def flush(self) -> None:
        for sink in self.sinks:
            sink.flush()

    def checkpointed(self, step: int) -> None:
        for sink in self.sinks:
            sink.checkpointed(step)

    def close(self) -> None:
        """Close every sink (safe to call twice; the trial's end and its clean-up both do)."""
        sinks, self.sinks = self.sinks, []
        for sink in sinks:
            sink.close()


def event_files(trial_dir: pathlib.Path) -> list[pathlib.Path]:
    """The trial's event files, oldest first (their names start with the creation time)."""
    return sorted(trial_dir.glob(f"{EVENTS_PREFIX}*"))


def _read_marks(trial_dir: pathlib.Path) -> dict[str, list]:
    try:
        return json.loads((trial_dir / MARKS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def clear_events(trial_dir: pathlib.Path) -> None:
    """Delete the event files of a trial that restarts from step 0."""
    for path in [*event_files(trial_dir), trial_dir / MARKS_FILE]:
        path.unlink(missing_ok=True)


def truncate_events(trial_dir: pathlib.Path, step: int) -> None:
    """Cut the event files back to what they held when the checkpoint of `step` was taken.

    With the checkpoint's mark (file, offset), the marked file is truncated there and later files
    are deleted, so scalars the submission logged after the checkpoint at that same step go too.
    Without one (TensorBoard was off then), events after `step` are dropped.
    """
    marks = _read_marks(trial_dir)
    files = event_files(trial_dir)
    mark = marks.get(str(step))
    try:
        if mark is not None and (trial_dir / mark[0]) in files:
            name, offset = mark
            for path in files:
                if path.name > name:
                    path.unlink()
            os.truncate(trial_dir / name, offset)
        else:
            for path in files:
                _drop_after(path, step)
        kept = {key: value for key, value in marks.items() if int(key) <= step}
        if kept != marks:
            logs.write_json(trial_dir / MARKS_FILE, kept)
    except StorageError:
        raise
    except OSError as error:
        raise logs.storage_error(error, trial_dir, "rewriting event files in") from None


def _drop_after(path: pathlib.Path, step: int) -> None:
    """Rewrite `path` without its events after `step` (and without a torn last record)."""
    from tensorboard.compat.proto import event_pb2

    records, size, dropped = [], 0, False
    for end, data in read_records(path):
        size = end
        event = event_pb2.Event.FromString(data)
        if event.step > step:
            dropped = True
        else:
            records.append(data)
    if not dropped and size == path.stat().st_size:
        return
    logs.write_atomically(
        path, lambda handle: handle.write(b"".join(map(frame, records))), binary=True
    )


def wandb_run_args(config, *, trial_index: int, preemption_count: int, extra: Mapping) -> dict:
    """The W&B run of one trial attempt: grouped by experiment and workload, named by trial (a
    resumed attempt is a run of its own, named with its preemption count), tagged with the
    workload, framework and benchmark version; its config holds the flags and `extra`."""
    group = f"{config.resolved_experiment_name}/{config.resolved_workload}_{config.framework}"
    name = f"{group}/trial_{trial_index + 1}"
    if preemption_count:
        name += f" (resumed {preemption_count})"
    flags = {field: getattr(config, field) for field in config.__dataclass_fields__}
    flags["experiment_name"] = config.resolved_experiment_name
    flags["workload"] = config.resolved_workload
    return {
        "name": name,
        "group": group,
        "tags": [config.resolved_workload, config.framework, config.benchmark_version],
        "config": {**flags, **extra},
    }


def open_sinks(
    trial_dir: pathlib.Path,
    *,
    resumed_step: int | None,
    tensorboard: bool,
    wandb_run: Mapping | None = None,
) -> Sinks:
    """Rank 0: the event files of earlier attempts cut back to the checkpoint resumed from (or
    deleted for a restart from step 0), then the sinks asked for."""
    if resumed_step is None:
        clear_events(trial_dir)
    else:
        truncate_events(trial_dir, resumed_step)
    opened = Sinks()
    try:
        if tensorboard:
            opened.sinks.append(TensorBoardSink(trial_dir))
        if wandb_run is not None:
            opened.sinks.append(WandbSink(trial_dir=trial_dir, **wandb_run))
    except BaseException:
        opened.close()
        raise
    return opened
