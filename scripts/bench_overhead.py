"""Runner overhead: the runner's median step time over a bare loop's (same model, same batch).

For mnist and cifar, eager and compiled (PyTorch): the runner path is `runner.train_loop` with the
NAdamW reference submission (RNG derivation, data_selection, update_params, clock reads with
device sync, train-state bookkeeping, progress hook); the bare loop does the same zero_grad /
forward / loss (the workload's masked, smoothed `loss_fn`) / backward / NAdamW step / LR-schedule
step on an identical model. Both are fed one cached batch, so the ratio is the runner's cost alone
(the data loader's cost is measured by scripts/bench_dataloader.py). Runs alternate in rounds.

Usage: .venv/bin/python scripts/bench_overhead.py [--rounds 3] [--quick]
Prints one line per case and, last, `worst ratio: X.XXX` (goal <= 1.02).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
import warnings

import torch

import workloads
from algoperf import rng as np_rng
from algoperf import tuning
from algoperf.backend import get_backend
from algoperf.clock import Clock
from algoperf.config import PACKAGE_ROOT
from algoperf.process import configure_process
from algoperf.runner import LoopSettings, TrainVars, train_loop
from algoperf.submission import load_submission
from algoperf.torch.workload import to_torch

SUBMISSION = PACKAGE_ROOT / "submissions" / "nadamw" / "submission_torch.py"
# (workload, batch size, steps per round): batches sized so a step is ~2-500 ms on a CPU.
CASES = (("mnist", 128, 300), ("cifar", 16, 12))


class NoEvalWorkload:
    """The real workload with eval replaced by a no-op (the bench times training steps only)."""

    def __init__(self, workload):
        self._workload = workload

    def __getattr__(self, name):
        return getattr(self._workload, name)

    def eval_model(self, *args, **kwargs):
        return {}

    def has_reached_validation_target(self, result):
        return False

    def has_reached_test_target(self, result):
        return False


def hyperparameters():
    space = tuning.load_search_space(SUBMISSION.parent / "tuning_search_space.json")
    return tuning.sample_points(space, 1, seed=0)[0]


def fresh_model(workload, compiled: bool):
    model, state = workload.init_model_fn(np_rng.prng_key(0))
    return (torch.compile(model) if compiled else model), state


def runner_step_times(name, batch, steps, compiled) -> list[float]:
    backend = get_backend("pytorch")
    workload = workloads.load(name, "pytorch")
    submission = load_submission(SUBMISSION)
    hp = hyperparameters()
    model, state = fresh_model(workload, compiled)
    optimizer_state = submission.init_optimizer_state(workload, model, state, hp, None)
    stamps: list[float] = []
    settings = LoopSettings(
        budget_sec=1e9,
        eval_period_sec=1e9,
        global_batch_size=len(batch["targets"]),
        eval_batch_size=8,
        data_dir="",
        max_global_steps=steps,
    )
    train_loop(
        NoEvalWorkload(workload),
        submission,
        hp,
        TrainVars(model, state, optimizer_state),
        itertools.repeat(batch),
        np_rng.prng_key(1),
        backend=backend,
        clock=Clock(sync=backend.sync),
        settings=settings,
        on_step=lambda loop_state, now: stamps.append(now),
    )
    return [b - a for a, b in zip(stamps, stamps[1:])]


def bare_step_times(name, batch, steps, compiled) -> list[float]:
    from submissions.common.nadamw_torch import NAdamW
    from submissions.common.schedules import schedule_for

    workload = workloads.load(name, "pytorch")
    hp = hyperparameters()
    model, _ = fresh_model(workload, compiled)
    schedule = schedule_for(workload.step_hint, hp)
    optimizer = NAdamW(
        model.parameters(),
        lr=schedule.peak_lr,
        betas=(1 - hp.one_minus_beta1, hp.beta2),
        weight_decay=hp.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.multiplier())
    inputs, targets, weights = batch["inputs"], batch["targets"], batch["weights"]
    model.train()
    times = []
    for _ in range(steps):
        start = time.time()
        optimizer.zero_grad(set_to_none=True)
        logits = model(inputs)
        # The same loss math as the submission (the workload's masked, smoothed loss_fn), so
        # the ratio isolates what the runner and the API calls add around the step.
        losses = workload.loss_fn(targets, logits, weights, label_smoothing=hp.label_smoothing)
        loss = losses["summed"] / losses["n_valid_examples"]
        loss.backward()
        optimizer.step()
        scheduler.step()
        times.append(time.time() - start)
    return times


def measure(name, batch_size, steps, compiled, rounds) -> tuple[float, float]:
    module = __import__(f"workloads.{name}.input_pipeline", fromlist=["fake_batch"])
    batch = to_torch(module.fake_batch(batch_size, layout="NCHW"), torch.device("cpu"))
    warmup = 5
    runner, bare = [], []
    for _ in range(rounds):
        runner += runner_step_times(name, batch, steps + warmup, compiled)[warmup:]
        bare += bare_step_times(name, batch, steps + warmup, compiled)[warmup:]
    return statistics.median(runner), statistics.median(bare)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    args = parser.parse_args(argv)
    configure_process("pytorch", "v1.0")
    warnings.filterwarnings("ignore")
    worst = 0.0
    for (name, batch_size, steps), compiled in itertools.product(CASES, (False, True)):
        steps = max(steps // 10, 3) if args.quick else steps
        runner, bare = measure(name, batch_size, steps, compiled, args.rounds)
        ratio = runner / bare
        worst = max(worst, ratio)
        mode = "compiled" if compiled else "eager"
        print(
            f"{name:6} {mode:8} batch {batch_size:4}: runner {runner * 1e3:8.3f} ms/step, "
            f"bare {bare * 1e3:8.3f} ms/step, ratio {ratio:.3f}",
            flush=True,
        )
    print(f"worst ratio: {worst:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
