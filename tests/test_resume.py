"""Checkpoint and exact resume: a trial killed (SIGKILL) after a checkpoint and resumed ends with
the same eval rows and the same parameters as an uninterrupted one (deterministic mode, CPU)."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
METRIC_PREFIXES = ("train/", "validation/", "test/")


def command(tmp_path, framework, name, *extra):
    return [
        sys.executable, "-m", "algoperf", "run", "--framework", framework,
        "--data_dir", str(tmp_path / "data"), "--experiment_dir", str(tmp_path / "exp"),
        "--experiment_name", name, "--rng_seed", "11", "--max_global_steps", "600",
        "--eval_every_steps", "100", "--torch_compile", "false", "--deterministic",
        "--download", "false", "--progress", "false", *extra,
    ]  # fmt: skip


def env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}


def trial_dir(tmp_path, name, framework):
    return tmp_path / "exp" / name / f"mnist_{framework}" / "trial_1"


def metric_rows(trial: pathlib.Path) -> list[dict]:
    with open(trial / "eval_measurements.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [
        {k: v for k, v in row.items() if k.startswith(METRIC_PREFIXES) or k == "global_step"}
        for row in rows
    ]


def final_params(trial: pathlib.Path, framework: str) -> list[np.ndarray]:
    (folder,) = list(trial.glob("checkpoint_*"))
    if framework == "pytorch":
        import torch

        payload = torch.load(folder / "state.pt", map_location="cpu", weights_only=False)
        return [t.numpy() for t in payload["model"].values()]
    from algoperf.jax import checkpoint as jax_checkpoint

    arrays = jax_checkpoint.read_arrays(folder)
    return [arrays[path] for path in sorted(arrays)]


def kill_after(args: list[str], trial: pathlib.Path, checkpoint: str) -> None:
    """Run `args` and SIGKILL it as soon as `checkpoint` is complete in `trial`."""
    process = subprocess.Popen(
        args, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while time.time() < deadline and not (trial / checkpoint / "loop.json").exists():
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert not (trial / "trial_complete.json").exists(), "the trial finished before the kill"


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["pytorch", "jax"])
def test_killed_after_an_eval_time_checkpoint_does_not_evaluate_again(tmp_path, framework):
    """Evals by wall time (mnist: every 10 s): killed right after the checkpoint written with
    the eval of step 1, the resumed run waits a full period from that eval, as the
    uninterrupted run would (it used to evaluate again at its first step)."""
    args = command(tmp_path, framework, "killed")
    at = args.index("--eval_every_steps")
    args = args[:at] + args[at + 2 :]
    trial = trial_dir(tmp_path, "killed", framework)
    kill_after(args, trial, "checkpoint_1")
    resumed = subprocess.run(
        [*args, "--resume_last_run"], env=env(), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr
    with open(trial / "eval_measurements.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    steps = [int(row["global_step"]) for row in rows]
    assert steps[0] == 1 and steps[-1] == 600 and steps == sorted(set(steps)), steps
    assert steps[1] > 2, steps
    # Every eval but the last (training complete) comes a full period after the previous one.
    times = [float(row["total_duration"]) for row in rows]
    gaps = [b - a for a, b in zip(times[:-2], times[1:-1])]
    assert all(gap >= 10 for gap in gaps), gaps


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["pytorch", "jax"])
def test_killed_and_resumed_trial_matches_uninterrupted(tmp_path, framework):
    """SIGKILL right after a checkpoint between evals, then --resume_last_run: the rows and
    the final parameters are those of the uninterrupted run."""
    done = subprocess.run(
        command(tmp_path, framework, "straight"),
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    trial = trial_dir(tmp_path, "killed", framework)
    kill_after(command(tmp_path, framework, "killed"), trial, "checkpoint_101")
    resumed = subprocess.run(
        command(tmp_path, framework, "killed", "--resume_last_run"),
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr
    straight = trial_dir(tmp_path, "straight", framework)
    # Both ran to max_global_steps (mnist's 60 s budget is far away at these step counts).
    assert [r["global_step"] for r in metric_rows(straight)] == [
        "1", "101", "201", "301", "401", "501", "600"]  # fmt: skip
    assert metric_rows(trial) == metric_rows(straight), resumed.stderr[-3000:]
    for a, b in zip(final_params(trial, framework), final_params(straight, framework)):
        np.testing.assert_array_equal(a, b)
    assert (trial / "meta_data_1.json").exists()  # one preemption recorded
    with open(trial / "eval_measurements.csv", newline="") as handle:
        counts = [row["preemption_count"] for row in csv.DictReader(handle)]
    assert counts[0] == "0" and counts[-1] == "1"


def short_run(tmp_path, *extra):
    args = command(tmp_path, "pytorch", "bad", *extra)
    args[args.index("--max_global_steps") + 1] = "5"
    args[args.index("--eval_every_steps") + 1] = "2"
    return subprocess.run(args, env=env(), capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_corrupt_checkpoint_and_foreign_checkpoint_are_refused(tmp_path):
    assert short_run(tmp_path).returncode == 0
    trial = trial_dir(tmp_path, "bad", "pytorch")
    (folder,) = list(trial.glob("checkpoint_*"))
    (trial / "trial_complete.json").unlink()  # pretend it was interrupted
    before = {p.name: p.read_bytes() for p in trial.iterdir() if p.is_file()}

    (folder / "state.pt").write_bytes(b"truncated")
    result = short_run(tmp_path, "--resume_last_run")
    assert result.returncode == 2 and "could not be loaded" in result.stderr
    assert len(result.stderr.strip().splitlines()[-1]) > 0 and "Traceback" not in result.stderr

    (folder / "loop.json").write_text("{not json")
    result = short_run(tmp_path, "--resume_last_run")
    assert result.returncode == 2 and "corrupt or partial" in result.stderr

    payload = {"loop_state": {}, "meta": {}}
    (folder / "loop.json").write_text(json.dumps(payload))
    assert short_run(tmp_path, "--resume_last_run").returncode == 2

    assert {p.name: p.read_bytes() for p in trial.iterdir() if p.is_file()} == before


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_of_another_setup(tmp_path):
    assert short_run(tmp_path).returncode == 0
    trial = trial_dir(tmp_path, "bad", "pytorch")
    (folder,) = list(trial.glob("checkpoint_*"))
    (trial / "trial_complete.json").unlink()
    payload = json.loads((folder / "loop.json").read_text())
    payload["meta"]["workload"] = "cifar"
    (folder / "loop.json").write_text(json.dumps(payload))
    result = short_run(tmp_path, "--resume_last_run")
    assert result.returncode == 2
    assert "workload='cifar'" in result.stderr and "--overwrite" in result.stderr


@pytest.mark.slow
def test_sigterm_checkpoints_and_stops(tmp_path):
    args = command(tmp_path, "pytorch", "term")
    args[args.index("--max_global_steps") + 1] = "200000"
    process = subprocess.Popen(args, env=env(), stderr=subprocess.PIPE, text=True)
    trial = trial_dir(tmp_path, "term", "pytorch")
    deadline = time.time() + 300
    while time.time() < deadline and not (trial / "checkpoint_101").exists():
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-2000:]
    assert "checkpoint saved at step" in stderr
    (folder,) = list(trial.glob("checkpoint_*"))
    assert int(folder.name.split("_")[1]) > 101
    assert not (trial / "trial_complete.json").exists()
