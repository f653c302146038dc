"""`algoperf launch slurm|local|status|cancel`: added to the main parser by `add_commands`.

Nothing heavy is imported until a command runs; submitit only by `launch slurm`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import pathlib
import shutil
import sys

from algoperf import console
from algoperf.config_args import add_bool_argument

EXAMPLES = """\
examples:
  algoperf launch slurm sweep.toml                 # one Slurm job per trial (a job array)
  algoperf launch slurm sweep.toml --wait          # ... and wait for the whole sweep
  algoperf launch local sweep.toml --parallel 2    # the same sweep on this machine, 2 at a time
  algoperf launch status experiments/nadamw_external
  algoperf launch cancel experiments/nadamw_external
Rerun `launch slurm` (or `launch local`) to resume a stopped sweep: finished and failed trials
are skipped, queued and running ones are left alone, stopped ones resume from their checkpoint.

sweep.toml (relative paths are relative to the file):
  name = "nadamw_external"
  rng_seed = 1
  submission_path = "submissions/nadamw/submission_torch.py"
  workloads = ["mnist", "cifar"]
  num_studies = 3
  num_tuning_trials = 5
  data_dir = "/shared/data"
  experiment_dir = "/shared/experiments"
  gpus_per_trial = 4
  time_limit_min = 240
  partition = "gpu"
  run_args = ["--save_checkpoints", "true"]
