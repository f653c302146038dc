"""`algoperf smoke`: a submission's pre-flight check (docs/rules.md, "Pre-flight check").

Runs the submission for a few steps and its evals on every selected workload and variant, in the
workload's tiny test configuration (its `testing.py`) on format-exact fixture data, one process
per workload so that one failure (or a leak of its state) cannot touch the next; prints one table
row per workload as it finishes: ok or the first line of the error with the submission's frame,
seconds, and the process's peak memory. Exit status 1 if any workload failed, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
import traceback

from algoperf import console
from algoperf.config_args import add_bool_argument

DEFAULT_STEPS = 3
DEFAULT_TIMEOUT_SEC = 600.0
RUNNER_DIR = pathlib.Path(__file__).resolve().parent.parent / "algoperf"
"""The core's own code: a frame here is the runner's, never the submission's."""
OK, FAILED, NO_MODEL = "ok", "FAILED", "no model yet"

EXAMPLES = """\
examples:
  algoperf smoke --submission_path my_submission/submission.py
  algoperf smoke --submission_path my_submission/submission_jax.py --framework jax
  algoperf smoke --submission_path submission.py --workloads mnist,imagenet_vit_glu --tracebacks
"""


@dataclasses.dataclass
class Outcome:
    """One row of the table."""

    workload: str
    status: str
    """OK, FAILED or NO_MODEL."""
    error: str = ""
    """The error's first line and where it was raised (the submission's own frame if any)."""
    seconds: float | None = None
    """Wall time of the workload's process, start to finish (imports and fixture included)."""
    peak_rss_mb: float | None = None
    """The process's resident-memory high-water mark."""
    peak_device_mb: float | None = None
    """The accelerator's peak allocated memory (None on a CPU)."""
    traceback: str = ""
    unloadable: bool = False
    """The submission itself failed to load (the same for every workload: the rest are skipped)."""


