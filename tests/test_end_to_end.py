"""End to end: `algoperf run` trains mnist in both frameworks and writes upstream's log files;
every reference submission reaches 0.90 on the offline MNIST sample inside mnist's budget."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
UPSTREAM_COLUMNS = {
    "accumulated_eval_time",
    "accumulated_logging_time",
    "accumulated_submission_time",
    "global_step",
    "preemption_count",
    "score",
    "total_duration",
    "train/accuracy",
    "train/loss",
    "validation/accuracy",
    "validation/loss",
    "validation/num_examples",
    "test/accuracy",
    "test/loss",
    "test/num_examples",
}


def algoperf(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "algoperf", "run", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def read_rows(path: pathlib.Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["pytorch", "jax"])
def test_run_writes_upstream_logs(tmp_path, framework):
    args = [
        "--framework",
        framework,
        "--data_dir",
        str(tmp_path / "data"),
        "--experiment_dir",
        str(tmp_path / "exp"),
        "--experiment_name",
        "e2e",
        "--rng_seed",
        "3",
        "--max_global_steps",
        "60",
        # A cold torch.compile can eat most of mnist's 60 s budget on 2 loaded cores; compiled
        # runs are covered by tests/test_ddp.py and the benches.
        "--torch_compile",
        "false",
        "--download",
        "false",
        "--progress",
        "false",
    ]
    result = algoperf(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    trial = tmp_path / "exp" / "e2e" / f"mnist_{framework}" / "trial_1"
    for name in (
        "hparams.json",
        "meta_data_0.json",
        "flags_0.json",
        "eval_measurements.csv",
        "measurements.csv",
    ):
        assert (trial / name).is_file(), name
    rows = read_rows(trial / "eval_measurements.csv")
    with open(trial / "eval_measurements.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert header == sorted(header) and set(header) == UPSTREAM_COLUMNS
    # First eval right after step 1, final eval at max_global_steps.
    assert rows[0]["global_step"] == "1" and rows[-1]["global_step"] == "60"
    assert float(rows[-1]["validation/accuracy"]) > float(rows[0]["validation/accuracy"])
    assert rows[-1]["validation/num_examples"] == "500"  # the offline sample's validation split
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores) and all(
        s == float(r["accumulated_submission_time"]) for s, r in zip(scores, rows)
    )
    meta = json.loads((trial / "meta_data_0.json").read_text())
    assert meta["rng_seed"] == 3 and meta["workload.max_allowed_runtime_sec"] == 60
    flags = json.loads((trial / "flags_0.json").read_text())
    assert flags["framework"] == framework and flags["max_global_steps"] == 60
    hparams = json.loads((trial / "hparams.json").read_text())
    assert set(hparams) >= {"learning_rate", "weight_decay"}
    assert "score" in read_rows(trial / "measurements.csv")[-1]
    assert "Results are NOT comparable" in result.stderr  # the loud offline-data warning

    # The same experiment again is refused, not prompted, and nothing is touched ...
    before = (trial / "eval_measurements.csv").read_text()
    again = algoperf(*args, cwd=tmp_path)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert (trial / "eval_measurements.csv").read_text() == before
    # ... unless --overwrite is given.
    overwritten = algoperf(*args, "--overwrite", "--max_global_steps", "3", cwd=tmp_path)
    assert overwritten.returncode == 0, overwritten.stderr[-2000:]
    assert read_rows(trial / "eval_measurements.csv")[-1]["global_step"] == "3"


SUBMISSIONS = ["nadamw", "nadamw_self_tuning", "adamw", "sgd_nesterov"]


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["pytorch", "jax"])
@pytest.mark.parametrize("name", SUBMISSIONS)
def test_reference_submission_reaches_090_on_offline_mnist(tmp_path, name, framework):
    file = "submission_torch.py" if framework == "pytorch" else "submission_jax.py"
    ruleset = "self" if name.endswith("self_tuning") else "external"
    result = algoperf(
        "--framework",
        framework,
        "--submission_path",
        str(ROOT / "submissions" / name / file),
        "--tuning_ruleset",
        ruleset,
        "--data_dir",
        str(tmp_path / "data"),
        "--experiment_dir",
        str(tmp_path / "exp"),
        "--rng_seed",
        "0",
        "--max_global_steps",
        "400",
        "--torch_compile",
        "false",
        "--download",
        "false",
        "--progress",
        "false",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    csv_path = next((tmp_path / "exp").rglob("eval_measurements.csv"))
    last = read_rows(csv_path)[-1]
    print(
        f"{name} {framework}: validation/accuracy {float(last['validation/accuracy']):.4f} "
        f"after {last['global_step']} steps, {float(last['score']):.1f}s submission time"
    )
    assert float(last["validation/accuracy"]) >= 0.90
    budget = json.loads((csv_path.parent / "meta_data_0.json").read_text())["budget_sec"]
    assert budget == (90.0 if ruleset == "self" else 60.0)
    assert float(last["score"]) < budget  # inside mnist's budget (self-tuning: 1.5x)


def test_bad_flags_give_one_line_errors(tmp_path):
    result = algoperf(
        "--workload", "not_a_workload", "--experiment_dir", str(tmp_path), cwd=tmp_path
    )
    assert result.returncode == 2
    assert "unknown workload 'not_a_workload'" in result.stderr and "mnist" in result.stderr
    result = algoperf("--tuning_ruleset", "sometimes", cwd=tmp_path)
    assert result.returncode == 2 and "--tuning_ruleset" in result.stderr
    result = algoperf("--workload", "criteo1tb", "--experiment_dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "has no pytorch model" in result.stderr


def test_help_lists_upstream_flag_names():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "algoperf", "run", "--help"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in (
        "--workload",
        "--framework",
        "--submission_path",
        "--tuning_search_space",
        "--tuning_ruleset",
        "--num_tuning_trials",
        "--data_dir",
        "--experiment_dir",
        "--experiment_name",
        "--rng_seed",
        "--max_global_steps",
        "--torch_compile",
        "--overwrite",
        "--resume_last_run",
        "--benchmark_version",
        "--data-dir",
    ):
        assert flag in out, flag


@pytest.mark.slow
def test_resume_skips_complete_trials_and_restarts_unfinished_ones(tmp_path):
    args = [
        "--framework",
        "pytorch",
        "--data_dir",
        str(tmp_path / "data"),
        "--experiment_dir",
        str(tmp_path / "exp"),
        "--experiment_name",
        "resume",
        "--rng_seed",
        "5",
        "--num_tuning_trials",
        "2",
        "--max_global_steps",
        "3",
        "--save_checkpoints",
        "false",  # this test covers a trial with no checkpoint to resume from
        "--torch_compile",
        "false",
        "--download",
        "false",
        "--progress",
        "false",
    ]
    assert algoperf(*args, cwd=tmp_path).returncode == 0
    folder = tmp_path / "exp" / "resume" / "mnist_pytorch"
    first = (folder / "trial_1" / "eval_measurements.csv").read_text()
    # Make trial 2 look interrupted: logs present, no completion marker.
    (folder / "trial_2" / "trial_complete.json").unlink()
    hparams = (folder / "trial_2" / "hparams.json").read_text()
    result = algoperf(*args, "--resume_last_run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "trial_1 is complete; skipping it" in result.stderr
    assert "restarting it from step 0" in result.stderr
    assert (folder / "trial_1" / "eval_measurements.csv").read_text() == first
    assert (folder / "trial_2" / "hparams.json").read_text() == hparams
    rows = read_rows(folder / "trial_2" / "eval_measurements.csv")
    assert [r["global_step"] for r in rows] == ["1", "3"]  # not appended to the old rows


@pytest.mark.slow
def test_ctrl_c_stops_cleanly(tmp_path):
    import signal
    import time

    # faulthandler: if the run ever ignores the interrupt, SIGABRT dumps every thread's stack.
    env = {
        **os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore",
        "PYTHONFAULTHANDLER": "1",
    }  # fmt: skip
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "algoperf",
            "run",
            "--framework",
            "pytorch",
            "--data_dir",
            str(tmp_path / "data"),
            "--experiment_dir",
            str(tmp_path / "exp"),
            "--download",
            "false",
            "--torch_compile",
            "false",
            "--progress",
            "false",
        ],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        # A shell's background job inherits SIGINT ignored (so does this test run as one): the
        # run gets Ctrl-C's default disposition, as in a terminal.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    trial = tmp_path / "exp" / "nadamw_external" / "mnist_pytorch" / "trial_1"
    deadline = time.time() + 120
    while not (trial / "eval_measurements.csv").exists() and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)  # the stacks, then no orphan left running
        _, stderr = process.communicate(timeout=30)
        pytest.fail(f"still running 60 s after SIGINT; its stacks:\n{stderr[-6000:]}")
    assert process.returncode == 130
    assert "interrupted (Ctrl-C)" in stderr and "Traceback" not in stderr
    # Like SIGTERM: a checkpoint at the next step, and the way to continue named.
    assert "has a checkpoint at step" in stderr and "--resume_last_run" in stderr, stderr[-2000:]
    (checkpoint,) = trial.glob("checkpoint_*")
    assert (checkpoint / "loop.json").exists()
    rows = read_rows(trial / "eval_measurements.csv")
    assert rows and all(row["score"] for row in rows)
    assert not (trial / "trial_complete.json").exists()
