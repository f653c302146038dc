"""One trial under the benchmark's timing rules (spec/RULES.md §4), framework-free.

`train_loop` is the timed loop; `run_trial` does the untimed setup around it; `algoperf.run`
(in `algoperf/run.py`) turns a RunConfig into trials. Framework work goes through a `Backend`.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from algoperf import spec
from algoperf.clock import Clock
from algoperf.schedule import EvalSchedule
from algoperf.submission import Submission


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


def _prepare_for_eval(workload, submission, hyperparameters, variables, state, rng) -> None:
    if submission.prepare_for_eval is None:
        return
    variables.optimizer_state, variables.params, variables.model_state = (
        submission.prepare_for_eval(
            workload,
            variables.params,
            workload.model_params_types,
            variables.model_state,
            hyperparameters,
            workload.loss_type,
            variables.optimizer_state,
            state.eval_results,
            state.global_step,
            rng,
        )
    )


def _eval_and_log(workload, variables, state, settings, clock, eval_rng, on_eval) -> None:
    """Untimed eval, goal checks, then logging and checkpointing (RULES.md §4 step 4)."""
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
    log_start = clock.now()
    on_eval(row, state, variables)
    state.accumulated_logging_time += clock.now() - log_start


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
    on_eval: Callable[[dict, LoopState, TrainVars], None] = lambda row, state, variables: None,
    on_step: Callable[[LoopState, float], None] | None = None,
    schedule: EvalSchedule | None = None,
    stop_requested: Callable[[], bool] = lambda: False,
    on_stop: Callable[[LoopState, TrainVars], None] = lambda state, variables: None,
) -> LoopState:
    """Train until the budget is spent, both targets are reached, or training is complete.

    `state` continues a restored trial. With several processes, `schedule` agrees eval points
    and stop requests across ranks (see algoperf/schedule.py). A stop request ends the loop
    after `on_stop` (which checkpoints); it is not a trial end.
    """
    state = state or LoopState()
    schedule = schedule or EvalSchedule()
    multi_process = getattr(backend, "world_size", 1) > 1
    # Everything alive now (libraries, model, data) is moved out of the collector's reach, so
    # the cyclic GC passes that steps trigger scan only what training allocates (untimed).
    gc.collect()
    gc.freeze()
    try:
        return _loop(
            workload,
            submission,
            hyperparameters,
            variables,
            input_queue,
            rng,
            backend=backend,
            clock=clock,
            settings=settings,
            state=state,
            on_eval=on_eval,
            on_step=on_step,
            schedule=schedule,
            stop_requested=stop_requested,
            on_stop=on_stop,
            multi_process=multi_process,
        )
    finally:
        gc.unfreeze()


def _loop(
    workload,
    submission,
    hyperparameters,
    variables,
    input_queue,
    rng,
    *,
    backend,
    clock,
    settings,
    state,
    on_eval,
    on_step,
    schedule,
    stop_requested,
    on_stop,
    multi_process,
) -> LoopState:
    start = clock.now()
    if state.global_step == 0:
        state.global_start_time = start
    state.last_step_end_time = start
    # Everything a step reads that cannot change during the trial is looked up once, so the
    # per-step work left to the loop is the rules' own (scripts/bench_overhead.py measures it).
    data_selection, update_params = submission.data_selection, submission.update_params
    params_types, loss_type = workload.model_params_types, workload.loss_type
    if submission.update_params_takes_train_state:
        # Bound once, so every step's call is a plain positional one (no `**kwargs` merge).
        update_params = functools.partial(update_params, train_state=TrainStateView(state))
    max_steps = settings.max_global_steps
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
        # One step, all of it on the clock (RULES.md §4 "Each step": RNG derivation,
        # data_selection including the fetch, update_params and the loop's own overhead).
        offset = state.global_step - rng_start
        if not 0 <= offset < len(rng_rows):
            rng_start, rng_rows = backend.step_rng_block(rng, state.global_step)
            offset = state.global_step - rng_start
        rngs = rng_rows[offset]
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
        try:
            variables.optimizer_state, variables.params, variables.model_state = update_params(
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
        state.global_step += 1
        if max_steps is not None and state.global_step >= max_steps:
            state.training_complete = True
        now = bare_time() if bare_time is not None else clock.now(variables.params)
        state.accumulated_submission_time += now - state.last_step_end_time
        # An eval is due once a period of wall time has passed since the last eval ended, and
        # always when training is complete (RULES.md §4 "Eval eligibility"). Several processes
        # agree on it (and on a stop request) through the schedule; one decides alone.
        if multi_process:
            period_due, stop = schedule.due(
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
            on_stop(state, variables)
            return state
        if settings.eval_every_steps is not None:
            period_due = (state.global_step - 1) % settings.eval_every_steps == 0
        if period_due or state.training_complete:
            prep_start = clock.now()
            _prepare_for_eval(workload, submission, hyperparameters, variables, state, rngs[2])
            state.accumulated_submission_time += clock.now(variables.params) - prep_start
            if multi_process:  # every rank logs and decides with the slowest rank's time
                (state.accumulated_submission_time,) = backend.agree_max(
                    [state.accumulated_submission_time]
                )
            # The budget is checked only here, after prepare_for_eval; once it is spent no eval
            # runs, so steps past the budget can never count as a target hit (upstream #719).
            state.is_time_remaining = state.accumulated_submission_time < settings.budget_sec
            if state.is_time_remaining:
                _eval_and_log(workload, variables, state, settings, clock, rngs[3], on_eval)
                state.last_eval_time = clock.now()
                if multi_process:
                    (state.last_eval_time,) = backend.agree_max([state.last_eval_time])
            schedule.reset(state.global_step)
            state.last_step_end_time = clock.now()
        else:
            # No eval: the next step's time runs from this reading, so the loop's bookkeeping
            # in between (the schedule, the stop flag, the progress hook) is on the clock too.
            state.last_step_end_time = now
        if on_step is not None:
            on_step(state, state.last_step_end_time)
    return state


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


logger = logging.getLogger(__name__)
