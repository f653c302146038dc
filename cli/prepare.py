"""`algoperf prepare WORKLOAD --data_dir DIR [--archive_dir DIR] [dataset flags]`: download or
build a workload's dataset with its dataset's prepare module (`workloads/<dataset>/prepare.py`).

A workload or variant name is mapped to its dataset through the registry (`SPEC.dataset`:
imagenet_resnet_silu -> imagenet); a dataset's own name works too. Flags this command does not
know are passed through to the dataset's module (e.g. imagenet's `--splits`);
`algoperf prepare WORKLOAD --help` shows them. The convention every dataset follows (progress
lines, last line, exit status) is in `algoperf.data.preparing`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

PACKAGE = "algoperf.workloads"


def add_command(subparsers) -> None:
    """Adds `prepare` to an argparse subparsers object."""
    prepare = subparsers.add_parser(
        "prepare",
        add_help=False,
        help="download or build a workload's dataset under --data_dir",
        description="Download or build the dataset of WORKLOAD (a workload, variant or dataset "
        "name) into its folder under --data_dir, where `algoperf run --data_dir DIR` finds it. "
        "Flags not listed here go to the dataset's own preparation; `algoperf prepare WORKLOAD "
        "--help` lists them.",
        epilog="examples:\n"
        "  algoperf prepare mnist --data_dir ~/data\n"
        "  algoperf prepare ogbg --data_dir ~/data                  # downloads OGB's release\n"
        "  algoperf prepare imagenet_resnet --data_dir ~/data --archive_dir ~/Downloads \\\n"
        "      --splits train,validation\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prepare.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    prepare.add_argument("workload", nargs="?", metavar="WORKLOAD", help="e.g. mnist, ogbg")
    prepare.add_argument("--data_dir", "--data-dir", metavar="DIR", help="dataset root (required)")
    prepare.add_argument(
        "--archive_dir",
        "--archive-dir",
        metavar="DIR",
        help="folder holding downloaded archives (imagenet, fastmri, ogbg)",
    )
    prepare.set_defaults(parser=prepare)


def datasets_with_prepare() -> list[str]:
    """The dataset folders under workloads/ that have a prepare module."""
    from algoperf import workloads

    found = {workloads.get_spec(name).dataset for name in workloads.names()}
    return sorted(dataset for dataset in found if _has_prepare(dataset))


def _has_prepare(dataset: str) -> bool:
    try:
        return importlib.util.find_spec(f"{PACKAGE}.{dataset}.prepare") is not None
    except ModuleNotFoundError:  # the dataset's folder itself is not written yet
        return False


def dataset_of(name: str) -> str:
    """The dataset folder that prepares `name` (a workload, variant or dataset name).

    Raises:
      ValueError: an unknown name, or a dataset with no prepare module yet.
    """
    from algoperf import workloads

    prepared = datasets_with_prepare()
    if name in workloads.names():
        dataset = workloads.get_spec(name).dataset
    elif name in prepared:
        dataset = name
    else:
        raise ValueError(
            f"unknown workload {name!r}; `algoperf list` shows the workload names, and these "
            f"datasets have a prepare step: {', '.join(prepared)}."
        )
    if dataset not in prepared:
        raise ValueError(
            f"{name}'s dataset ({dataset}) has no prepare step in this release; these do: "
            f"{', '.join(prepared)}."
        )
    return dataset


def prepare_module(dataset: str):
    """A dataset's prepare module (its `main(argv) -> int` follows algoperf.data.preparing)."""
    return importlib.import_module(f"{PACKAGE}.{dataset}.prepare")


def command_prepare(args: argparse.Namespace, extras: list[str]) -> int:
    """Runs the dataset's prepare module with --data_dir, --archive_dir and `extras`."""
    parser = args.parser
    if args.workload is None:
        if args.help:
            parser.print_help()
            return 0
        return _error("name a WORKLOAD (e.g. `algoperf prepare mnist --data_dir ~/data`).")
    try:
        dataset = dataset_of(args.workload)
    except ValueError as error:
        return _error(str(error))
    module = prepare_module(dataset)
    if args.help:
        return _exit_code(module.main, ["--help"])
    if args.data_dir is None:
        return _error(f"--data_dir is required (e.g. algoperf prepare {args.workload} "
                      "--data_dir ~/data).")  # fmt: skip
    argv = ["--data_dir", args.data_dir, *extras]
    if args.archive_dir is not None:
        argv += ["--archive_dir", args.archive_dir]
    return _exit_code(module.main, argv)


def _exit_code(main, argv: list[str]) -> int:
    """`main(argv)`'s exit status, also when argparse inside it exits (--help, a bad flag)."""
    try:
        return int(main(argv) or 0)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1


def _error(message: str) -> int:
    print(f"algoperf prepare: error: {message}", file=sys.stderr)
    return 2