"""


def add_commands(subparsers) -> None:
    """Adds `launch` (with slurm, local, status, cancel) to an argparse subparsers object."""
    launch = subparsers.add_parser(
        "launch",
        help="run a sweep on Slurm (submitit) or on this machine; status, cancel",
        description="Run a sweep (workloads x studies x trials, from a TOML/JSON file) as one "
        "Slurm job per trial, or on this machine through torchrun; see where it stands; stop it.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = launch.add_subparsers(dest="launch_command", metavar="ACTION", required=True)
    slurm = actions.add_parser(
        "slurm",
        help="submit the sweep's missing trials to Slurm",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    slurm.add_argument("sweep", help="sweep file (.toml/.json) or a launched sweep's folder")
    _flag(slurm, "wait", "wait until the sweep's jobs have left the queue; print its status")
    _flag(slurm, "retry_failed", "also rerun failed trials (from their last checkpoint)")
    _flag(slurm, "dry_run", "print what would be submitted and stop")
    slurm.add_argument(
        "--cluster",
        choices=("slurm", "local"),
        default="slurm",
        help="local: submitit's LocalExecutor on this machine (tests the job path without "
        "Slurm; implies --wait)",
    )
    local = actions.add_parser(
        "local",
        help="run the sweep's missing trials on this machine (torchrun)",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    local.add_argument("sweep", help="sweep file (.toml/.json) or a launched sweep's folder")
    local.add_argument(
        "--parallel", type=int, default=1, metavar="K", help="trials at once (default: 1)"
    )
    local.add_argument(
        "--gpus_per_trial",
        "--gpus-per-trial",
        type=int,
        default=None,
        metavar="N",
        help="override the sweep's gpus_per_trial (0: CPU)",
    )
    _flag(local, "retry_failed", "also rerun failed trials (from their last checkpoint)")
    _flag(local, "dry_run", "print what would run and stop")
    status = actions.add_parser("status", help="done/running/failed/pending trials, time used")
    status.add_argument("sweep", help="a launched sweep's folder (or its sweep file)")
    cancel = actions.add_parser("cancel", help="stop the sweep's jobs (trials checkpoint)")
    cancel.add_argument("sweep", help="a launched sweep's folder (or its sweep file)")
    launch.set_defaults(func=command_launch)


def _flag(parser: argparse.ArgumentParser, name: str, help_text: str) -> None:
    add_bool_argument(parser, name, help=f"{help_text} (default: false)")


def command_launch(args: argparse.Namespace) -> int:
    from algoperf.launch.state import LaunchError

    commands = {
        "slurm": command_slurm,
        "local": command_local,
        "status": command_status,
        "cancel": command_cancel,
    }
    try:
        return commands[args.launch_command](args)
    except (LaunchError, ValueError, FileNotFoundError) as error:
        print(f"algoperf launch {args.launch_command}: error: {error}", file=sys.stderr)
        return 2


def _say(message: str) -> None:
    console.say(message, tag="algoperf launch")


def _plan(sweep, retry_failed: bool, verb: str):
    from algoperf.launch import state

    trials, skipped = state.to_run(sweep, retry_failed=retry_failed)
    counts = {}
    for row in skipped:
        counts[row.state] = counts.get(row.state, 0) + 1
    rest = ", ".join(f"{count} {name}" for name, count in sorted(counts.items()))
    _say(f"{sweep.sweep_dir}: {len(trials)} trial(s) to {verb}" + (f"; {rest}" if rest else ""))
    return trials


@contextlib.contextmanager
def _launching(sweep, trials):
    """Write the sweep's record and clear the failed markers of retried trials; undo both if
    the launch fails before anything runs (a new sweep folder is removed again)."""
    from algoperf.launch import trial as trial_files
    from algoperf.launch.sweep import record_sweep

    created = None  # the top folder this launch creates, removed again if it fails
    for folder in (sweep.sweep_dir, *sweep.sweep_dir.parents):
        if folder.exists():
            break
        created = folder
    cleared = {}
    try:
        record_sweep(sweep)
        for one in trials:
            marker = one.trial_dir / trial_files.FAILED_FILE
            if marker.exists():
                cleared[marker] = marker.read_bytes()
                marker.unlink()
        yield
    except BaseException:
        for marker, content in cleared.items():
            marker.write_bytes(content)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise


def command_slurm(args: argparse.Namespace) -> int:
    from algoperf.launch import state
    from algoperf.launch.sweep import record_sweep, resolve

    if importlib.util.find_spec("submitit") is None:
        raise state.LaunchError(
            "submitit is not installed; it is in the `slurm` extra: pip install -e '.[slurm]' "
            "(bash scripts/install.sh installs it by default)."
        )
    sweep = resolve(args.sweep)
    record_sweep(sweep, write=False)
    nodes = []
    if args.cluster == "slurm":
        partition, nodes = state.cluster_nodes(sweep.partition)
        sweep = dataclasses.replace(sweep, partition=partition)
    state.check_experiment_dir(sweep.sweep_dir, nodes)
    if args.cluster == "slurm" and sweep.gpus_per_trial and sweep.cpus_per_trial is None:
        console.warn(
            "cpus_per_trial is not set, so each job gets the cluster's default number "
            f"of cores (often 1) for its {sweep.gpus_per_trial} GPU(s); set cpus_per_trial.",
            tag="algoperf launch",
        )
    trials = _plan(sweep, args.retry_failed, "submit")
    if args.dry_run:
        for one in trials:
            print(one.key)
        return 0
    if not trials:
        return 0
    from algoperf.launch import slurm

    with _launching(sweep, trials):
        jobs = slurm.submit(sweep, trials, cluster=args.cluster)
    ids = [job.job_id for job in jobs]
    _say(f"submitted {len(jobs)} job(s): {', '.join(ids)}; logs in {sweep.launch_dir}")
    _say(f"see `algoperf launch status {sweep.sweep_dir}`")
    if not (args.wait or args.cluster == "local"):
        return 0
    try:
        if args.cluster == "local":
            slurm.wait_for_local(jobs)
        else:
            slurm.wait_for_queue(ids)
    except KeyboardInterrupt:
        console.say(
            "stopped waiting; the jobs go on (`algoperf launch cancel` stops them).",
            tag="algoperf launch",
            even_if_quiet=True,
        )
        return 130
    rows = state.sweep_status(sweep)
    print(state.format_status(rows))
    return 0 if all(row.state == "done" for row in rows) else 1


def command_local(args: argparse.Namespace) -> int:
    from algoperf.launch import local, state
    from algoperf.launch.sweep import record_sweep, resolve

    if args.parallel < 1:
        raise ValueError("--parallel must be at least 1.")
    sweep = resolve(args.sweep)
    record_sweep(sweep, write=False)
    if args.gpus_per_trial is not None:
        sweep = dataclasses.replace(sweep, gpus_per_trial=args.gpus_per_trial)
    state.check_experiment_dir(sweep.sweep_dir, [])
    runner = local.LocalRun(sweep, args.parallel)  # checks the GPUs first
    trials = _plan(sweep, args.retry_failed, "run")
    if args.dry_run:
        for one in trials:
            print(one.key)
        return 0
    if not trials:
        return 0
    with _launching(sweep, trials):  # the sweep's record, retried trials' markers cleared
        pass
    outcomes = runner.run(trials)
    print(state.format_status(state.sweep_status(sweep)))
    if runner.stop_signal is not None:
        return 130
    return 0 if all(outcome == "done" for outcome in outcomes.values()) else 1


def command_status(args: argparse.Namespace) -> int:
    from algoperf.launch import state
    from algoperf.launch.sweep import resolve

    sweep = resolve(args.sweep)
    if not (sweep.sweep_dir / "_launch").is_dir() and not pathlib.Path(args.sweep).is_dir():
        _say(f"{sweep.sweep_dir} has not been launched yet.")
    print(state.format_status(state.sweep_status(sweep)))
    return 0


def command_cancel(args: argparse.Namespace) -> int:
    from algoperf.launch import state
    from algoperf.launch.sweep import resolve

    sweep = resolve(args.sweep)
    cancelled = state.cancel(sweep)
    if not cancelled:
        _say("nothing to cancel: no job of this sweep is queued or running.")
        return 0
    _say(f"cancelled {', '.join(cancelled)}")
    _say("running trials checkpoint and stop; `algoperf launch slurm|local` resumes them.")
    return 0
