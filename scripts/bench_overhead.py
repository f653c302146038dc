"""Runner overhead: the runner's median step time over a bare loop's (same model, same batch).

For mnist and cifar, eager and compiled (PyTorch): the runner path is `loop.train_loop` with the
NAdamW reference submission (RNG derivation, data_selection, update_params, clock reads with
device sync, train-state bookkeeping, progress hook); the bare loop does the same zero_grad /
forward / loss (the workload's masked, smoothed `loss_fn`) / backward / NAdamW step / LR-schedule
step on the same model and optimizer objects. Both are fed one cached batch, so the ratio is the
runner's cost alone (the data loader's cost is measured by scripts/bench_dataloader.py). The two
alternate step by step in one run: the runner's `on_step` hook runs one bare step after each
runner step, so drift on a shared machine hits both alike.

--logs adds what a run's rank 0 adds to the runner path: `csv` attaches the metrics logger (the
submission logs loss and grad norm every 100 steps, inside its timed step, to measurements.csv);
`tensorboard` also writes those rows to a TensorBoard event file and makes the runner's per-step
hook the trial's `telemetry.Monitor` (samples every 10 s), called where its cost falls into the
runner's next step, as in a run. `csv` is a run before the sinks existed, `tensorboard` one now.

Usage: .venv/bin/python scripts/bench_overhead.py [--scale 1.0] [--quick] [--logs none]
Prints one line per case (with the median per-pair ratio as a noise check) and, last,
`worst ratio: X.XXX` (goal <= 1.02), the worst ratio of medians.
"""

from __future__ import annotations

import argparse
import itertools
import pathlib
import statistics
import sys
import tempfile
import time
import warnings

import torch

from algoperf import logs, search_space, sinks, telemetry, workloads
from algoperf import rng as np_rng
from algoperf.backend import get_backend
from algoperf.clock import Clock
from algoperf.config import PACKAGE_ROOT
from algoperf.loop import LoopHooks, LoopSettings, LoopState, TrainVars, train_loop
from algoperf.process import configure_process
from algoperf.progress import Progress
from algoperf.submission import load_submission
from algoperf.torch.workload import to_torch

SUBMISSION = PACKAGE_ROOT / "submissions" / "nadamw" / "submission_torch.py"
# (workload, batch size, measured steps, warm-up steps): mnist's 128 is the reference
# submissions' mnist batch size (~2-3 ms a step on a CPU); cifar's 2 (~250 ms a step) buys 200
# samples in ~100 s per case: its steps vary by ~10% from one to the next on a shared 2-core
# VM, which leaves the ratio of medians a noise of about +-1% even with 200.
CASES = (("mnist", 128, 3000, 50), ("cifar", 2, 200, 4))


def without_eval(workload):
    """The real workload with eval switched off (the bench times training steps only).

    Instance attributes shadow the three methods, so every other attribute is read from the
    workload itself at its normal cost (a wrapper with `__getattr__` would add a Python call to
    each of the ~10 workload reads per step and bill it to the runner).
    """
    workload.eval_model = lambda *args, **kwargs: {}
    workload.has_reached_validation_target = lambda result: False
    workload.has_reached_test_target = lambda result: False
    return workload


def hyperparameters():
    space = search_space.load_search_space(SUBMISSION.parent / "tuning_search_space.json")
    return search_space.sample_points(space, 1, seed=0)[0]


def fresh_model(workload, compiled: bool):
    model, state = workload.init_model_fn(np_rng.prng_key(0))
    return (torch.compile(model) if compiled else model), state


