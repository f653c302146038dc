"""The `algoperf` command (also `python -m algoperf`): run, tune, score, check-logs, list,
prepare, launch.

`algoperf run` with no flags trains the NAdamW reference on mnist in PyTorch. Flags keep upstream's
names (`--submission_path`, `--tuning_ruleset`, ...); dashed spellings work too. The subcommands
come from `cli.scoring`, `cli.listing`, `cli.prepare` and `launch.cli`; this module composes them,
and `cli.common` gives each one `--log_level` and `-q/--quiet`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import sys
import time
import traceback
import typing

from algoperf import __version__, console
from algoperf.cli import common, listing, prepare, scoring, smoke
from algoperf.config import RunConfig
from algoperf.config_args import Parser, add_config_arguments
from algoperf.errors import StorageError, SubmissionFailed
from algoperf.launch import cli as launch_cli
from algoperf.studies import SweepConfig

# How long a rank other than 0 waits before printing its error (see _report_error).
RANK_ERROR_GRACE_SEC = 3.0
# The user's own mistakes (flags, files): one line, exit 2 (docs/rules.md "Exit status").
USAGE_ERRORS = (ValueError, FileExistsError, FileNotFoundError, NotImplementedError)
# The runner's own code: leading traceback frames from here are cut from a submission's traceback.
RUNNER_DIR = pathlib.Path(__file__).resolve().parent.parent / "algoperf"

EXAMPLES = """\
examples:
  algoperf run                                    # NAdamW on mnist, PyTorch, offline-ready
  algoperf run --framework jax --workload mnist
  algoperf run --workload cifar --data_dir ~/data \\
      --submission_path submissions/adamw/submission_torch.py
  algoperf run --tuning_ruleset self \\
      --submission_path submissions/nadamw_self_tuning/submission_torch.py
  torchrun --standalone --nproc_per_node=4 -m algoperf run --workload cifar
  algoperf tune --rng_seed 1 --num_studies 2 --num_tuning_trials 2   # a small sweep
  algoperf list                                   # every workload, variant, target and budget
  algoperf prepare cifar --data_dir ~/data        # download and check a dataset
Booleans: --flag, --flag=false, --flag false, --noflag. -q/--quiet: no [algoperf] status lines.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="algoperf",
        description=(
            "AlgoPerf: time a training algorithm (a submission.py) to each workload's "
            "validation target, under the benchmark's rules."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
    )
    parser.add_argument("--version", action="version", version=f"algoperf {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run_parser = commands.add_parser(
        "run",
        help="train a submission on a workload (one or more tuning trials)",
        description="Train a submission on one workload under the timing rules; logs go to "
        "<experiment_dir>/<experiment_name>/<workload>_<framework>/trial_<k>/.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(run_parser)
    tune_parser = commands.add_parser(
        "tune",
        help="a sweep: studies x trials of a submission on workloads (resumable)",
        description="Run studies x trials; logs go to <experiment_dir>/<experiment_name>/"
        "study_<k>/<workload>_<framework>/trial_<n>/ (what `algoperf score` reads). Rerun the "
        "same command to continue an interrupted sweep: finished trials are skipped.",
    )
    add_config_arguments(tune_parser)
    add_config_arguments(tune_parser, SweepConfig)
    scoring.add_commands(commands)  # score, check-logs
    launch_cli.add_commands(commands)  # launch slurm|local|status|cancel
    listing.add_command(commands)  # list
    prepare.add_command(commands)  # prepare
    smoke.add_command(commands)  # smoke
    common.add_output_options(parser)  # --log_level, -q/--quiet on every subcommand
    return parser


def _config_values(args: argparse.Namespace, config_class=RunConfig) -> dict:
    """The config fields given on the command line; --quiet also turns the progress line off
    unless --progress is given."""
    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(config_class)
        if hasattr(args, f.name)
    }
    if config_class is RunConfig and args.quiet and "progress" not in values:
        values["progress"] = False
    return values


def command_run(args: argparse.Namespace) -> int:
    from algoperf.trial import run

    values = _config_values(args)
    try:
        config = RunConfig(**values)
        results = run(config)
    except KeyboardInterrupt as interrupt:
        _report_interrupt(interrupt)
        return 130
    except (StorageError, SubmissionFailed, *USAGE_ERRORS) as error:
        return _report_failure("run", error)
    if not results:  # every trial was already complete: nothing left to do is a success
        console.say("every trial of this run is already complete.")
    return 0


