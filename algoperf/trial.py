"""One trial's untimed setup (`Trial`) and `run`: a RunConfig -> workload, submission,
hyperparameter points -> one trial each. The timed loop itself is algoperf/loop.py."""

from __future__ import annotations

import _thread
import contextlib
import csv
import dataclasses
import functools
import json
import logging
import math
import os
import pathlib
import signal
import threading
import time
from typing import Any

from algoperf import (
    checkpoint,
    console,
    logs,
    loop,
    rng,
    search_space,
    sinks,
    telemetry,
    trial_lock,
    versions,
)
from algoperf.backend import get_backend
from algoperf.clock import Clock
from algoperf.config import RunConfig
from algoperf.process import configure_process
from algoperf.progress import Progress
from algoperf.schedule import EvalSchedule
from algoperf.submission import (
    Submission,
    call_guarded,
    check_batch_size,
    load_submission,
    raised_in,
)

log = logging.getLogger("algoperf")


@dataclasses.dataclass
class TrialResult:
    trial_dir: pathlib.Path
    state: loop.LoopState
    time_to_target: float | None
    """Submission time of the first eval that met the validation target; None if none did."""
    stop_reason: str


def global_batch_size(submission: Submission, workload_name: str, base_name: str) -> int:
    """The submission's batch size for a workload; a variant name falls back to its base.

    Raises:
      SubmissionFailed: get_batch_size raised, or returned no positive integer.
    """
    get_batch_size = submission.get_batch_size
    try:
        value = get_batch_size(workload_name)
    except (ValueError, KeyError) as error:
        if workload_name == base_name:
            raise raised_in("get_batch_size", error) from error
        value = call_guarded("get_batch_size", get_batch_size, base_name)
    except Exception as error:
        raise raised_in("get_batch_size", error) from error
    return check_batch_size("get_batch_size", value)


def check_divisible(batch_size: int, device_count: int, what: str) -> None:
    if batch_size % device_count:
        raise ValueError(
            f"the {what} batch size {batch_size} is not divisible by the {device_count} devices; "
            "pick a multiple of the device count in the submission's get_batch_size."
        )


def hyperparameter_points(config: RunConfig, run_seed: int) -> list:
    """One point per trial (external; a list-form space may hold fewer than num_tuning_trials),
    or [None] (self-tuning)."""
    if config.tuning_ruleset == "self":
        return [None]
    space = search_space.load_search_space(config.resolved_search_space)
    points = search_space.sample_points(
        space, config.num_tuning_trials, seed=run_seed, study_index=config.study_index
    )
    # Checked before any log folder exists: RunConfig.trial_indices ends at the last point of
    # a list-form space and refuses a start index past it.
    assert config.trial_indices.stop <= len(points)
    return points


def load_workload(config: RunConfig):
    """The workload of `config`; its constructor refuses `--workload_options` keys it does not
    declare (`SpecWorkload.option_names`) with a one-line error."""
    from algoperf import workloads

    options = dict(config.workload_option_values)
    if config.imagenet_v2_data_dir:  # every pipeline declares extra_data_dir (docs/data.md)
        options.setdefault("extra_data_dir", config.imagenet_v2_data_dir)
    return workloads.load(
        config.resolved_workload,
        config.framework,
        benchmark_version=config.benchmark_version,
        allow_download=config.download,
        **options,
    )


