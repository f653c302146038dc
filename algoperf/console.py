"""The `[algoperf]` lines on stderr: status, progress notes and warnings of every command.

They go through `say` and `warn` here, so one switch (`set_quiet`, the command line's `--quiet`)
silences the status lines of every command; warnings and errors still print. Python's logging
is separate: library modules log to named loggers, and only the command line installs handlers.
"""

from __future__ import annotations

import os
import sys

_state = {"quiet": False}


def set_quiet(quiet: bool) -> None:
    """Silence (True) or restore (False) the status lines of `say`."""
    _state["quiet"] = bool(quiet)


def is_quiet() -> bool:
    return _state["quiet"]


def is_primary() -> bool:
    """Whether this process is rank 0 (or runs alone): torchrun sets RANK for each worker."""
    return os.environ.get("RANK", "0") == "0"


def say(
    message: str,
    *,
    tag: str = "algoperf",
    stream=None,
    newline_first: bool = False,
    even_if_quiet: bool = False,
) -> None:
    """Print `[tag] message` (on stderr unless `stream` is given), unless quiet.

    Args:
      newline_first: start with an empty line (the message interrupts a progress line).
      even_if_quiet: print it anyway (what to do after a stop, e.g. how to resume).
    """
    if _state["quiet"] and not even_if_quiet:
        return
    _print(message, tag, stream, newline_first)


def warn(message: str, *, tag: str = "algoperf", stream=None, newline_first: bool = False) -> None:
    """Print `[tag] warning: message`; printed even when quiet."""
    _print(f"warning: {message}", tag, stream, newline_first)


def _print(message: str, tag: str, stream, newline_first: bool) -> None:
    lead = "\n" if newline_first else ""
    print(f"{lead}[{tag}] {message}", file=stream or sys.stderr, flush=True)
