"""The timing rules (docs/rules.md, "Timing"), checked on the loop with an injected fake clock.

Every cost (a step, prepare_for_eval, an eval, logging) advances a fake wall clock by a known
amount, so every schedule and total below is worked out by hand.
"""

from __future__ import annotations

import types
from collections.abc import Mapping

import pytest

from algoperf import spec
from algoperf.clock import Clock
from algoperf.loop import (
    LoopHooks,
    LoopSettings,
    LoopState,
    TrainStateView,
    TrainVars,
    time_to_target,
    train_loop,
)
from algoperf.submission import Submission


class FakeTime:
    def __init__(self, start: float = 1_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class FakeBackend:
    def step_rngs(self, key, step):
        return tuple((use, key, step) for use in ("select", "update", "prep", "eval"))

    def step_rng_block(self, key, step):  # blocks of 3 steps, so the loop crosses blocks
        start = step - step % 3
        return start, [self.step_rngs(key, start + i) for i in range(3)]


class FakeWorkload:
    """Reports accuracy = accuracy_per_step * step; each eval costs `eval_s` of wall time."""

    model_params_types = {}
    loss_type = spec.LossType.SOFTMAX_CROSS_ENTROPY

    def __init__(self, clock_time: FakeTime, *, eval_s=0.0, accuracy_per_step=0.0, target=2.0):
        self.time = clock_time
        self.eval_s = eval_s
        self.accuracy_per_step = accuracy_per_step
        self.target = target
        self.eval_steps: list[int] = []

    def eval_model(self, batch_size, params, model_state, rng, data_dir, v2_dir, global_step):
        self.time.advance(self.eval_s)
        self.eval_steps.append(global_step)
        accuracy = self.accuracy_per_step * global_step
        return {"validation/accuracy": accuracy, "test/accuracy": accuracy}

    def has_reached_validation_target(self, result):
        return result["validation/accuracy"] > self.target

    def has_reached_test_target(self, result):
        return result["test/accuracy"] > self.target


def make_submission(
    clock_time: FakeTime,
    *,
    step_s=1.0,
    prep_s=0.0,
    complete_at=None,
    with_train_state=False,
    seen=None,
    rngs_seen=None,
):
    def update_params(
        workload,
        params,
        types_,
        model_state,
        hp,
        batch,
        loss_type,
        opt_state,
        eval_results,
        global_step,
        rng,
        train_state=None,
    ):
        clock_time.advance(step_s)
        if rngs_seen is not None:
            rngs_seen.append(rng)
        if seen is not None:
            seen.append((train_state, dict(train_state)))
        if complete_at is not None and global_step + 1 >= complete_at:
            raise spec.TrainingCompleteError
        return opt_state, params, model_state

    def update_params_plain(
        workload,
        params,
        types_,
        model_state,
        hp,
        batch,
        loss_type,
        opt_state,
        eval_results,
        global_step,
        rng,
    ):
        return update_params(
            workload,
            params,
            types_,
            model_state,
            hp,
            batch,
            loss_type,
            opt_state,
            eval_results,
            global_step,
            rng,
        )

    def prepare_for_eval(
        workload,
        params,
        types_,
        model_state,
        hp,
        loss_type,
        opt_state,
        eval_results,
        global_step,
        rng,
    ):
        clock_time.advance(prep_s)
        return opt_state, params, model_state

    def data_selection(workload, queue, opt_state, params, model_state, hp, global_step, rng):
        if rngs_seen is not None:
            rngs_seen.append(rng)
        return next(queue)

    return Submission(
        path=None,
        module=types.ModuleType("fake"),
        get_batch_size=lambda name: 8,
        init_optimizer_state=lambda *args: {},
        update_params=update_params if with_train_state else update_params_plain,
        data_selection=data_selection,
        prepare_for_eval=prepare_for_eval,
        get_eval_batch_size=None,
        update_params_takes_train_state=with_train_state,
    )


def run_loop(
    *,
    step_s=1.0,
    prep_s=0.0,
    eval_s=0.0,
    log_s=0.0,
    period=10.0,
    budget=100.0,
    max_steps=None,
    complete_at=None,
    accuracy_per_step=0.0,
    target=2.0,
    with_train_state=False,
    seen=None,
    rngs_seen=None,
):
    clock_time = FakeTime()
    workload = FakeWorkload(
        clock_time, eval_s=eval_s, accuracy_per_step=accuracy_per_step, target=target
    )
    submission = make_submission(
        clock_time,
        step_s=step_s,
        prep_s=prep_s,
        complete_at=complete_at,
        with_train_state=with_train_state,
        seen=seen,
        rngs_seen=rngs_seen,
    )
    rows = []

    def on_eval(row, state, variables):
        clock_time.advance(log_s)
        rows.append(row)

    settings = LoopSettings(
        budget_sec=budget,
        eval_period_sec=period,
        global_batch_size=8,
        eval_batch_size=8,
        data_dir="",
        max_global_steps=max_steps,
    )
    state = train_loop(
        workload,
        submission,
        None,
        TrainVars(None, None, {}),
        iter(lambda: {}, None),
        "key",
        backend=FakeBackend(),
        clock=Clock(time_fn=clock_time),
        settings=settings,
        hooks=LoopHooks(on_eval=on_eval),
    )
    return state, rows, workload


def test_first_eval_right_after_step_1_then_every_period():
    state, rows, workload = run_loop(step_s=1.0, period=10.0, budget=35.0)
    # last_eval_time starts at the epoch, so step 1 is due; then an eval every 10 s of wall time.
    assert workload.eval_steps == [1, 11, 21, 31]
    assert [row["score"] for row in rows] == [1.0, 11.0, 21.0, 31.0]


def test_eval_period_is_wall_time_including_eval_and_logging():
    # Each eval costs 3 s and logging 1 s: the next eval is due 10 s after logging ended.
    state, rows, workload = run_loop(step_s=1.0, eval_s=3.0, log_s=1.0, period=10.0, budget=30.0)
    assert workload.eval_steps == [1, 11, 21]
    # Eval and logging time are not submission time.
    assert [row["score"] for row in rows] == [1.0, 11.0, 21.0]
    assert rows[-1]["accumulated_eval_time"] == pytest.approx(9.0)
    assert rows[-1]["accumulated_logging_time"] == pytest.approx(2.0)  # before the 3rd log
    assert rows[-1]["total_duration"] == pytest.approx(21.0 + 3 * 3.0 + 2 * 1.0)


def test_prepare_for_eval_is_on_the_clock():
    state, rows, workload = run_loop(step_s=1.0, prep_s=0.5, period=10.0, budget=30.0)
    assert workload.eval_steps == [1, 11, 21]
    assert [row["score"] for row in rows] == [1.5, 12.0, 22.5]


def test_budget_stop_and_no_eval_after_the_budget_is_spent():
    # Upstream #719: steps past the budget must never produce an eval (or a target hit).
    state, rows, workload = run_loop(
        step_s=1.0, period=10.0, budget=25.0, accuracy_per_step=1.0, target=1e9
    )
    assert workload.eval_steps == [1, 11, 21]
    assert all(row["score"] < 25.0 for row in rows)
    assert not state.is_time_remaining
    # The budget is checked only at eval points: the loop ran on to the next one (step 31).
    assert state.global_step == 31
    assert state.accumulated_submission_time == pytest.approx(31.0)


def test_budget_counts_prepare_for_eval_before_the_check():
    # 20 steps reach 20 s; prepare_for_eval (0.5 s each) pushes the 3rd eval point past 21 s.
    state, rows, workload = run_loop(step_s=1.0, prep_s=0.5, period=10.0, budget=21.0)
    assert workload.eval_steps == [1, 11]
    assert state.accumulated_submission_time == pytest.approx(22.5)


def test_training_complete_error_gives_one_final_eval():
    state, rows, workload = run_loop(step_s=1.0, period=10.0, budget=100.0, complete_at=15)
    assert workload.eval_steps == [1, 11, 15]
    assert state.training_complete and state.global_step == 15


def test_training_complete_after_budget_gives_no_eval():
    state, rows, workload = run_loop(step_s=1.0, period=100.0, budget=10.0, complete_at=15)
    assert workload.eval_steps == [1]
    assert state.global_step == 15 and not state.is_time_remaining


def test_max_global_steps_stops_with_final_eval():
    state, rows, workload = run_loop(step_s=1.0, period=10.0, budget=100.0, max_steps=5)
    assert workload.eval_steps == [1, 5]
    assert state.global_step == 5


def test_stops_when_both_targets_are_reached():
    state, rows, workload = run_loop(
        step_s=1.0, period=10.0, budget=100.0, accuracy_per_step=0.1, target=2.0
    )
    # accuracy 2.1 at step 21 is the first strictly above the target.
    assert workload.eval_steps == [1, 11, 21]
    assert state.validation_goal_reached and state.test_goal_reached
    assert time_to_target(workload, state) == pytest.approx(21.0)


def test_target_comparison_is_strict_and_directional():
    from algoperf import workloads

    mnist = workloads.load("mnist", "pytorch")  # accuracy: higher is better, target 0.97
    assert not mnist.has_reached_validation_target({"validation/accuracy": 0.97})
    assert mnist.has_reached_validation_target({"validation/accuracy": 0.9701})
    assert not mnist.has_reached_validation_target({"validation/accuracy": float("nan")})
    assert not mnist.has_reached_test_target({"test/accuracy": 0.5})


def test_train_state_is_read_only_and_current():
    seen: list = []
    run_loop(step_s=1.0, period=10.0, budget=12.0, with_train_state=True, seen=seen)
    (view, first), (_, twelfth) = seen[0], seen[11]
    assert isinstance(view, Mapping)
    with pytest.raises(TypeError):
        view["training_complete"] = True
    with pytest.raises(KeyError):
        view["global_step"]  # only upstream's train_state keys
    # Read at call time: the values of that step.
    assert first["accumulated_submission_time"] == 0.0
    assert twelfth["accumulated_submission_time"] == pytest.approx(11.0)
    # Live, as upstream's dict is: a view kept by the submission shows the loop's latest values.
    # (21 steps: the budget is checked only at the eval point after step 21.)
    assert len(seen) == 21
    assert view["accumulated_submission_time"] == pytest.approx(21.0)
    assert not view["is_time_remaining"]
    assert set(first) == set(LoopState().train_state()) == set(TrainStateView.KEYS)
    assert len(first) == 9


def test_each_step_gets_its_own_keys_across_rng_blocks():
    # FakeBackend serves keys in blocks of 3 steps; 8 steps cross two block boundaries.
    rngs_seen: list = []
    state, _, _ = run_loop(max_steps=8, rngs_seen=rngs_seen)
    assert state.global_step == 8
    expected = []
    for step in range(8):
        expected += [("select", "key", step), ("update", "key", step)]
    assert rngs_seen == expected
