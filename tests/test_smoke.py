"""`algoperf smoke`: the table, the exit status, where an error is placed, and isolation.

The fast tests replace the per-workload process with a stand-in; the slow ones start the real
processes (a few seconds each: a fresh Python importing the framework) on mnist and cifar.
"""

from __future__ import annotations

import pathlib
import textwrap
import traceback

import pytest

from algoperf import workloads
from algoperf.cli import smoke
from algoperf.cli.main import main

ROOT = pathlib.Path(__file__).resolve().parent.parent
NADAMW = ROOT / "submissions" / "nadamw"
SEARCH_SPACE = str(NADAMW / "tuning_search_space.json")

FAILS_ON_CIFAR = """\
from algoperf.submissions.nadamw import submission_torch as reference
from algoperf.submissions.nadamw.submission_torch import (  # noqa: F401
    data_selection, get_batch_size, prepare_for_eval,
)

CALLS = []


def init_optimizer_state(workload, *args):
    CALLS.append(workload.spec.name)  # module state: shared only if workloads shared a process
    if len(CALLS) > 1:
        raise RuntimeError(f"state leaked from {CALLS[0]}")
    return reference.init_optimizer_state(workload, *args)


def update_params(workload, *args, **kwargs):
    if workload.spec.name == "cifar":
        raise ValueError("no cifar here")
    return reference.update_params(workload, *args, **kwargs)
"""
RAISE_LINE = 1 + FAILS_ON_CIFAR.splitlines().index('        raise ValueError("no cifar here")')


def rows(output: str) -> dict[str, str]:
    """Table rows by workload name."""
    found = {}
    for line in output.splitlines():
        name = line.split(" ", 1)[0]
        if name in workloads.names():
            found[name] = line
    return found


def smoke_main(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["smoke", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def fake_runs(monkeypatch):
    """Replaces the per-workload process: `fail` names fail, the rest pass; records calls."""
    calls, fail = [], set()

    def run_isolated(name, request, *, timeout_sec):
        calls.append(name)
        if name in fail:
            return smoke.Outcome(name, smoke.FAILED, "update_params raised ValueError", 1.0)
        return smoke.Outcome(name, smoke.OK, seconds=1.0, peak_rss_mb=500.0)

    monkeypatch.setattr(smoke, "run_isolated", run_isolated)
    return calls, fail


# --- fast: the command around the processes ---------------------------------------------------
def test_workloads_restricts_the_table(capsys, fake_runs):
    calls, _ = fake_runs
    submission = str(NADAMW / "submission_torch.py")
    code, out, _ = smoke_main(capsys, "--submission_path", submission, "--workloads", "mnist,cifar")
    assert code == 0 and calls == ["mnist", "cifar"]
    assert list(rows(out)) == ["mnist", "cifar"]
    assert "2 of 2 workloads ok, 0 failed" in out


def test_every_name_by_default_and_no_model_rows(capsys, fake_runs):
    calls, _ = fake_runs
    code, out, _ = smoke_main(capsys, "--submission_path", str(NADAMW / "submission_torch.py"))
    assert code == 0 and list(rows(out)) == workloads.names()
    assert calls == workloads.available("pytorch")
    missing = [n for n in workloads.names() if n not in workloads.available("pytorch")]
    assert missing, "every workload has a model: pick another check for the no-model row"
    assert all(smoke.NO_MODEL in rows(out)[name] for name in missing)


def test_one_failure_makes_exit_status_one(capsys, fake_runs):
    calls, fail = fake_runs
    fail.add("cifar")
    submission = str(NADAMW / "submission_torch.py")
    code, out, err = smoke_main(
        capsys, "--submission_path", submission, "--workloads", "cifar,mnist,criteo1tb"
    )
    assert code == 1 and calls == ["cifar", "mnist"]  # a failure does not stop the others
    table = rows(out)
    assert smoke.FAILED in table["cifar"] and "update_params raised" in table["cifar"]
    assert " ok " in table["mnist"] and smoke.NO_MODEL in table["criteo1tb"]
    assert "1 of 2 workloads ok, 1 failed" in out and "--tracebacks" in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--workloads", "mnist,imagenet_vit_gluu"], "unknown workload 'imagenet_vit_gluu'"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--tuning_ruleset", "self", "--tuning_search_space", SEARCH_SPACE], "self-tuning"),
    ],
)
def test_usage_errors_are_one_line_exit_two(capsys, fake_runs, flags, message):
    calls, _ = fake_runs
    code, out, err = smoke_main(
        capsys, "--submission_path", str(NADAMW / "submission_torch.py"), *flags
    )
    assert code == 2 and calls == [] and out == ""
    assert err.count("\n") == 1 and err.startswith("algoperf smoke: error:") and message in err


def test_hyperparameters_from_the_space_beside_the_submission_else_self_tuning(tmp_path, capsys):
    parser = smoke_parser()
    beside = parser.parse_args(["smoke", "--submission_path", str(NADAMW / "submission_torch.py")])
    request = smoke._request(beside)
    assert request["tuning_ruleset"] == "external"
    assert request["tuning_search_space"] == SEARCH_SPACE
    alone = tmp_path / "submission.py"
    alone.write_text("")
    request = smoke._request(parser.parse_args(["smoke", "--submission_path", str(alone)]))
    assert request["tuning_ruleset"] == "self" and request["tuning_search_space"] is None


