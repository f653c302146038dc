"""Errors the command line turns into one line and an exit status (docs/rules.md "Exit status").

- `ValueError` (and its subclasses, e.g. `SubmissionError`, `CheckpointError`): the user's own
  input is wrong (flags, files, a checkpoint of another setup); exit 2.
- `StorageError`: the file system refused (a path that is a file, not writable, read-only, full,
  a truncated dataset file); the message names the path and what to do; exit 1.
- `SubmissionFailed`: the submission's own code raised or returned the wrong thing; the command
  shows the submission's traceback, then one line naming the function and the step; exit 1.
"""

from __future__ import annotations


class StorageError(OSError):
    """A file-system problem with a named path; the message says what to fix."""


class SubmissionFailed(Exception):
    """A submission function raised or returned a value the API does not allow.

    `function` is the submission function's name, `step` the global step (None outside the
    loop); `__cause__` is the submission's own exception, if it raised one.
    """

    def __init__(self, message: str, *, function: str, step: int | None = None) -> None:
        super().__init__(message)
        self.function = function
        self.step = step