class Case:
    """One model, its NAdamW state and a cached batch, shared by the runner and the bare loop.

    Both paths step the very same model and optimizer objects (training simply continues from
    one block to the next), so memory layout, caches and compiled graphs are identical and the
    ratio holds only what the runner adds.
    """

    def __init__(self, name: str, batch, compiled: bool, log_mode="none", log_dir=None):
        self.workload = without_eval(workloads.load(name, "pytorch"))
        self.monitor = None
        if log_mode != "none":  # what a run's rank 0 adds (see --logs)
            trial_sinks = sinks.Sinks()
            if log_mode == "tensorboard":
                trial_sinks = sinks.Sinks([sinks.TensorBoardSink(log_dir)])
            self.workload.attach_metrics_logger(logs.MetricsLogger(log_dir, 0, trial_sinks))
        if log_mode == "tensorboard":
            self.monitor = telemetry.Monitor(
                progress=Progress(enabled=False, budget_sec=1e9, target=""),
                sinks=trial_sinks,
                make_meter=lambda: telemetry.Meter(
                    global_batch_size=len(batch["targets"]),
                    memory=lambda: {telemetry.HOST_RSS: telemetry.host_rss_gib()},
                ),
            )
        self.submission = load_submission(SUBMISSION)
        self.hp = hyperparameters()
        self.batch = batch
        model, model_state = fresh_model(self.workload, compiled)
        optimizer_state = self.submission.init_optimizer_state(
            self.workload, model, model_state, self.hp, None
        )
        self.variables = TrainVars(model, model_state, optimizer_state)
        self.backend = get_backend("pytorch")
        self.model = model
        self._optimizer = optimizer_state["optimizer"]
        self._scheduler = optimizer_state["scheduler"]
        self.inputs, self.targets = batch["inputs"], batch["targets"]
        self.weights = batch["weights"]

    def bare_step(self) -> None:
        """The step written by hand: zero_grad / forward / loss / backward / step."""
        optimizer, scheduler = self._optimizer, self._scheduler
        optimizer.zero_grad(set_to_none=True)
        logits = self.model(self.inputs)
        # The same loss math as the submission (the workload's masked, smoothed loss_fn).
        losses = self.workload.loss_fn(
            self.targets, logits, self.weights, label_smoothing=self.hp.label_smoothing
        )
        loss = losses["summed"] / losses["n_valid_examples"]
        loss.backward()
        optimizer.step()
        scheduler.step()

    def interleaved(self, steps: int) -> tuple[list[float], list[float]]:
        """`steps` runner steps, each followed by one bare step run from the runner's
        `on_step` hook; returns (runner step times, bare step times).

        A runner step is timed from the end of the previous bare step to the runner's
        end-of-step clock reading, so it holds all the loop's per-step work (RNG derivation,
        data_selection, update_params and its wrappers, clock reads, the eval schedule, the
        hook call). Alternating single steps makes the machine's drift (other processes, CPU
        frequency, cache state) hit both paths alike.
        """
        runner_times: list[float] = []
        bare_times: list[float] = []
        last_end = [None]

        def on_step(loop_state, now):
            if last_end[0] is not None:
                runner_times.append(now - last_end[0])
            start = time.time()
            self.bare_step()
            end = time.time()
            bare_times.append(end - start)
            last_end[0] = end
            if self.monitor is not None:  # after `end`: billed to the runner's next step
                self.monitor.step(loop_state, now)

        settings = LoopSettings(
            budget_sec=1e9,
            eval_period_sec=1e9,
            global_batch_size=len(self.batch["targets"]),
            eval_batch_size=8,
            data_dir="",
            max_global_steps=steps,
        )
        self.model.train()
        train_loop(
            self.workload,
            self.submission,
            self.hp,
            self.variables,
            itertools.repeat(self.batch),
            np_rng.prng_key(1),
            backend=self.backend,
            clock=Clock.of(self.backend),
            settings=settings,
            state=LoopState(),
            hooks=LoopHooks(on_step=on_step),
        )
        return runner_times, bare_times


def measure(name, batch_size, steps, compiled, warmup, log_mode="none"):
    """Medians of the runner's and the bare loop's step times over `steps` alternating steps
    (after `warmup` pairs: compilation, allocator, caches), and the median of the per-pair
    ratios (runner step / the bare step right after it), and the ratio of the mean step times.

    The ratio of means counts work done every N steps (the submission's logging: every 100),
    which medians leave out; it is noisier. The pair ratio is printed as a noise check: drift
    between pairs cancels in it, so where it and the ratio of medians disagree, the machine's
    noise (a cifar step varies by ~10% from step to step on a shared 2-core VM) is larger than
    the runner's cost.
    """
    from algoperf import workloads

    batch = to_torch(workloads.load(name, "pytorch").fake_batch(batch_size), torch.device("cpu"))
    with tempfile.TemporaryDirectory() as folder:
        case = Case(name, batch, compiled, log_mode, pathlib.Path(folder))
        runner, bare = case.interleaved(warmup + steps)
    runner, bare = runner[warmup:], bare[warmup:]
    paired = statistics.median(r / b for r, b in zip(runner, bare))
    means = statistics.fmean(runner) / statistics.fmean(bare)
    return statistics.median(runner), statistics.median(bare), paired, means


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiplies the measured steps of every case"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run (--scale 0.05)")
    parser.add_argument(
        "--logs",
        choices=("none", "csv", "tensorboard"),
        default="none",
        help="what the runner path also logs (see the module docstring)",
    )
    parser.add_argument(
        "--cases",
        default="",
        help="only these cases, e.g. 'mnist-eager,cifar-compiled' (default: all four)",
    )
    args = parser.parse_args(argv)
    configure_process("pytorch", "v1.0")
    warnings.filterwarnings("ignore")
    worst = 0.0
    scale = 0.05 if args.quick else args.scale
    wanted = {case for case in args.cases.split(",") if case}
    for (name, batch_size, steps, warmup), compiled in itertools.product(CASES, (False, True)):
        mode = "compiled" if compiled else "eager"
        if wanted and f"{name}-{mode}" not in wanted:
            continue
        runner, bare, paired, means = measure(
            name, batch_size, max(int(steps * scale), 3), compiled, warmup, args.logs
        )
        ratio = runner / bare
        worst = max(worst, ratio)
        print(
            f"{name:6} {mode:8} batch {batch_size:4}: runner {runner * 1e3:8.3f} ms/step, "
            f"bare {bare * 1e3:8.3f} ms/step, ratio {ratio:.3f} (paired {paired:.3f}, "
            f"means {means:.3f})",
            flush=True,
        )
    print(f"worst ratio: {worst:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
