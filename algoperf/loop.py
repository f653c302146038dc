"""The timed training loop under the benchmark's timing rules (docs/rules.md), framework-free.

`train_loop` is the loop; `algoperf/trial.py` does the untimed setup of a trial around it and
plugs its logging, checkpointing and stop handling in through `LoopHooks`. Framework work goes
through a `Backend`.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from algoperf import spec
from algoperf.clock import Clock
from algoperf.errors import StorageError
from algoperf.schedule import EvalSchedule
from algoperf.submission import (
    Submission,
    call_guarded,
    raised_in,
    unpack_update_result,
    wrong_result,
)


@dataclasses.dataclass
class LoopState:
    """Everything the loop carries from step to step (what a checkpoint must hold)."""

    global_step: int = 0
    accumulated_submission_time: float = 0.0
    accumulated_eval_time: float = 0.0
    accumulated_logging_time: float = 0.0
    last_eval_time: float = 0.0
    """Wall time at the end of the last eval; 0 (the epoch), so the first eval follows step 1."""
    last_step_end_time: float = 0.0
    global_start_time: float = 0.0
    validation_goal_reached: bool = False
    test_goal_reached: bool = False
    is_time_remaining: bool = True
    training_complete: bool = False
    eval_results: list = dataclasses.field(default_factory=list)
    eval_submission_times: list = dataclasses.field(default_factory=list)
    """The submission time of each eval, parallel to eval_results."""
    eval_rows: list = dataclasses.field(default_factory=list)
    """Each eval's logged row (a resume rebuilds a lost eval_measurements.csv from them)."""
    preemption_count: int = 0
    preempted: bool = False
    """The loop stopped on a stop request (SIGTERM/SIGUSR1) after saving a checkpoint."""

    def train_state(self) -> TrainStateView:
        """The read-only view passed to `update_params(..., train_state=...)`."""
        return TrainStateView(self)


class TrainStateView(Mapping):
    """`train_state` as submissions see it: a read-only mapping over the loop's live state.

    Upstream passes the very dict its loop updates, so a submission always reads current values;
    this view does the same without building a dict every step (it reads the `LoopState` fields
    on access) and refuses writes.
    """

    KEYS = (
        "validation_goal_reached",
        "test_goal_reached",
        "is_time_remaining",
        "last_eval_time",
        "training_complete",
        "accumulated_submission_time",
        "accumulated_eval_time",
        "accumulated_logging_time",
        "last_step_end_time",
    )
    __slots__ = ("_state",)

    def __init__(self, state: LoopState) -> None:
        self._state = state

    def __getitem__(self, key: str):
        if key not in self.KEYS:
            raise KeyError(key)
        return getattr(self._state, key)

    def __iter__(self):
        return iter(self.KEYS)

    def __len__(self) -> int:
        return len(self.KEYS)

    def __repr__(self) -> str:
        return f"TrainStateView({dict(self)!r})"


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoopSettings:
    budget_sec: float
    """Submission-time budget (self-tuning already multiplied in)."""
    eval_period_sec: float
    global_batch_size: int
    eval_batch_size: int
    data_dir: str
    imagenet_v2_data_dir: str | None = None
    max_global_steps: int | None = None
    eval_every_steps: int | None = None
    """Testing only: eval after steps 1, 1+N, 1+2N, ... instead of by wall time."""


@dataclasses.dataclass
class TrainVars:
    """The values the submission updates."""

    params: Any
    model_state: Any
    optimizer_state: Any


def _noop(*args) -> None:
    del args


def _never() -> bool:
    return False


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoopHooks:
    """What a trial plugs into the loop."""

    on_eval: Callable[[dict, LoopState, TrainVars], None] = _noop
    """After each eval, with its row (untimed: logging time; the trial logs and checkpoints)."""
    on_step: Callable[[LoopState, float], None] | None = None
    """After each step, with the time the step ended (on the clock: keep it cheap)."""
    stop_requested: Callable[[], bool] = _never
    """Polled after each step: True ends the loop after `on_stop` (a preemption, not an end)."""
    on_stop: Callable[[LoopState, TrainVars], None] = _noop
    """Before the loop stops on a stop request (the trial checkpoints here)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Loop:
    """Everything that stays fixed while a trial's loop runs."""

    workload: Any
    submission: Submission
    hyperparameters: Any
    backend: Any
    clock: Clock
    settings: LoopSettings
    hooks: LoopHooks
    schedule: EvalSchedule
    multi_process: bool


