"""One writer per trial: an OS file lock on `trial_<k>/.lock`, held for the trial's life.

`fcntl.flock` locks belong to the open file: the kernel releases them when the process exits in
any way (a crash, SIGKILL), so a lock file left behind by a dead run is stale and simply taken
over. The file holds the holder's pid, host and start time, which the second writer's error
names. On NFS, Linux maps flock onto NFS byte-range locks, so two nodes see each other's locks.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import socket
import time

from algoperf.errors import StorageError

LOCK_FILE = ".lock"


class TrialBusyError(StorageError):
    """Another process writes the trial folder; the message names it and what to do."""


class TrialLock:
    """The lock of one trial folder (`acquire` creates the folder)."""

    def __init__(self, trial_dir: pathlib.Path) -> None:
        self.trial_dir = trial_dir
        self.path = trial_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> TrialLock:
        """Take the lock or raise TrialBusyError at once (never waits)."""
        self.trial_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(fd)
            os.close(fd)
            raise TrialBusyError(
                f"{self.trial_dir} is being written by another algoperf run ({holder}); wait "
                "for it to end or stop it, then rerun (two runs of one trial would interleave "
                "their rows)."
            ) from None
        except BaseException:
            os.close(fd)
            raise
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Release the lock; a trial folder that holds nothing else is removed with it (a run
        that failed before writing anything leaves no folder to block a rerun)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # no holder named once released
                if [entry.name for entry in self.trial_dir.iterdir()] == [LOCK_FILE]:
                    self.path.unlink()
                    self.trial_dir.rmdir()
            os.close(fd)  # closing the file releases the lock

    def __enter__(self) -> TrialLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _describe(fd: int) -> str:
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        record = {}
    if "pid" not in record:
        return "a process that has not yet written its name"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.get("since", 0)))
    return f"pid {record['pid']} on {record.get('host', '?')}, since {since}"


@contextlib.contextmanager
def all_trials_locked(workload_dir: pathlib.Path):
    """Hold the lock of every existing trial folder of `workload_dir` (for --overwrite, which
    deletes them: a run still writing one of them is refused instead of losing its folder)."""
    locks = []
    try:
        for trial_dir in sorted(workload_dir.glob("trial_*")):
            if trial_dir.is_dir():
                locks.append(TrialLock(trial_dir).acquire())
        yield
    finally:
        for lock in locks:
            lock.release()