def run(config: RunConfig) -> list[TrialResult]:
    """Run every trial of `config`; returns their results (rank 0 also wrote the logs)."""
    from algoperf import workloads

    configure_process(
        config.framework, config.benchmark_version, deterministic=config.deterministic
    )
    backend = get_backend(config.framework)
    workload = load_workload(config)
    config = _choose_compile(config, backend, workload)
    submission = load_submission(config.resolved_submission_path)
    run_seed = (
        config.rng_seed if config.rng_seed is not None else int.from_bytes(os.urandom(4)) >> 1
    )
    points = hyperparameter_points(config, run_seed)
    base = workloads.base_name(config.resolved_workload)
    batch_size = global_batch_size(submission, config.resolved_workload, base)
    eval_batch_size = workload.eval_batch_size
    if submission.get_eval_batch_size is not None:
        eval_batch_size = check_batch_size(
            "get_eval_batch_size",
            call_guarded(
                "get_eval_batch_size", submission.get_eval_batch_size, config.resolved_workload
            ),
        )
    check_divisible(batch_size, backend.device_count, "training")
    check_divisible(eval_batch_size, backend.device_count, "eval")
    folder = logs.workload_dir(
        config.experiment_dir,
        config.resolved_experiment_name,
        config.resolved_workload,
        config.framework,
    )
    if backend.rank == 0:
        # --overwrite deletes the trial folders: refused while another run still writes one.
        with trial_lock.all_trials_locked(folder) if config.overwrite else contextlib.nullcontext():
            logs.prepare_workload_dir(
                folder, overwrite=config.overwrite, resume=config.resume_last_run
            )
    backend.barrier()
    budget_sec = workload.max_allowed_runtime_sec
    if config.tuning_ruleset == "self":
        budget_sec *= versions.get_version(config.benchmark_version).self_tuning_budget_factor
    results = []
    for index in config.trial_indices:
        trial_dir = folder / f"trial_{index + 1}"
        if config.resume_last_run and (trial_dir / logs.COMPLETE_FILE).exists():
            if backend.rank == 0:
                console.say(f"{trial_dir} is complete; skipping it.")
            continue
        plan = TrialPlan(
            config=config,
            index=index,
            trial_dir=trial_dir,
            run_seed=run_seed,
            hyperparameters=points[index] if config.tuning_ruleset == "external" else None,
            global_batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            budget_sec=budget_sec,
        )
        result = Trial(plan, backend, workload, submission).run()
        results.append(result)
        if result.stop_reason == "preempted":
            break  # a stop request ends the run, not only the trial it came in
    return results


def _choose_compile(config: RunConfig, backend, workload) -> RunConfig:
    """A PyTorch run's torch.compile setting made definite (flags_0.json records it), and said
    once by rank 0 with its reason (docs/workloads.md, "Compile policy")."""
    if not hasattr(backend, "compile_choice"):
        return config  # JAX: XLA compiles under jit whatever the flag says
    compile_model, reason = backend.compile_choice(config.torch_compile)
    if backend.rank == 0:
        policy = ""
        if compile_model and not workload.spec.compile_model:
            policy = f"; {workload.spec.name}'s compile policy keeps its model eager"
        console.say(f"torch.compile {'on' if compile_model else 'off'}: {reason}{policy}")
    return dataclasses.replace(config, torch_compile=compile_model)


def non_finite_metrics(state: loop.LoopState) -> str | None:
    """The first eval metric that is NaN or infinite, in words ("validation/loss is nan at step
    201"), or None when every eval's metrics are finite."""
    for step, results in state.eval_results:
        for name, value in results.items():
            if isinstance(value, int | float) and not math.isfinite(value):
                return f"{name} is {value} at step {step}"
    return None


def _logged_steps(path: pathlib.Path) -> list[int]:
    """The global_step of each row of a log CSV (a row without a readable step counts as -1)."""
    with open(path, newline="") as handle:
        steps = []
        for row in csv.DictReader(handle):
            try:
                steps.append(int(float(row.get("global_step") or "")))
            except ValueError:
                steps.append(-1)
    return steps


def _checkpoint_step(trial_dir: pathlib.Path) -> int | None:
    folder = checkpoint.latest(trial_dir)
    return None if folder is None else int(folder.name[len(checkpoint.PREFIX) :])


class CountingIterator:
    """The train input queue, counting the batches taken (the data position of a checkpoint)."""

    def __init__(self, iterator, consumed: int = 0) -> None:
        self._iterator = iterator
        self.consumed = consumed

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self._iterator)
        self.consumed += 1
        return batch


class Interrupted(KeyboardInterrupt):
    """Ctrl-C ended the run; `checkpoint_step` is the step a resume continues from (None: none)."""

    def __init__(self, trial_dir: pathlib.Path, checkpoint_step: int | None) -> None:
        super().__init__(str(trial_dir))
        self.trial_dir, self.checkpoint_step = trial_dir, checkpoint_step


