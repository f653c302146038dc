"""What every `algoperf` subcommand shares: `--log_level`, `-q/--quiet`, and the logging handler.

Library modules log to named loggers and install no handler; the command line installs the one
handler here, on the root logger, when a command starts. Under torchrun, ranks other than 0 show
only errors (each line tagged with its rank) unless `--log_level debug`, so a warning that every
rank meets (e.g. MNIST's offline fallback) is printed once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from algoperf import console
from algoperf.config_args import add_bool_argument

LOG_LEVELS = ("debug", "info", "warning", "error")
_handler: list[logging.Handler] = []  # the handler this module installed (replaced, not added)


def log_level(text: str) -> str:
    """A `--log_level` value, case-insensitive.

    Raises:
      argparse.ArgumentTypeError: not one of LOG_LEVELS.
    """
    lowered = str(text).lower()
    if lowered not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"invalid level {text!r} (choose from {', '.join(LOG_LEVELS)})"
        )
    return lowered


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """`--log_level` and `-q/--quiet` on `parser`, or on each subcommand below it (a parser
    that already has them, e.g. a subcommand that defines its own, is left alone)."""
    children = [
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    ]
    if children:
        for child in {id(p): p for action in children for p in action.choices.values()}.values():
            add_output_options(child)
        return
    if "--log_level" not in parser._option_string_actions:
        parser.add_argument(
            "--log_level",
            "--log-level",
            type=log_level,
            default="warning",
            metavar="{" + ",".join(LOG_LEVELS) + "}",
            help="Python logging level, case-insensitive (default: warning)",
        )
    if "--quiet" not in parser._option_string_actions:
        add_bool_argument(
            parser,
            "quiet",
            short="-q" if "-q" not in parser._option_string_actions else None,
            help="no [algoperf] status lines, no progress line (warnings, errors still print)",
        )


def configure_output(args: argparse.Namespace) -> None:
    """Apply `--quiet` to the `[algoperf]` lines and install the logging handler."""
    console.set_quiet(getattr(args, "quiet", False))
    configure_logging(getattr(args, "log_level", "warning"))


def configure_logging(level: str = "warning") -> None:
    """The one stderr handler on the root logger (installing it again replaces it)."""
    root = logging.getLogger()
    for old in _handler:
        root.removeHandler(old)
    _handler.clear()
    rank = os.environ.get("RANK", "0")
    threshold = getattr(logging, level.upper())
    handler = _StderrHandler()
    handler.setFormatter(_Formatter(rank, verbose=threshold <= logging.DEBUG))
    if rank != "0" and threshold > logging.DEBUG:
        handler.setLevel(logging.ERROR)
    root.addHandler(handler)
    root.setLevel(threshold)
    _handler.append(handler)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record comes (a test's capture, a redirect),
    not to the stream that was current when the handler was made."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        del value  # StreamHandler.__init__ sets it; sys.stderr is always used


class _Formatter(logging.Formatter):
    """`[algoperf] warning: message` (`[torch] ...` for another package's logger); at debug
    level the logger's name is shown too, and a rank other than 0 tags its lines."""

    def __init__(self, rank: str, verbose: bool) -> None:
        super().__init__()
        self.rank, self.verbose = rank, verbose

    def format(self, record: logging.LogRecord) -> str:
        package = record.name.split(".")[0]
        tag = "algoperf" if package in ("algoperf", "root") else package
        where = f" ({record.name})" if self.verbose else ""
        rank = f"[rank {self.rank}] " if self.rank != "0" else ""
        text = f"{rank}[{tag}] {record.levelname.lower()}{where}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text