# --- the command ------------------------------------------------------------------------------
def add_command(subparsers) -> None:
    """Adds `smoke` to an argparse subparsers object (it sets `func`)."""
    parser = subparsers.add_parser(
        "smoke",
        help="pre-flight check: a few steps and evals of a submission on every workload",
        description="Run a submission for a few steps and its evals on every workload and "
        "variant (or --workloads), each in its tiny test configuration on fixture data and in "
        "its own process; print ok or the error per workload. Exit status 1 if any failed.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    def flag(name: str, **kwargs) -> None:
        names = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        parser.add_argument(*names, dest=name, **kwargs)

    flag("submission_path", required=True, metavar="FILE.py", help="the submission to check")
    flag("framework", default="pytorch", choices=("pytorch", "jax"), help="(default: pytorch)")
    flag(
        "workloads",
        default="",
        metavar="NAME,NAME",
        help="workload and variant names, comma-separated (default: every registered name; "
        "those without a model in --framework are listed as 'no model yet')",
    )
    flag(
        "tuning_search_space",
        metavar="JSON",
        help="hyperparameters: the search space's first point (default: "
        "tuning_search_space.json beside the submission; none there: the self-tuning ruleset)",
    )
    flag("tuning_ruleset", choices=("external", "self"), help="(default: as above)")
    flag(
        "steps",
        type=int,
        default=DEFAULT_STEPS,
        metavar="N",
        help=f"training steps per workload; evals follow the first and the last, as in a run "
        f"(default: {DEFAULT_STEPS})",
    )
    add_bool_argument(
        parser,
        "torch_compile",
        default=None,
        help="torch.compile as in a run (default: as `algoperf run`: on for CUDA devices, off "
        "on CPUs; a cold compile costs tens of seconds per workload)",
    )
    flag(
        "timeout_s",
        type=float,
        default=DEFAULT_TIMEOUT_SEC,
        metavar="SEC",
        help=f"a workload still running after this long fails (default: {DEFAULT_TIMEOUT_SEC:g})",
    )
    add_bool_argument(
        parser,
        "tracebacks",
        help="after the table, print each failure's traceback from its first frame outside "
        "the runner",
    )
    parser.set_defaults(func=command_smoke)


def command_smoke(args: argparse.Namespace) -> int:
    try:
        request = _request(args)
        selected = _selected(args.workloads)
    except ValueError as error:
        print(f"algoperf smoke: error: {error}", file=sys.stderr)
        return 2
    from algoperf import workloads

    with_model = set(workloads.available(args.framework))
    console.say(_announce(request))
    width = max(len("workload"), *map(len, selected))
    print(_header(width), flush=True)
    outcomes, start = [], time.perf_counter()
    try:
        for name in selected:
            if name in with_model:
                outcome = run_isolated(name, request, timeout_sec=args.timeout_s)
            else:
                outcome = Outcome(name, NO_MODEL)
            outcomes.append(outcome)
            print(_row(outcome, width), flush=True)
            if outcome.unloadable:
                console.say("the submission does not load; the other workloads were not run.")
                break
    except KeyboardInterrupt:
        print("\nalgoperf smoke: interrupted (Ctrl-C).", file=sys.stderr)
        return 130
    failed = [o for o in outcomes if o.status == FAILED]
    ran = sum(o.status != NO_MODEL for o in outcomes)
    print(
        f"\n{ran - len(failed)} of {ran} workloads ok, {len(failed)} failed "
        f"({time.perf_counter() - start:.0f} s)."
    )
    if failed and args.tracebacks:
        for outcome in failed:
            print(f"\n--- {outcome.workload} ---\n{outcome.traceback or outcome.error}")
    elif failed:
        console.say("rerun with --tracebacks (and --workloads NAME) for the tracebacks.")
    return 1 if failed else 0


def _request(args: argparse.Namespace) -> dict:
    """What each workload's process needs: checked here once, so a usage error is one line."""
    path = pathlib.Path(args.submission_path).expanduser().resolve()
    if not path.is_file() or path.suffix != ".py":
        raise ValueError(f"--submission_path {args.submission_path}: not a .py file.")
    if args.steps < 1:
        raise ValueError("--steps must be at least 1.")
    ruleset, space = args.tuning_ruleset, args.tuning_search_space
    beside = path.parent / "tuning_search_space.json"
    if ruleset is None:
        ruleset = "external" if space is not None or beside.exists() else "self"
    if ruleset == "external":
        from algoperf import search_space

        space = str(pathlib.Path(space if space is not None else beside).resolve())
        if not pathlib.Path(space).is_file():
            raise ValueError(f"no search space at {space}; pass --tuning_search_space JSON.")
        search_space.load_search_space(space)  # a malformed file: one line here, not per row
    elif space is not None:
        raise ValueError("the self-tuning ruleset takes no search space; drop one of the two.")
    return {
        "submission_path": str(path),
        "framework": args.framework,
        "tuning_ruleset": ruleset,
        "tuning_search_space": space if ruleset == "external" else None,
        "steps": args.steps,
        "torch_compile": args.torch_compile,
    }


def _selected(text: str) -> list[str]:
    from algoperf import workloads

    if not text.strip():
        return workloads.names()
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in workloads.names()]
    if unknown:
        raise ValueError(
            f"unknown workload {', '.join(map(repr, unknown))}; run `algoperf list` for the names."
        )
    return list(dict.fromkeys(chosen))


# --- the table --------------------------------------------------------------------------------
def _announce(request: dict) -> str:
    if request["tuning_ruleset"] == "self":
        hyperparameters = "none (self-tuning ruleset)"
    else:
        hyperparameters = f"the first trial's point of {request['tuning_search_space']}"
    return (
        f"smoke: {request['submission_path']} ({request['framework']}), "
        f"{request['steps']} steps per workload, hyperparameters: {hyperparameters}"
    )


def _header(width: int) -> str:
    head = f"{'workload':{width}} {'result':12} {'seconds':>7} {'peak RSS MB':>11} {'device MB':>9}"
    return f"{head}  error\n{'-' * len(head)}"


def _number(value: float | None, width: int) -> str:
    return f"{'-' if value is None else f'{value:.0f}':>{width}}"


def _row(outcome: Outcome, width: int) -> str:
    return (
        f"{outcome.workload:{width}} {outcome.status:12} {_number(outcome.seconds, 7)} "
        f"{_number(outcome.peak_rss_mb, 11)} {_number(outcome.peak_device_mb, 9)}"
        f"  {outcome.error}"
    ).rstrip()


