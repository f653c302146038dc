"""A trial's reliability under operators' mistakes: one writer per trial folder (an OS lock),
Ctrl-C as a stop request with a hard deadline, a lost eval_measurements.csv rebuilt from the
checkpoint, a rerun of a finished run, and non-finite eval metrics reported."""

from __future__ import annotations

import csv
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from algoperf import loop, trial_lock
from algoperf.trial import StopRequests, non_finite_metrics

ROOT = pathlib.Path(__file__).resolve().parent.parent


def env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}


# --- the trial lock -------------------------------------------------------------------------


def hold_lock_in_another_process(trial_dir: pathlib.Path) -> subprocess.Popen:
    code = textwrap.dedent(
        f"""
        import pathlib, sys, time
        from algoperf.trial_lock import TrialLock
        TrialLock(pathlib.Path({str(trial_dir)!r})).acquire()
        print("held", flush=True)
        time.sleep(600)
        """
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], env=env(), stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_writer_is_refused_naming_the_first_and_a_dead_one_is_stale(tmp_path):
    trial = tmp_path / "trial_1"
    holder = hold_lock_in_another_process(trial)
    try:
        with pytest.raises(trial_lock.TrialBusyError) as error:
            trial_lock.TrialLock(trial).acquire()
        message = str(error.value)
        assert f"pid {holder.pid}" in message and str(trial) in message
        assert "\n" not in message
    finally:
        holder.kill()  # SIGKILL: the kernel drops its lock; the file it wrote stays behind
        holder.wait()
    assert (trial / trial_lock.LOCK_FILE).read_text()  # the dead holder's record is still there
    lock = trial_lock.TrialLock(trial).acquire()  # stale: taken over
    assert f'"pid": {os.getpid()}' in (trial / trial_lock.LOCK_FILE).read_text()
    # One process, two opens of the same lock: flock locks belong to the open file.
    with pytest.raises(trial_lock.TrialBusyError):
        trial_lock.TrialLock(trial).acquire()
    lock.release()


def test_release_keeps_a_trial_with_logs_and_removes_an_empty_one(tmp_path):
    empty, used = tmp_path / "trial_1", tmp_path / "trial_2"
    trial_lock.TrialLock(empty).acquire().release()
    assert not empty.exists()  # a run that failed before writing leaves nothing to block a rerun
    lock = trial_lock.TrialLock(used).acquire()
    (used / "hparams.json").write_text("{}")
    lock.release()
    assert (used / "hparams.json").exists() and (used / trial_lock.LOCK_FILE).read_text() == ""


def test_overwrite_waits_for_no_one_and_refuses_a_busy_trial(tmp_path):
    (tmp_path / "trial_1").mkdir()
    holder = hold_lock_in_another_process(tmp_path / "trial_2")
    try:
        with (
            pytest.raises(trial_lock.TrialBusyError, match="trial_2"),
            trial_lock.all_trials_locked(tmp_path),
        ):
            pytest.fail("entered although trial_2 is locked")
    finally:
        holder.kill()
        holder.wait()
    with trial_lock.all_trials_locked(tmp_path):
        pass
    trial_lock.TrialLock(tmp_path / "trial_1").acquire().release()  # trial_1's lock was released


# --- Ctrl-C ---------------------------------------------------------------------------------


@pytest.fixture
def default_sigint():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_is_a_stop_request_and_a_second_one_stops_at_once(default_sigint, capsys):
    """The second Ctrl-C raises; it is also remembered, because Python prints and drops a
    KeyboardInterrupt raised inside a finaliser: the loop's next poll raises it again."""
    with StopRequests(grace_sec=30) as stop:
        assert not stop.requested()
        signal.raise_signal(signal.SIGINT)
        assert stop.requested() and stop.interrupted  # taken by the loop: the timer is off
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):  # and the loop's next poll raises it again
            stop.requested()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert "Ctrl-C again" in capsys.readouterr().err


def test_ctrl_c_the_loop_does_not_take_in_time_interrupts(default_sigint):
    """Loading data, compiling, evaluating: no step polls the flag, so the grace timer ends
    the run within seconds."""
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt), StopRequests(grace_sec=0.3):
        signal.raise_signal(signal.SIGINT)
        while time.monotonic() - start < 30:
            time.sleep(0.01)  # a long eval that never polls
    assert time.monotonic() - start < 5


def test_sigterm_sets_the_flag_without_a_deadline(default_sigint):
    with StopRequests(grace_sec=0.1) as stop:
        signal.raise_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert stop.requested() and not stop.interrupted


# --- non-finite metrics ---------------------------------------------------------------------


