"""The one convention of every dataset's preparation command, `algoperf prepare X` (the same as
`python -m algoperf.workloads.<dataset>.prepare`): flags, progress lines, last line, errors.

- `--data_dir DIR` (required): the dataset goes to its own folder under DIR, where
  `algoperf run --data_dir DIR` finds it; each dataset adds its own flags (`--archive_dir`, ...).
- Progress: `[algoperf prepare] ...` lines on stderr (`-q/--quiet` silences them).
- Success: one line on stdout, `<dataset> ready in <folder>; train with --data_dir DIR`, exit 0.
- Failure (download, checksum, a missing or bad archive): one line on stderr, exit 1; a wrong
  flag: one line, exit 2 (docs/data.md, "Prepared data").
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Callable

from algoperf import console
from algoperf.config_args import Parser


def progress(message: str) -> None:
    """A progress line of a preparation (silenced by --quiet)."""
    console.say(message, tag="algoperf prepare")


def command_name(dataset: str) -> str:
    """How the messages of a pipeline name the preparation of `dataset`."""
    return f"algoperf prepare {dataset} --data_dir DIR"


def main(
    argv: list[str] | None,
    *,
    dataset: str,
    title: str,
    description: str,
    prepare: Callable[[argparse.Namespace], pathlib.Path],
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """Parse `argv`, run `prepare(args)` and report it by the convention above.

    Args:
      dataset: the folder under workloads/ (`mnist`, `imagenet`): the command's name.
      title: the dataset as the last line names it (`MNIST`, `ImageNet`).
      prepare: builds the dataset from the parsed flags (`args.data_dir`, the dataset's own),
        reporting through `progress`; returns the folder it wrote.
    """
    parser = Parser(
        prog=f"algoperf prepare {dataset}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data_dir",
        "--data-dir",
        required=True,
        metavar="DIR",
        help="dataset root: the data goes to its folder under DIR (what `algoperf run "
        "--data_dir DIR` reads)",
    )
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        root = prepare(args)
    except (OSError, ValueError) as error:
        print(f"algoperf prepare {dataset}: error: {error}", file=sys.stderr, flush=True)
        return 1
    print(f"{title} ready in {root}; train with --data_dir {args.data_dir}", flush=True)
    return 0