class StopRequests:
    """Stop requests: SIGTERM/SIGUSR1 (what Slurm sends before preemption) and Ctrl-C.

    Each sets a flag the loop polls after every step: it checkpoints and stops (a preemption).
    Ctrl-C also arms a timer: if the loop has not taken the request within `grace_sec` (the run
    is still loading data, compiling, evaluating, or in a long step), the timer interrupts the
    main thread, as does a second Ctrl-C, and the run ends at once with KeyboardInterrupt.

    An interrupt is also remembered: a KeyboardInterrupt raised while a finaliser runs (a
    `__del__`, a weakref callback) is printed and swallowed by Python, so the loop's per-step
    poll raises it again.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self, grace_sec: float = 5.0) -> None:
        self.grace_sec = grace_sec
        self._flag = False
        self.interrupted = False
        """Ctrl-C asked for the stop (the run exits 130 after its checkpoint)."""
        self._forced = False
        self._timer: threading.Timer | None = None
        self._previous = {}

    def requested(self) -> bool:
        if self._forced:
            raise KeyboardInterrupt
        if self._flag and self._timer is not None:
            self._timer.cancel()  # the loop takes the request: its checkpoint may take a while
            self._timer = None
        return self._flag

    def _handler(self, signum, frame) -> None:
        del frame
        self._flag = True
        console.say(
            f"received {signal.Signals(signum).name}: checkpointing at the next step and stopping.",
            newline_first=True,
            even_if_quiet=True,
        )

    def _interrupt(self, signum, frame) -> None:
        del signum, frame
        if self.interrupted:  # a second Ctrl-C, or the grace timer: stop now
            self._forced = True
            self._disarm()
            raise KeyboardInterrupt
        self.interrupted = self._flag = True
        console.say(
            "Ctrl-C: checkpointing at the next step and stopping "
            f"(Ctrl-C again, or {self.grace_sec:g} s without a step, stops at once).",
            newline_first=True,
            even_if_quiet=True,
        )
        self._timer = threading.Timer(self.grace_sec, _thread.interrupt_main)
        self._timer.daemon = True
        self._timer.start()

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handler)
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._interrupt)
        return self

    def __exit__(self, *exc) -> None:
        self._disarm()
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrialPlan:
    """What one trial is: its config, its place in the run, and its fixed numbers."""

    config: RunConfig
    index: int
    """0-based trial index; the folder is trial_<index + 1>."""
    trial_dir: pathlib.Path
    run_seed: int
    """The run's seed; each trial derives its own (`rng.trial_seed`)."""
    hyperparameters: Any
    """The trial's point (external tuning) or None (self-tuning)."""
    global_batch_size: int
    eval_batch_size: int
    budget_sec: float
    """Submission-time budget (self-tuning's factor applied)."""