def test_non_finite_metrics_names_the_first_one():
    state = loop.LoopState()
    state.eval_results = [
        (1, {"validation/loss": 2.3, "validation/num_examples": 500}),
        (11, {"validation/loss": float("nan"), "train/loss": float("inf")}),
    ]
    assert non_finite_metrics(state) == "validation/loss is nan at step 11"
    state.eval_results = state.eval_results[:1]
    assert non_finite_metrics(state) is None


# --- end to end -----------------------------------------------------------------------------


def run(tmp_path, *extra, name="rel", steps=30):
    args = [
        sys.executable, "-m", "algoperf", "run", "--data_dir", str(tmp_path / "data"),
        "--experiment_dir", str(tmp_path / "exp"), "--experiment_name", name,
        "--rng_seed", "3", "--max_global_steps", str(steps), "--eval_every_steps", "10",
        "--torch_compile", "false", "--download", "false", "--progress", "false", *extra,
    ]  # fmt: skip
    return subprocess.run(args, env=env(), capture_output=True, text=True, timeout=600)


def rows(path: pathlib.Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_two_writers_of_one_trial(tmp_path):
    """resume/resume and resume/overwrite: the second run is refused with one line naming the
    first, and leaves the first one's folder as it was."""
    assert run(tmp_path).returncode == 0
    trial = tmp_path / "exp" / "rel" / "mnist_pytorch" / "trial_1"
    (trial / "trial_complete.json").unlink()  # a stopped trial
    before = {p.name: p.read_bytes() for p in trial.iterdir() if p.is_file()}
    lock = trial_lock.TrialLock(trial).acquire()  # this test is the first writer
    try:
        for flag in ("--resume_last_run", "--overwrite"):
            second = run(tmp_path, flag)
            assert second.returncode == 1, second.stderr[-2000:]
            assert "Traceback" not in second.stderr
            last = second.stderr.strip().splitlines()[-1]
            assert "another algoperf run" in last and f"pid {os.getpid()}" in last, last
            assert trial.is_dir(), f"{flag} deleted the first writer's folder"
            after = {p.name: p.read_bytes() for p in trial.iterdir() if p.is_file()}
            assert {k: v for k, v in after.items() if k != ".lock"} == {
                k: v for k, v in before.items() if k != ".lock"
            }
    finally:
        lock.release()
    resumed = run(tmp_path, "--resume_last_run")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    steps = [row["global_step"] for row in rows(trial / "eval_measurements.csv")]
    assert steps == ["1", "11", "21", "30"]


@pytest.mark.slow
def test_lost_eval_file_is_rebuilt_and_a_finished_run_reruns_as_success(tmp_path):
    assert run(tmp_path).returncode == 0
    trial = tmp_path / "exp" / "rel" / "mnist_pytorch" / "trial_1"
    original = rows(trial / "eval_measurements.csv")
    assert [row["global_step"] for row in original] == ["1", "11", "21", "30"]
    (trial / "trial_complete.json").unlink()  # stopped after its last checkpoint
    (trial / "eval_measurements.csv").unlink()
    resumed = run(tmp_path, "--resume_last_run")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "rebuilt it from the checkpoint's 4 eval row(s)" in resumed.stderr
    assert rows(trial / "eval_measurements.csv") == original

    again = run(tmp_path, "--resume_last_run")  # every trial complete: nothing to do
    assert again.returncode == 0, again.stderr[-2000:]
    assert "complete; skipping it" in again.stderr
    assert rows(trial / "eval_measurements.csv") == original


NAN_SUBMISSION = """
import torch

from algoperf.submissions.nadamw.submission_torch import (  # noqa: F401
    data_selection, get_batch_size, init_optimizer_state, update_params)


def prepare_for_eval(workload, current_param_container, current_params_types, model_state,
                     hyperparameters, loss_type, optimizer_state, eval_results, global_step,
                     rng):
    if global_step > 10:
        with torch.no_grad():
            for parameter in current_param_container.parameters():
                parameter.fill_(float("nan"))
    return optimizer_state, current_param_container, model_state
"""


@pytest.mark.slow
def test_non_finite_eval_metrics_are_reported(tmp_path):
    submission = tmp_path / "nan_submission.py"
    submission.write_text(NAN_SUBMISSION)
    result = run(
        tmp_path,
        "--submission_path", str(submission),
        "--tuning_search_space", str(ROOT / "submissions/nadamw/tuning_search_space.json"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "diverged" in result.stderr and "is nan at step 11" in result.stderr
    trial = tmp_path / "exp" / "rel" / "mnist_pytorch" / "trial_1"
    import json

    summary = json.loads((trial / "trial_complete.json").read_text())
    assert summary["non_finite_metrics"].endswith("is nan at step 11")