def train_loop(
    workload,
    submission: Submission,
    hyperparameters,
    variables: TrainVars,
    input_queue: Iterator,
    rng,
    *,
    backend,
    clock: Clock,
    settings: LoopSettings,
    state: LoopState | None = None,
    hooks: LoopHooks | None = None,
    schedule: EvalSchedule | None = None,
) -> LoopState:
    """Train until the budget is spent, both targets are reached, or training is complete.

    `state` continues a restored trial. With several processes, `schedule` agrees eval points
    and stop requests across ranks (see algoperf/schedule.py). A stop request ends the loop
    after `hooks.on_stop` (which checkpoints); it is not a trial end.
    """
    loop = _Loop(
        workload=workload,
        submission=submission,
        hyperparameters=hyperparameters,
        backend=backend,
        clock=clock,
        settings=settings,
        hooks=hooks or LoopHooks(),
        schedule=schedule or EvalSchedule(),
        multi_process=getattr(backend, "world_size", 1) > 1,
    )
    state = state or LoopState()
    # Everything alive now (libraries, model, data) is moved out of the collector's reach, so
    # the cyclic GC passes that steps trigger scan only what training allocates (untimed).
    gc.collect()
    gc.freeze()
    try:
        return _run_steps(loop, variables, input_queue, rng, state)
    finally:
        gc.unfreeze()


def _run_steps(loop: _Loop, variables: TrainVars, input_queue, rng, state: LoopState):
    clock, settings, hooks, backend = loop.clock, loop.settings, loop.hooks, loop.backend
    start = clock.now()
    if state.global_step == 0:
        state.global_start_time = start
    state.last_step_end_time = start
    # Everything a step reads that cannot change during the trial is looked up once, so the
    # per-step work left to the loop is the rules' own (scripts/bench_overhead.py measures it).
    workload, hyperparameters = loop.workload, loop.hyperparameters
    data_selection, update_params = loop.submission.data_selection, loop.submission.update_params
    params_types, loss_type = workload.model_params_types, workload.loss_type
    if loop.submission.update_params_takes_train_state:
        # Bound once, so every step's call is a plain positional one (no `**kwargs` merge).
        update_params = functools.partial(update_params, train_state=TrainStateView(state))
    max_steps, on_step = settings.max_global_steps, hooks.on_step
    stop_requested, multi_process = hooks.stop_requested, loop.multi_process
    # The step keys come in blocks of consecutive steps (one per step on JAX); a step inside
    # the current block is a list lookup, not a call.
    rng_start, rng_rows = 0, ()
    # A clock without device sync (a torch CPU) is read straight from its time function.
    bare_time = clock.time_fn if clock.sync is None else None
    while (
        state.is_time_remaining
        and not (state.validation_goal_reached and state.test_goal_reached)
        and not state.training_complete
    ):
        # One step, all of it on the clock (docs/rules.md "Each step": RNG derivation,
        # data_selection including the fetch, update_params and the loop's own overhead).
        offset = state.global_step - rng_start
        if not 0 <= offset < len(rng_rows):
            rng_start, rng_rows = backend.step_rng_block(rng, state.global_step)
            offset = state.global_step - rng_start
        rngs = rng_rows[offset]
        # The submission's calls sit in try blocks, which cost nothing unless something raises
        # (Python 3.11); what they raise becomes SubmissionFailed (docs/rules.md "Exit status").
        try:
            batch = data_selection(
                workload,
                input_queue,
                variables.optimizer_state,
                variables.params,
                variables.model_state,
                hyperparameters,
                state.global_step,
                rngs[0],
            )
        except StorageError:
            raise
        except Exception as error:
            raise raised_in("data_selection", error, state.global_step) from error
        try:
            result = update_params(
                workload,
                variables.params,
                params_types,
                variables.model_state,
                hyperparameters,
                batch,
                loss_type,
                variables.optimizer_state,
                state.eval_results,
                state.global_step,
                rngs[1],
            )
        except spec.TrainingCompleteError:
            state.training_complete = True
        except StorageError:
            raise
        except Exception as error:
            raise raised_in("update_params", error, state.global_step) from error
        else:
            # Unpacked without a check first; only a failed unpack looks at what came back.
            try:
                variables.optimizer_state, variables.params, variables.model_state = result
            except (TypeError, ValueError):
                raise wrong_result("update_params", result, state.global_step) from None
        state.global_step += 1
        if max_steps is not None and state.global_step >= max_steps:
            state.training_complete = True
        now = bare_time() if bare_time is not None else clock.now(variables.params)
        state.accumulated_submission_time += now - state.last_step_end_time
        # An eval is due once a period of wall time has passed since the last eval ended, and
        # always when training is complete (docs/rules.md "Eval eligibility"). Several
        # processes agree on it (and on a stop request) through the schedule; one decides alone.
        if multi_process:
            period_due, stop = loop.schedule.due(
                step=state.global_step,
                now=now,
                last_eval_time=state.last_eval_time,
                period=settings.eval_period_sec,
                stop=stop_requested(),
            )
        else:
            period_due = now - state.last_eval_time >= settings.eval_period_sec
            stop = stop_requested()
        if stop and not state.training_complete:
            state.last_step_end_time = clock.now()
            state.preempted = True
            hooks.on_stop(state, variables)
            return state
        if settings.eval_every_steps is not None:
            period_due = (state.global_step - 1) % settings.eval_every_steps == 0
        if period_due or state.training_complete:
            _eval_point(loop, variables, state, rngs)
        else:
            # No eval: the next step's time runs from this reading, so the loop's bookkeeping
            # in between (the schedule, the stop flag, the progress hook) is on the clock too.
            state.last_step_end_time = now
        if on_step is not None:
            on_step(state, state.last_step_end_time)
    return state