def command_tune(args: argparse.Namespace) -> int:
    from algoperf import versions
    from algoperf.studies import tune

    values = _config_values(args)
    sweep = _config_values(args, SweepConfig)
    try:
        if "num_tuning_trials" not in values:
            version = versions.get_version(values.get("benchmark_version", "v1.0"))
            values["num_tuning_trials"] = version.num_trials
        ran = tune(RunConfig(**values), SweepConfig(**sweep))
    except KeyboardInterrupt:
        console.say(
            "interrupted (Ctrl-C): rerun the same command to continue the sweep.",
            newline_first=True,
            even_if_quiet=True,
        )
        return 130
    except (StorageError, SubmissionFailed, *USAGE_ERRORS) as error:
        return _report_failure("tune", error)
    console.say(f"{ran} trial(s) run; finished trials are skipped on a rerun.", tag="algoperf tune")
    return 0


def main(argv: typing.Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extras = parser.parse_known_args(argv)
    if extras and args.command != "prepare":  # prepare passes a dataset's own flags through
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    if args.command is None:
        parser.print_help()
        return 0
    common.configure_output(args)
    if args.command == "prepare":
        return prepare.command_prepare(args, extras)
    if args.command in ("run", "tune"):
        code = command_run(args) if args.command == "run" else command_tune(args)
        _exit_distributed(code)
        return code
    return args.func(args)


def _report_interrupt(interrupt: KeyboardInterrupt) -> None:
    """Ctrl-C's last words (rank 0): where the trial stopped and how to continue it."""
    from algoperf.trial import Interrupted

    if os.environ.get("RANK", "0") != "0":
        return
    where = ""
    if isinstance(interrupt, Interrupted):
        if interrupt.checkpoint_step is None:
            where = f" {interrupt.trial_dir} has no checkpoint yet: a rerun starts it over;"
        else:
            where = f" {interrupt.trial_dir} has a checkpoint at step {interrupt.checkpoint_step};"
    console.say(
        f"interrupted (Ctrl-C):{where} rows already written to the logs are "
        "complete; continue with the same command plus --resume_last_run.",
        newline_first=True,
        even_if_quiet=True,
    )


def _report_failure(command: str, error: Exception) -> int:
    """Report an error of `run`/`tune` and return the exit status (docs/rules.md "Exit status").

    A usage error is one line, exit 2; a storage error one line, exit 1; a submission failure
    is the submission's traceback, then one line naming the function and step, exit 1.
    """
    if isinstance(error, SubmissionFailed):
        _report_error(command, error, details=_submission_traceback(error))
        return 1
    _report_error(command, error)
    return 1 if isinstance(error, StorageError) else 2


def _submission_traceback(failure: SubmissionFailed) -> str:
    """The traceback of what the submission raised, from its first frame outside algoperf/
    (the loop's and the trial's frames that called it are left out); '' when it raised nothing."""
    cause = failure.__cause__
    if cause is None:
        return ""
    frames = cause.__traceback__
    while frames is not None and frames.tb_next is not None:
        if not pathlib.Path(frames.tb_frame.f_code.co_filename).is_relative_to(RUNNER_DIR):
            break
        frames = frames.tb_next
    return "".join(traceback.format_exception(type(cause), cause, frames))


def _report_error(command: str, error: BaseException, details: str = "") -> None:
    """One line on stderr (after `details`, a traceback); under torchrun, one report in all
    rather than one per rank.

    Rank 0 reports at once. Another rank waits `RANK_ERROR_GRACE_SEC` first: when rank 0 failed
    too (the usual case: every rank reads the same flags and files), torchrun stops the other
    workers as soon as rank 0 exits, before they print. An error of one rank alone (its shard,
    its device) is still reported, tagged with the rank, after the wait.
    """
    rank = os.environ.get("RANK", "0")
    if rank == "0":
        print(f"{details}algoperf {command}: error: {error}", file=sys.stderr, flush=True)
        return
    time.sleep(RANK_ERROR_GRACE_SEC)
    print(f"{details}[rank {rank}] algoperf {command}: error: {error}", file=sys.stderr, flush=True)


def _exit_distributed(code: int) -> None:
    """Under torchrun, leave through the process-group teardown that avoids gloo's exit race."""
    torch = sys.modules.get("torch")
    if (
        torch is not None
        and torch.distributed.is_available()
        and torch.distributed.is_initialized()
    ):
        from algoperf.torch.distributed import shutdown_and_exit

        shutdown_and_exit(code)


if __name__ == "__main__":
    sys.exit(main())