# --- one workload, in its own process ---------------------------------------------------------
def run_isolated(name: str, request: dict, *, timeout_sec: float) -> Outcome:
    """`name` checked in a fresh Python process (`python -m algoperf.cli.smoke REQUEST.json`)."""
    with tempfile.TemporaryDirectory(prefix="algoperf_smoke_") as folder:
        folder = pathlib.Path(folder)
        request_path, result_path = folder / "request.json", folder / "result.json"
        request_path.write_text(
            json.dumps({**request, "workload": name, "folder": str(folder / "work")})
        )
        start = time.perf_counter()
        try:
            finished = subprocess.run(
                [sys.executable, "-m", "algoperf.cli.smoke", str(request_path), str(result_path)],
                capture_output=True,
                text=True,
                timeout=timeout_sec,
            )
        except subprocess.TimeoutExpired:
            seconds = time.perf_counter() - start
            return Outcome(name, FAILED, f"timed out after {seconds:.0f} s", seconds)
        seconds = time.perf_counter() - start
        if not result_path.exists():  # killed (out of memory, a signal) or broke before a result
            return Outcome(
                name,
                FAILED,
                _ended(finished.returncode, finished.stderr),
                seconds,
                traceback=finished.stderr[-5000:],
            )
        result = json.loads(result_path.read_text())
    return Outcome(name, seconds=seconds, **result)


def _ended(returncode: int, stderr: str) -> str:
    """Why a workload's process left no result, in one line."""
    if returncode < 0:
        try:
            cause = f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            cause = f"killed by signal {-returncode}"
        if -returncode == signal.SIGKILL:
            cause += " (out of memory?)"
    else:
        cause = f"the process exited with status {returncode} before reporting"
    last = stderr.strip().splitlines()
    return f"{cause}: {last[-1]}" if last else cause


def _declarations(name: str):
    """The workload's tiny test configuration (`workloads/<base>/testing.py`'s TESTS)."""
    from algoperf import workloads

    return importlib.import_module(f"algoperf.workloads.{workloads.base_name(name)}.testing").TESTS


def check_workload(request: dict) -> dict:
    """Runs one trial of `request["steps"]` steps (evaluating after the first and the last, as
    a run does) on the fixture data; returns the Outcome's fields but workload and seconds."""
    try:
        _trial(request)
    except (Exception, SystemExit) as error:  # anything (a submission may call sys.exit)
        from algoperf.submission import SubmissionError

        return {
            "status": FAILED,
            "unloadable": isinstance(error, SubmissionError),
            "error": describe(error, pathlib.Path(request["submission_path"])),
            "traceback": _traceback(error),
            **_peak_memory(),
        }
    return {"status": OK, **_peak_memory()}


def _trial(request: dict) -> None:
    from algoperf import trial, workloads
    from algoperf.backend import get_backend
    from algoperf.config import RunConfig
    from algoperf.process import configure_process
    from algoperf.submission import call_guarded, check_batch_size, load_submission

    name, framework = request["workload"], request["framework"]
    tests = _declarations(name)
    folder = pathlib.Path(request["folder"])
    config = RunConfig(
        workload=name,
        framework=framework,
        submission_path=request["submission_path"],
        tuning_ruleset=request["tuning_ruleset"],
        tuning_search_space=request["tuning_search_space"],
        data_dir=str(tests.write_fixture(folder / "data")),
        experiment_dir=str(folder / "experiments"),
        experiment_name="smoke",
        rng_seed=0,
        max_global_steps=request["steps"],
        eval_every_steps=request["steps"],
        torch_compile=request["torch_compile"],
        workload_options=tests.cli_options,
        download=False,
        progress=False,
    )
    configure_process(framework, config.benchmark_version)
    backend = get_backend(framework)
    workload = trial.load_workload(config)
    if hasattr(backend, "compile_choice"):  # PyTorch: None -> by device, as a run decides
        compile_model = backend.compile_choice(config.torch_compile)[0]
        config = dataclasses.replace(config, torch_compile=compile_model)
    submission = load_submission(config.resolved_submission_path)
    # The submission's batch sizes are asked for and checked as in a run; the steps use the
    # tiny configuration's batch (the fixture holds a few dozen examples).
    trial.global_batch_size(submission, name, workloads.base_name(name))
    if submission.get_eval_batch_size is not None:
        check_batch_size(
            "get_eval_batch_size",
            call_guarded("get_eval_batch_size", submission.get_eval_batch_size, name),
        )
    batch_size = math.ceil(tests.batch_size / backend.device_count) * backend.device_count
    plan = trial.TrialPlan(
        config=config,
        index=0,
        trial_dir=folder / "experiments" / "trial_1",
        run_seed=0,
        hyperparameters=trial.hyperparameter_points(config, 0)[0],
        global_batch_size=batch_size,
        eval_batch_size=batch_size,
        budget_sec=workload.max_allowed_runtime_sec,
    )
    trial.Trial(plan, backend, workload, submission).run()