def smoke_parser():
    from algoperf.config_args import Parser

    parser = Parser(prog="algoperf")
    smoke.add_command(parser.add_subparsers())
    return parser


def test_the_error_is_placed_in_the_submissions_file(tmp_path):
    """The deepest frame in the submission's file wins over the library frames below it and
    over the runner's frames above it; without one, the first frame outside the runner."""
    submission = tmp_path / "submission.py"
    submission.write_text("def update_params(f):\n    return f()\n")
    namespace: dict = {}
    exec(compile(submission.read_text(), str(submission), "exec"), namespace)

    def library():
        raise KeyError("momentum")

    try:
        namespace["update_params"](library)
    except KeyError as error:
        frames = traceback.extract_tb(error.__traceback__)
        described = smoke.describe(error, submission)
    assert smoke.culprit_frame(frames, submission).lineno == 2
    assert described == f"KeyError: 'momentum' ({submission}:2)"
    elsewhere = smoke.culprit_frame(frames, tmp_path / "other" / "submission.py")
    assert (elsewhere.filename, elsewhere.lineno) == (frames[0].filename, frames[0].lineno)


def test_a_workload_past_its_time_fails():
    """A hang is that workload's failure (1 s: mnist's trial takes several)."""
    submission = str(NADAMW / "submission_torch.py")
    args = smoke_parser().parse_args(["smoke", "--submission_path", submission])
    outcome = smoke.run_isolated("mnist", smoke._request(args), timeout_sec=1.0)
    assert outcome.status == smoke.FAILED and outcome.error.startswith("timed out after")


# --- slow: the real processes ------------------------------------------------------------------
@pytest.mark.slow
def test_a_submission_failing_on_one_workload_is_reported_there_alone(tmp_path, capsys):
    """cifar fails in the submission's update_params; mnist, run after it, passes: its process
    starts clean (the submission's module state would say otherwise)."""
    submission = tmp_path / "submission.py"
    submission.write_text(FAILS_ON_CIFAR)
    code, out, err = smoke_main(
        capsys,
        "--submission_path", str(submission),
        "--tuning_search_space", SEARCH_SPACE,
        "--workloads", "cifar,mnist",
        "--tracebacks",
    )  # fmt: skip
    assert code == 1, out + err
    table = rows(out)
    assert list(table) == ["cifar", "mnist"]
    assert smoke.FAILED in table["cifar"]
    assert "update_params raised ValueError at step 0: no cifar here" in table["cifar"]
    assert table["cifar"].endswith(f"({submission}:{RAISE_LINE})")
    assert " ok " in table["mnist"] and "leaked" not in out
    assert f'File "{submission}", line {RAISE_LINE}, in update_params' in out  # --tracebacks


@pytest.mark.slow
@pytest.mark.parametrize(
    ("framework", "file", "names"),
    [
        ("pytorch", "submission_torch.py", "mnist,ogbg_gelu"),  # a variant: batch size of its base
        ("jax", "submission_jax.py", "mnist,cifar"),  # XLA compiles these two fastest
    ],
)
def test_the_reference_submission_passes(capsys, framework, file, names):
    code, out, err = smoke_main(
        capsys,
        "--submission_path", str(NADAMW / file),
        "--framework", framework,
        "--workloads", names,
    )  # fmt: skip
    assert code == 0, out + err
    assert all(" ok " in row for row in rows(out).values()) and len(rows(out)) == 2
    assert "2 of 2 workloads ok, 0 failed" in out


@pytest.mark.slow
def test_a_submission_that_does_not_load_stops_the_check(tmp_path, capsys):
    submission = tmp_path / "submission.py"
    submission.write_text(textwrap.dedent("import algoperf_no_such_module\n"))
    code, out, err = smoke_main(
        capsys, "--submission_path", str(submission), "--workloads", "mnist,cifar"
    )
    assert code == 1 and list(rows(out)) == ["mnist"]
    assert "No module named 'algoperf_no_such_module'" in rows(out)["mnist"]
    assert f"({submission}:1)" in rows(out)["mnist"]
    assert "the other workloads were not run" in err


def test_a_process_that_dies_is_described_in_one_line():
    assert smoke._ended(-9, "loading\n") == "killed by SIGKILL (out of memory?): loading"
    assert smoke._ended(3, "") == "the process exited with status 3 before reporting"


@pytest.mark.slow
def test_a_killed_process_is_that_workloads_failure(tmp_path, capsys):
    submission = tmp_path / "submission.py"
    submission.write_text(
        textwrap.dedent(
            """\
            import os
            import signal

            from algoperf.submissions.nadamw.submission_torch import (  # noqa: F401
                data_selection, get_batch_size, init_optimizer_state,
            )


            def update_params(*args, **kwargs):
                os.kill(os.getpid(), signal.SIGKILL)
            """
        )
    )
    code, out, _ = smoke_main(
        capsys,
        "--submission_path", str(submission),
        "--tuning_search_space", SEARCH_SPACE,
        "--workloads", "mnist",
    )  # fmt: skip
    assert code == 1 and "killed by SIGKILL" in rows(out)["mnist"]
