"""A submission's failures at run time (docs/rules.md "Exit status"): what its functions raise or
return wrongly becomes `SubmissionFailed` naming the function and step (exit 1, with its
traceback); bad batch sizes are one line; a list-form search space runs only its points."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import subprocess
import sys
import types

import numpy as np
import pytest

from algoperf import spec
from algoperf.cli import main as cli_main
from algoperf.clock import Clock
from algoperf.config import RunConfig
from algoperf.errors import StorageError, SubmissionFailed
from algoperf.loop import LoopSettings, TrainVars, train_loop
from algoperf.submission import Submission
from algoperf.trial import global_batch_size

ROOT = pathlib.Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "submissions" / "nadamw" / "submission_torch.py"
FAIL_AT = 3
UPDATE_RESULT = "(optimizer_state, params, model_state)"


# ---------------------------------------------------------------------------------------------
# The loop, with a fake workload and submission


class FakeBackend:
    def step_rng_block(self, key, step):
        return step, [("select", "update", "prep", "eval")]


class FakeWorkload:
    model_params_types = {}
    loss_type = spec.LossType.SOFTMAX_CROSS_ENTROPY

    def eval_model(self, *args):
        return {"validation/accuracy": 0.0, "test/accuracy": 0.0}

    def has_reached_validation_target(self, result):
        return False

    def has_reached_test_target(self, result):
        return False


def fake_submission(*, data_selection=None, update_params=None, prepare_for_eval=None):
    """A submission whose three loop functions work unless replaced; each gets the step."""

    def select(workload, queue, opt_state, params, model_state, hp, global_step, rng):
        return next(queue)

    def update(workload, params, types_, model_state, hp, batch, loss, opt, evals, step, rng):
        return opt, params, model_state

    def prepare(workload, params, types_, model_state, hp, loss, opt, evals, step, rng):
        return opt, params, model_state

    return Submission(
        path=None,
        module=types.ModuleType("fake"),
        get_batch_size=lambda name: 8,
        init_optimizer_state=lambda *args: {},
        update_params=update_params or update,
        data_selection=data_selection or select,
        prepare_for_eval=prepare_for_eval or prepare,
        get_eval_batch_size=None,
        update_params_takes_train_state=False,
    )


def run_fake_loop(submission, *, max_steps=10):
    settings = LoopSettings(
        budget_sec=1e9,
        eval_period_sec=1e9,
        global_batch_size=8,
        eval_batch_size=8,
        data_dir="",
        max_global_steps=max_steps,
        eval_every_steps=2,  # prepare_for_eval after steps 1, 3, 5, ...
    )
    return train_loop(
        FakeWorkload(),
        submission,
        None,
        TrainVars("params", "model_state", {}),
        iter(lambda: {}, None),
        "key",
        backend=FakeBackend(),
        clock=Clock(time_fn=lambda: 0.0),
        settings=settings,
    )


def failing(function_name: str, error: Exception):
    """A fake submission whose `function_name` raises `error` at step FAIL_AT."""

    def select(workload, queue, opt_state, params, model_state, hp, global_step, rng):
        if global_step == FAIL_AT:
            raise error
        return next(queue)

    def update(workload, params, types_, model_state, hp, batch, loss, opt, evals, step, rng):
        if step == FAIL_AT:
            raise error
        return opt, params, model_state

    def prepare(workload, params, types_, model_state, hp, loss, opt, evals, step, rng):
        if step == FAIL_AT:
            raise error
        return opt, params, model_state

    functions = {"data_selection": select, "update_params": update, "prepare_for_eval": prepare}
    return fake_submission(**{function_name: functions[function_name]})


def returning(function_name: str, value):
    """A fake submission whose `function_name` returns `value` at step FAIL_AT."""

    def update(workload, params, types_, model_state, hp, batch, loss, opt, evals, step, rng):
        return value if step == FAIL_AT else (opt, params, model_state)

    def prepare(workload, params, types_, model_state, hp, loss, opt, evals, step, rng):
        return value if step == FAIL_AT else (opt, params, model_state)

    functions = {"update_params": update, "prepare_for_eval": prepare}
    return fake_submission(**{function_name: functions[function_name]})


@pytest.mark.parametrize("function_name", ["data_selection", "update_params", "prepare_for_eval"])
@pytest.mark.parametrize("error", [RuntimeError("boom"), ValueError("bad value")])
def test_what_a_step_function_raises_names_the_function_and_step(function_name, error):
    with pytest.raises(SubmissionFailed) as caught:
        run_fake_loop(failing(function_name, error))
    failure = caught.value
    assert (failure.function, failure.step) == (function_name, FAIL_AT)
    assert failure.__cause__ is error  # the submission's own exception and traceback
    assert not isinstance(failure, ValueError)  # a ValueError of the submission is no usage error
    assert str(failure) == f"{function_name} raised {type(error).__name__} at step 3: {error}"


@pytest.mark.parametrize("function_name", ["update_params", "prepare_for_eval"])
@pytest.mark.parametrize(
    ("value", "described"),
    [(None, "None"), (("opt", "params"), "a tuple of 2 values"), (7, "a value of type int")],
)
def test_a_wrong_result_is_one_line_naming_the_function(function_name, value, described):
    with pytest.raises(SubmissionFailed) as caught:
        run_fake_loop(returning(function_name, value))
    failure = caught.value
    assert (failure.function, failure.step) == (function_name, FAIL_AT)
    assert failure.__cause__ is None  # nothing to show but the line
    assert str(failure) == (
        f"{function_name} must return {UPDATE_RESULT}; it returned {described} at step 3"
    )


def test_a_list_of_three_and_training_complete_are_no_failures():
    def update(workload, params, types_, model_state, hp, batch, loss, opt, evals, step, rng):
        if step == FAIL_AT:
            raise spec.TrainingCompleteError
        return [opt, params, model_state]

    state = run_fake_loop(fake_submission(update_params=update))
    assert state.training_complete and state.global_step == FAIL_AT + 1


def test_a_storage_error_in_data_selection_is_not_the_submissions():
    error = StorageError("/data/mnist/train.npz: truncated; download it again")
    with pytest.raises(StorageError) as caught:
        run_fake_loop(failing("data_selection", error))
    assert caught.value is error


# ---------------------------------------------------------------------------------------------
# Batch sizes


def batch_submission(get_batch_size):
    return dataclasses.replace(fake_submission(), get_batch_size=get_batch_size)


@pytest.mark.parametrize("value", [0, -8, 64.5, True, np.bool_(True), "64", None, float("nan")])
def test_a_bad_batch_size_is_one_line_naming_get_batch_size(value):
    with pytest.raises(SubmissionFailed) as caught:
        global_batch_size(batch_submission(lambda name: value), "mnist", "mnist")
    assert caught.value.function == "get_batch_size" and caught.value.__cause__ is None
    assert str(caught.value) == (
        f"get_batch_size must return a positive integer batch size; it returned {value!r}"
    )


@pytest.mark.parametrize("value", [64, np.int64(64), np.int32(64), 64.0, np.float32(64)])
def test_integral_batch_sizes_are_ints(value):
    size = global_batch_size(batch_submission(lambda name: value), "mnist", "mnist")
    assert size == 64 and type(size) is int


def test_get_batch_size_falls_back_to_the_base_name_then_fails_as_the_submissions():
    def get_batch_size(name):
        return {"mnist": 128}[name]

    assert global_batch_size(batch_submission(get_batch_size), "mnist_variant", "mnist") == 128
    with pytest.raises(SubmissionFailed) as caught:
        global_batch_size(batch_submission(get_batch_size), "cifar", "cifar")
    assert isinstance(caught.value.__cause__, KeyError)
    assert str(caught.value) == "get_batch_size raised KeyError: 'cifar'"


# ---------------------------------------------------------------------------------------------
# The command line's report


def submission_frame(step):
    raise RuntimeError(f"boom at step {step}")


def caught_failure() -> SubmissionFailed:
    from algoperf.submission import call_guarded  # a runner frame above the submission's

    try:
        call_guarded("update_params", submission_frame, 10, step=10)
    except SubmissionFailed as failure:
        return failure
    raise AssertionError("no failure")


def test_a_submission_failure_prints_its_traceback_then_one_line(capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert cli_main._report_failure("run", caught_failure()) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert "algoperf/submission.py" not in "\n".join(lines)  # the runner's frame is cut
    assert any("in submission_frame" in line for line in lines)
    assert lines[-2] == "RuntimeError: boom at step 10"
    assert lines[-1] == (
        "algoperf run: error: update_params raised RuntimeError at step 10: boom at step 10"
    )


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (StorageError("/exp: read-only file system; pick a writable --experiment_dir"), 1),
        (SubmissionFailed("update_params must return ...", function="update_params", step=3), 1),
        (ValueError("--num_tuning_trials must be at least 1."), 2),
        (FileExistsError("/exp/mnist_pytorch already holds logs"), 2),
    ],
)
def test_one_line_errors_and_their_status(capsys, monkeypatch, error, status):
    monkeypatch.delenv("RANK", raising=False)
    assert cli_main._report_failure("tune", error) == status
    assert capsys.readouterr().err == f"algoperf tune: error: {error}\n"


# ---------------------------------------------------------------------------------------------
# Trials of a list-form search space


@pytest.fixture
def list_space(tmp_path):
    point = json.loads((REFERENCE.parent / "tuning_search_space.json").read_text())[0]
    path = tmp_path / "space.json"
    path.write_text(json.dumps([point, {**point, "learning_rate": 0.01}, point]))
    return str(path)


def test_trials_stop_at_the_last_point_of_a_list_form_space(list_space):
    config = RunConfig(tuning_search_space=list_space, num_tuning_trials=5)
    assert config.trial_indices == range(0, 3)
    assert RunConfig(tuning_search_space=list_space, num_tuning_trials=2).trial_indices == range(2)
    assert RunConfig(
        tuning_search_space=list_space, num_tuning_trials=5, hparam_start_index=1
    ).trial_indices == range(1, 3)
    past = RunConfig(tuning_search_space=list_space, num_tuning_trials=5, hparam_start_index=3)
    with pytest.raises(ValueError, match="--hparam_start_index 3 is past the last of the 3"):
        list(past.trial_indices)


def test_dict_form_and_self_tuning_run_every_trial():
    assert RunConfig(
        submission_path=str(ROOT / "submissions/adamw/submission_torch.py"), num_tuning_trials=7
    ).trial_indices == range(7)
    assert RunConfig(tuning_ruleset="self", num_tuning_trials=2).trial_indices == range(2)


# ---------------------------------------------------------------------------------------------
# End to end: `algoperf run` on mnist with a broken copy of the reference submission


def algoperf_run(tmp_path, *args, warnings="ignore"):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": warnings}
    env.pop("RANK", None)
    command = [sys.executable, "-m", "algoperf", "run", "--torch_compile", "false"]
    command += ["--download", "false", "--progress", "false", "--rng_seed", "0"]
    command += ["--data_dir", str(tmp_path / "data"), "--experiment_dir", str(tmp_path / "exp")]
    command += ["--experiment_name", "broken", "--eval_every_steps", "5", *args]
    return subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )


# Appended to a copy of the reference: the broken function wraps the reference's own.
BROKEN = {
    "update_params raises": (
        "update_params",
        "if args[9] == 10:\n        raise RuntimeError(f'boom at step {args[9]}')",
    ),
    "update_params returns None": ("update_params", "if args[9] == 10:\n        return None"),
    "update_params returns a pair": (
        "update_params",
        "if args[9] == 10:\n        return args[7], args[1]",
    ),
    "data_selection raises": (
        "data_selection",
        "if args[6] == 10:\n        raise KeyError('no such batch')",
    ),
    "prepare_for_eval raises": (
        "prepare_for_eval",
        "if args[8] == 6:\n        raise ValueError('bad eval')",
    ),
    "init_optimizer_state raises": ("init_optimizer_state", "raise ValueError('bad init')"),
    "get_batch_size returns 64.5": ("get_batch_size", "return 64.5"),
    "get_eval_batch_size returns 0": ("get_eval_batch_size", "return 0"),
}
EXPECTED = {
    "update_params raises": "update_params raised RuntimeError at step 10: boom at step 10",
    "update_params returns None": (
        f"update_params must return {UPDATE_RESULT}; it returned None at step 10"
    ),
    "update_params returns a pair": (
        f"update_params must return {UPDATE_RESULT}; it returned a tuple of 2 values at step 10"
    ),
    "data_selection raises": "data_selection raised KeyError at step 10: 'no such batch'",
    "prepare_for_eval raises": "prepare_for_eval raised ValueError at step 6: bad eval",
    "init_optimizer_state raises": "init_optimizer_state raised ValueError: bad init",
    "get_batch_size returns 64.5": (
        "get_batch_size must return a positive integer batch size; it returned 64.5"
    ),
    "get_eval_batch_size returns 0": (
        "get_eval_batch_size must return a positive integer batch size; it returned 0"
    ),
}


def broken_submission(folder: pathlib.Path, case: str) -> pathlib.Path:
    function_name, body = BROKEN[case]
    reference = REFERENCE.read_text()
    if function_name not in reference:  # an optional function the reference lacks
        reference += f"\n\ndef {function_name}(*args):\n    return 128\n"
    text = (
        f"{reference}\n\n_reference_{function_name} = {function_name}\n\n\n"
        f"def {function_name}(*args):\n    {body}\n"
        f"    return _reference_{function_name}(*args)\n"
    )
    path = folder / "broken" / "submission.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    (path.parent / "tuning_search_space.json").write_text(
        (REFERENCE.parent / "tuning_search_space.json").read_text()
    )
    return path


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_submission_exits_1_naming_the_function_and_step(tmp_path, case):
    path = broken_submission(tmp_path, case)
    result = algoperf_run(tmp_path, "--submission_path", str(path), "--max_global_steps", "12")
    assert result.returncode == 1, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == f"algoperf run: error: {EXPECTED[case]}", result.stderr[-3000:]
    if "raises" in case:  # the submission's traceback, without the runner's frames
        trace = result.stderr[result.stderr.index("Traceback (most recent call last):") :]
        assert re.search(r'File ".*broken/submission.py", line \d+, in ', trace)
        assert "algoperf/loop.py" not in trace and "algoperf/trial.py" not in trace
    else:  # a wrong value: the line alone
        assert "Traceback" not in result.stderr
    if "batch_size" in case:  # before any trial: the same command runs once the value is fixed
        path.write_text(REFERENCE.read_text())
        again = algoperf_run(tmp_path, "--submission_path", str(path), "--max_global_steps", "2")
        assert again.returncode == 0, again.stderr[-3000:]


@pytest.mark.slow
def test_more_trials_than_list_form_points_runs_every_point(tmp_path):
    num_points = len(json.loads((REFERENCE.parent / "tuning_search_space.json").read_text()))
    result = algoperf_run(
        tmp_path,
        "--submission_path",
        str(REFERENCE),
        "--num_tuning_trials",
        str(num_points + 2),
        "--max_global_steps",
        "1",
        warnings="ignore,default::UserWarning:algoperf.trial",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        f"asked for {num_points + 2} trials but the list-form search space has only "
        f"{num_points} points; running {num_points}"
    ) in result.stderr
    folder = tmp_path / "exp" / "broken" / "mnist_pytorch"
    assert sorted(path.name for path in folder.iterdir()) == [
        f"trial_{index + 1}" for index in range(num_points)
    ]