def _eval_point(loop: _Loop, variables: TrainVars, state: LoopState, rngs) -> None:
    """An eligible eval point: timed prepare_for_eval, the budget check, then (untimed) eval,
    logging and checkpointing if time remains (docs/rules.md "Eval eligibility")."""
    clock, backend = loop.clock, loop.backend
    prep_start = clock.now()
    _prepare_for_eval(loop, variables, state, rngs[2])
    state.accumulated_submission_time += clock.now(variables.params) - prep_start
    if loop.multi_process:  # every rank logs and decides with the slowest rank's time
        (state.accumulated_submission_time,) = backend.agree_max(
            [state.accumulated_submission_time]
        )
    # The budget is checked only here, after prepare_for_eval; once it is spent no eval runs,
    # so steps past the budget can never count as a target hit (upstream #719).
    state.is_time_remaining = state.accumulated_submission_time < loop.settings.budget_sec
    if state.is_time_remaining:
        _eval_and_log(loop, variables, state, rngs[3])
        state.last_eval_time = clock.now()
        if loop.multi_process:
            (state.last_eval_time,) = backend.agree_max([state.last_eval_time])
    loop.schedule.reset(state.global_step)
    state.last_step_end_time = clock.now()


def _prepare_for_eval(loop: _Loop, variables: TrainVars, state: LoopState, rng) -> None:
    prepare = loop.submission.prepare_for_eval
    if prepare is None:
        return
    workload, step = loop.workload, state.global_step
    result = call_guarded(
        "prepare_for_eval",
        prepare,
        workload,
        variables.params,
        workload.model_params_types,
        variables.model_state,
        loop.hyperparameters,
        workload.loss_type,
        variables.optimizer_state,
        state.eval_results,
        step,
        rng,
        step=step,
    )
    variables.optimizer_state, variables.params, variables.model_state = unpack_update_result(
        "prepare_for_eval", result, step
    )


def _eval_and_log(loop: _Loop, variables: TrainVars, state: LoopState, eval_rng) -> None:
    """Untimed eval, goal checks, then logging and checkpointing (docs/rules.md step 4)."""
    clock, settings, workload = loop.clock, loop.settings, loop.workload
    eval_start = clock.now(variables.params)
    results = workload.eval_model(
        settings.eval_batch_size,
        variables.params,
        variables.model_state,
        eval_rng,
        settings.data_dir,
        settings.imagenet_v2_data_dir,
        state.global_step,
    )
    eval_end = clock.now()
    state.accumulated_eval_time += eval_end - eval_start
    state.validation_goal_reached |= workload.has_reached_validation_target(results)
    state.test_goal_reached |= workload.has_reached_test_target(results)
    state.eval_results.append((state.global_step, dict(results)))
    state.eval_submission_times.append(state.accumulated_submission_time)
    row = {
        **results,
        "score": state.accumulated_submission_time,
        "total_duration": eval_end - state.global_start_time,
        "accumulated_submission_time": state.accumulated_submission_time,
        "accumulated_eval_time": state.accumulated_eval_time,
        "accumulated_logging_time": state.accumulated_logging_time,
        "global_step": state.global_step,
        "preemption_count": state.preemption_count,
    }
    state.eval_rows.append(row)
    log_start = clock.now()
    # The hook may checkpoint: it must see this eval's end as the last eval time, or a trial
    # resumed from that checkpoint would count the period from the previous eval and evaluate
    # again at its first step. `_eval_point` moves it on past the logging afterwards.
    state.last_eval_time = log_start
    loop.hooks.on_eval(row, state, variables)
    state.accumulated_logging_time += clock.now() - log_start


def time_to_target(workload, state: LoopState) -> float | None:
    """Submission time of the first eval that met the validation target (None: never)."""
    for (_, result), seconds in zip(state.eval_results, state.eval_submission_times):
        if workload.has_reached_validation_target(result):
            return seconds
    return None


def describe_stop(state: LoopState, budget_sec: float) -> str:
    """Why the loop ended, in words."""
    if state.validation_goal_reached and state.test_goal_reached:
        return "both targets reached"
    if not state.is_time_remaining:
        return f"budget of {budget_sec:g} s spent"
    if state.training_complete:
        return "training complete"
    return "stopped"