class Trial:
    """The untimed setup of one trial around `loop.train_loop` (docs/rules.md, "one trial"):
    restore, input queue, model, optimizer, logs, then the loop with the trial's hooks."""

    def __init__(self, plan: TrialPlan, backend, workload, submission: Submission) -> None:
        self.plan, self.backend, self.workload, self.submission = (
            plan,
            backend,
            workload,
            submission,
        )
        self.config, self.index, self.trial_dir = plan.config, plan.index, plan.trial_dir
        self.batch_size, self.eval_batch_size = plan.global_batch_size, plan.eval_batch_size
        self.budget_sec = plan.budget_sec
        # Both may change on a resume (the point and seed the trial started with win).
        self.hyperparameters, self.run_seed = plan.hyperparameters, plan.run_seed
        self.primary = backend.rank == 0
        self.sinks = sinks.Sinks()
        """TensorBoard and W&B (rank 0; opened with the logs, closed when the trial ends)."""

    def _write_setup_files(self, trial_seed: int, preemption_count: int = 0) -> None:
        hparams_path = self.trial_dir / "hparams.json"
        if self.hyperparameters is not None:
            if hparams_path.exists():  # resumed trial: keep the point it started with
                self.hyperparameters = search_space.hparams_from_json(
                    json.loads(hparams_path.read_text())
                )
            else:
                logs.write_json(hparams_path, search_space.hparams_to_json(self.hyperparameters))
        meta = {
            **logs.workload_properties(self.workload),
            **logs.system_info(),
            "rng_seed": self.run_seed,
            "trial_seed": trial_seed,
            "trial_index": self.index + 1,
            "benchmark_version": self.config.benchmark_version,
            "submission_path": str(self.submission.path),
            "global_batch_size": self.batch_size,
            "eval_batch_size": self.eval_batch_size,
            "budget_sec": self.budget_sec,
            "device_count": self.backend.device_count,
        }
        logs.write_json(self.trial_dir / f"meta_data_{preemption_count}.json", meta)
        flags = dataclasses.asdict(self.config)
        flags["submission_path"] = str(self.submission.path)
        flags["experiment_name"] = self.config.resolved_experiment_name
        logs.write_json(self.trial_dir / f"flags_{preemption_count}.json", flags)

    def _restore_point(self):
        """(loop state, meta, folder) of the checkpoint to resume from, or None."""
        if not self.config.resume_last_run:
            return None
        folder = checkpoint.latest(self.trial_dir)
        if folder is None:
            return None
        state, meta = checkpoint.read(folder)
        expected = {
            "workload": self.config.resolved_workload,
            "framework": self.config.framework,
            "benchmark_version": self.config.benchmark_version,
            "tuning_ruleset": self.config.tuning_ruleset,
            "global_batch_size": self.batch_size,
        }
        checkpoint.check_compatible(meta, expected, folder)
        return state, meta, folder

    def run(self) -> TrialResult:
        """Run the trial holding its folder's lock (rank 0 writes; docs/rules.md "One writer
        per trial"). Ctrl-C ends it with `Interrupted`, after a checkpoint when the loop could
        take one in time (`StopRequests`)."""
        lock = trial_lock.TrialLock(self.trial_dir).acquire() if self.primary else None
        try:
            return self._run()
        except Interrupted:
            raise
        except KeyboardInterrupt:
            raise Interrupted(self.trial_dir, _checkpoint_step(self.trial_dir)) from None
        finally:
            self.sinks.close()  # flushed and closed however the trial ended
            if lock is not None:
                lock.release()

    def _run(self) -> TrialResult:
        restore = self._restore_point()
        if restore is not None and restore[1].run_seed != self.run_seed:
            self.run_seed = restore[1].run_seed  # the step RNGs must continue the same tree
        trial_seed = rng.trial_seed(self.run_seed, self.index)
        backend = self.backend
        data_rng, opt_init_rng, model_init_rng, loop_rng = backend.split(
            backend.prng_key(trial_seed), 4
        )
        backend.reset_memory()
        input_queue, variables = self._build(restore, data_rng, opt_init_rng, model_init_rng)
        state = self._restored_state(restore, variables)
        metrics_logger = self._open_logs(trial_seed, state)
        self.workload.attach_metrics_logger(metrics_logger)
        progress = Progress(
            enabled=self.config.progress and self.primary,
            budget_sec=self.budget_sec,
            target=f"{self.workload.validation_target_value:g}",
        )
        monitor = telemetry.Monitor(
            progress=progress,
            sinks=self.sinks,
            make_meter=telemetry.meter_factory(
                framework=self.config.framework,
                backend=backend,
                workload=self.workload,
                variables=variables,
                global_batch_size=self.batch_size,
                state=state,
                primary=self.primary,
            ),
        )
        self._announce(trial_seed, state)
        save = functools.partial(self._save, trial_seed=trial_seed, input_queue=input_queue)
        # Several ranks agree on a stop only at check steps, up to 5 s of step time apart
        # (algoperf/schedule.py): Ctrl-C's deadline leaves them that long on top.
        grace_sec = 5.0 if backend.world_size == 1 else 10.0
        with StopRequests(grace_sec) as stop:
            try:
                state = loop.train_loop(
                    self.workload,
                    self.submission,
                    self.hyperparameters,
                    variables,
                    input_queue,
                    loop_rng,
                    backend=backend,
                    clock=Clock.of(backend),
                    settings=self._loop_settings(),
                    state=state,
                    hooks=loop.LoopHooks(
                        on_eval=functools.partial(
                            self._on_eval,
                            metrics_logger=metrics_logger,
                            progress=monitor,
                            save=save,
                        ),  # fmt: skip
                        on_step=monitor.step,
                        stop_requested=stop.requested,
                        on_stop=save,
                    ),
                    schedule=EvalSchedule(backend.agree_max if backend.world_size > 1 else None),
                )
            finally:
                monitor.close()
        if state.preempted and stop.interrupted:
            raise Interrupted(self.trial_dir, state.global_step)
        if not state.preempted and self.config.save_checkpoints:
            save(state, variables)  # the final state, as upstream (logging time, untimed)
        return self._finish(state, metrics_logger)

    def _build(self, restore, data_rng, opt_init_rng, model_init_rng):
        """The train queue (from the checkpoint's position), the model and the optimizer."""
        config, workload = self.config, self.workload
        consumed = restore[1].batches_consumed if restore else 0
        input_queue = CountingIterator(
            workload._build_input_queue(
                data_rng, "train", config.data_dir, self.batch_size, start_batch=consumed
            ),
            consumed,
        )
        params, model_state = workload.init_model_fn(model_init_rng)
        params = self.backend.prepare_model(workload, params, compile_model=config.torch_compile)
        optimizer_state = call_guarded(
            "init_optimizer_state",
            self.submission.init_optimizer_state,
            workload,
            params,
            model_state,
            self.hyperparameters,
            opt_init_rng,
        )
        return input_queue, loop.TrainVars(params, model_state, optimizer_state)

    def _restored_state(self, restore, variables) -> loop.LoopState | None:
        """The checkpoint's loop state with its variables loaded into `variables`, or None."""
        if restore is None:
            return None
        state, meta, folder = restore
        restored = self.backend.load_state(folder, variables)
        variables.params, variables.model_state = restored.params, restored.model_state
        variables.optimizer_state = restored.optimizer_state
        # Absolute times move on by the time the trial spent stopped.
        shift = time.time() - meta.saved_at
        state.global_start_time += shift
        state.last_eval_time += shift
        state.preemption_count += 1
        state.preempted = False
        return state

    def _loop_settings(self) -> loop.LoopSettings:
        config = self.config
        return loop.LoopSettings(
            budget_sec=self.budget_sec,
            eval_period_sec=self.workload.eval_period_time_sec,
            global_batch_size=self.batch_size,
            eval_batch_size=self.eval_batch_size,
            data_dir=config.data_dir,
            imagenet_v2_data_dir=config.imagenet_v2_data_dir,
            max_global_steps=config.max_global_steps,
            eval_every_steps=config.eval_every_steps,
        )

    def _save(self, state, variables, *, trial_seed: int, input_queue: CountingIterator) -> None:
        """Checkpoint (rank 0 writes; every rank waits for it)."""
        config = self.config
        meta = checkpoint.Meta(
            workload=config.resolved_workload,
            framework=config.framework,
            benchmark_version=config.benchmark_version,
            tuning_ruleset=config.tuning_ruleset,
            run_seed=self.run_seed,
            trial_seed=trial_seed,
            global_batch_size=self.batch_size,
            batches_consumed=input_queue.consumed,
            saved_at=time.time(),
        )
        if self.primary:
            self.sinks.checkpointed(state.global_step)  # where a resume cuts the event files
            checkpoint.save(self.trial_dir, self.backend, variables, state, meta)
        self.backend.barrier()

    def _on_eval(self, row, state, variables, *, metrics_logger, progress, save) -> None:
        if metrics_logger is not None:
            metrics_logger.append_scalar_metrics(
                {k: v for k, v in row.items() if k not in ("global_step", "preemption_count")},
                row["global_step"],
                row["preemption_count"],
                is_eval=True,
            )
        progress.evaluated(row, self.workload.target_metric_name)
        if self.config.save_checkpoints:
            save(state, variables)

    def _open_logs(self, trial_seed: int, restored_state):
        """Rank 0: the trial's setup files and its metrics logger (None on other ranks)."""
        if not self.primary:
            return None
        self.trial_dir.mkdir(parents=True, exist_ok=True)
        if restored_state is None:
            if logs.clear_unfinished_trial(self.trial_dir):
                console.say(
                    f"{self.trial_dir} holds an unfinished trial and no checkpoint "
                    "to resume from; restarting it from step 0 with its hparams.json."
                )
        else:
            # Rows logged after the checkpoint was taken are replayed by the resumed run.
            logs.truncate_after_step(self.trial_dir, restored_state.global_step)
            self._restore_eval_rows(restored_state)
            (self.trial_dir / logs.COMPLETE_FILE).unlink(missing_ok=True)
        preemption_count = restored_state.preemption_count if restored_state else 0
        self._write_setup_files(trial_seed, preemption_count)
        self.sinks = sinks.open_sinks(
            self.trial_dir,
            resumed_step=restored_state.global_step if restored_state else None,
            tensorboard=self.config.tensorboard,
            wandb_run=self._wandb_run(trial_seed, preemption_count),
        )
        return logs.MetricsLogger(self.trial_dir, preemption_count, self.sinks)

    def _wandb_run(self, trial_seed: int, preemption_count: int) -> dict | None:
        """The W&B run of this attempt (`--use_wandb`), or None."""
        if not self.config.use_wandb:
            return None
        hp = self.hyperparameters
        extra = {
            "hyperparameters": None if hp is None else search_space.hparams_to_json(hp),
            "trial_index": self.index + 1,
            "trial_seed": trial_seed,
            "global_batch_size": self.batch_size,
            "submission_path": str(self.submission.path),
        }
        return sinks.wandb_run_args(
            self.config, trial_index=self.index, preemption_count=preemption_count, extra=extra
        )

    def _restore_eval_rows(self, state: loop.LoopState) -> None:
        """Make eval_measurements.csv hold exactly the checkpoint's evals, so the resumed run
        appends to the full history; a file that lost rows (or was deleted) is rebuilt from the
        rows the checkpoint keeps."""
        path = self.trial_dir / logs.EVAL_FILE
        expected = [int(row["global_step"]) for row in state.eval_rows]
        if len(expected) != len(state.eval_results):
            if path.exists() or not state.eval_results:
                return  # a checkpoint written before rows were kept: nothing to compare with
            raise checkpoint.CheckpointError(
                f"{path} is missing and the checkpoint at step {state.global_step} does not "
                "keep the rows to rebuild it; restore the file, or pass --overwrite to start "
                "the trial over."
            )
        found = _logged_steps(path) if path.exists() else []
        if found == expected:
            return
        path.unlink(missing_ok=True)
        rebuilt = logs.CSVLog(path)
        for row in state.eval_rows:
            rebuilt.append(row)
        console.say(
            f"{path} {'held rows for steps ' + str(found) if found else 'was missing'}"
            f"; rebuilt it from the checkpoint's {len(expected)} eval row(s)."
        )

    def _announce(self, trial_seed: int, restored_state=None) -> None:
        if not self.primary:
            return
        if restored_state is not None:
            console.say(
                f"resuming {self.trial_dir} at step {restored_state.global_step} "
                f"({restored_state.accumulated_submission_time:.1f}s submission time), "
                f"preemption {restored_state.preemption_count}"
            )
        hp = (
            self.hyperparameters._asdict()
            if self.hyperparameters is not None
            else "none (self-tuning)"
        )
        console.say(
            f"{self.config.resolved_workload} ({self.config.framework}), "
            f"trial {self.index + 1}, "
            f"seed {trial_seed}, batch {self.batch_size}, budget {self.budget_sec:g}s "
            f"({self.config.benchmark_version}), hyperparameters {hp}"
        )
        console.say(f"logs: {self.trial_dir}")

    def _finish(self, state: loop.LoopState, metrics_logger) -> TrialResult:
        if state.preempted:
            if self.primary:
                console.say(
                    f"stop requested: checkpoint saved at step {state.global_step}; "
                    "continue with --resume_last_run.",
                    even_if_quiet=True,
                )
            return TrialResult(self.trial_dir, state, None, "preempted")
        time_to_target = loop.time_to_target(self.workload, state)
        reason = loop.describe_stop(state, self.budget_sec)
        if metrics_logger is not None:
            metrics_logger.append_scalar_metrics(
                {"score": state.accumulated_submission_time},
                state.global_step,
                state.preemption_count,
            )
            metrics_logger.finish()
            summary = {
                "stop_reason": reason,
                "global_step": state.global_step,
                "accumulated_submission_time": state.accumulated_submission_time,
                "time_to_target": time_to_target,
            }
            diverged = non_finite_metrics(state)
            if diverged is not None:
                summary["non_finite_metrics"] = diverged
            logs.write_json(self.trial_dir / logs.COMPLETE_FILE, summary)
            last = state.eval_results[-1][1] if state.eval_results else {}
            metric = f"validation/{self.workload.target_metric_name}"
            if diverged is not None:
                console.warn(
                    f"trial {self.index + 1} diverged: {diverged} "
                    f"(recorded in {self.trial_dir / logs.COMPLETE_FILE}; a sweep counts it "
                    "as failed)."
                )
            console.say(
                f"trial {self.index + 1} "
                f"{'ended (diverged)' if diverged else 'done'}: {reason} after "
                f"{state.global_step} steps, "
                f"{state.accumulated_submission_time:.1f}s submission time; "
                f"{metric} {last.get(metric, float('nan')):.4f} "
                f"(target {self.workload.validation_target_value:g}); "
                f"time to target: {'∞' if time_to_target is None else f'{time_to_target:.1f}s'}"
            )
        return TrialResult(self.trial_dir, state, time_to_target, reason)