# --- what went wrong, and where ----------------------------------------------------------------
def describe(error: BaseException, submission_path: pathlib.Path) -> str:
    """The error's first line and `file:line` of the frame that best names the culprit: the
    deepest frame in the submission's file, else in its folder, else the first frame outside
    the runner (a helper module the submission imports, or the workload's code)."""
    from algoperf.errors import SubmissionFailed

    lines = str(error).strip().splitlines()
    first = lines[0] if lines else ""
    if not isinstance(error, SubmissionFailed):
        first = f"{type(error).__name__}: {first}" if first else type(error).__name__
    origin = error.__cause__ if error.__cause__ is not None else error
    frame = culprit_frame(traceback.extract_tb(origin.__traceback__), submission_path)
    return first if frame is None else f"{first} ({_where(frame)})"


def culprit_frame(frames, submission_path: pathlib.Path):
    """See `describe`; None for an error with no frames."""

    def path_of(frame) -> pathlib.Path:
        return pathlib.Path(frame.filename).resolve()

    in_file = [f for f in frames if path_of(f) == submission_path]
    if in_file:
        return in_file[-1]
    in_folder = [f for f in frames if path_of(f).is_relative_to(submission_path.parent)]
    if in_folder:
        return in_folder[-1]
    outside = [f for f in frames if not path_of(f).is_relative_to(RUNNER_DIR)]
    if outside:
        return outside[0]
    return frames[-1] if frames else None


def _where(frame) -> str:
    path = pathlib.Path(frame.filename).resolve()
    try:
        shown = path.relative_to(pathlib.Path.cwd())
    except ValueError:
        shown = path
    return f"{shown}:{frame.lineno}"


def _traceback(error: BaseException) -> str:
    """The traceback of the submission's own exception (or the error itself), from its first
    frame outside the runner."""
    origin = error.__cause__ if error.__cause__ is not None else error
    frames = origin.__traceback__
    while frames is not None and frames.tb_next is not None:
        if (
            not pathlib.Path(frames.tb_frame.f_code.co_filename)
            .resolve()
            .is_relative_to(RUNNER_DIR)
        ):
            break
        frames = frames.tb_next
    return "".join(traceback.format_exception(type(origin), origin, frames))


def _peak_memory() -> dict:
    """The process's RSS high-water mark and the accelerator's peak allocation, in MB."""
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    rss_mb = rss / 2**20 if sys.platform == "darwin" else rss / 2**10
    device_mb = None
    torch = sys.modules.get("torch")  # only what the workload's framework already imported
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        device_mb = torch.cuda.max_memory_allocated() / 2**20
    jax = sys.modules.get("jax")
    if jax is not None and jax.default_backend() != "cpu":
        peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use", 0) for d in jax.devices()]
        device_mb = max(peaks) / 2**20
    return {"peak_rss_mb": rss_mb, "peak_device_mb": device_mb}


def _worker(argv: list[str]) -> int:
    """`python -m algoperf.cli.smoke REQUEST.json RESULT.json` (what `run_isolated` starts)."""
    request_path, result_path = argv
    request = json.loads(pathlib.Path(request_path).read_text())
    result = check_workload(request)
    pathlib.Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
