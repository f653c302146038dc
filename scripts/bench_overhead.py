"""Runner overhead: the runner's median step time over a bare loop's (same model, same batch).

For mnist and cifar, eager and compiled (PyTorch): the runner path is `runner.train_loop` with the
NAdamW reference submission (RNG derivation, data_selection, update_params, clock reads with
device sync, train-state bookkeeping, progress hook); the bare loop does the same zero_grad /
forward / loss (the workload's masked, smoothed `loss_fn`) / backward / NAdamW step / LR-schedule
step on the same model and optimizer objects. Both are fed one cached batch, so the ratio is the
runner's cost alone (the data loader's cost is measured by scripts/bench_dataloader.py). Short
blocks of each alternate over many rounds.

Usage: .venv/bin/python scripts/bench_overhead.py [--rounds 20] [--quick]
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
from algoperf.runner import LoopSettings, LoopState, TrainVars, train_loop
from algoperf.submission import load_submission
from algoperf.torch.workload import to_torch

SUBMISSION = PACKAGE_ROOT / "submissions" / "nadamw" / "submission_torch.py"
# (workload, batch size, steps per block): batches sized so a step is ~2-500 ms on a CPU.
CASES = (("mnist", 128, 30), ("cifar", 16, 3))


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


class Case:
    """One model, its NAdamW state and a cached batch, shared by the runner and the bare loop.

    Both paths step the very same model and optimizer objects (training simply continues from
    one block to the next), so memory layout, caches and compiled graphs are identical and the
    ratio holds only what the runner adds.
    """

    def __init__(self, name: str, batch, compiled: bool):
        self.workload = workloads.load(name, "pytorch")
        self.submission = load_submission(SUBMISSION)
        self.hp = hyperparameters()
        self.batch = batch
        model, model_state = fresh_model(self.workload, compiled)
        optimizer_state = self.submission.init_optimizer_state(
            self.workload, model, model_state, self.hp, None
        )
        self.variables = TrainVars(model, model_state, optimizer_state)
        self.state = LoopState()
        self.backend = get_backend("pytorch")

    def runner_block(self, steps: int) -> list[float]:
        """`steps` steps of `runner.train_loop` (the NAdamW reference submission)."""
        stamps: list[float] = []
        self.state.training_complete = False
        settings = LoopSettings(
            budget_sec=1e9,
            eval_period_sec=1e9,
            global_batch_size=len(self.batch["targets"]),
            eval_batch_size=8,
            data_dir="",
            max_global_steps=self.state.global_step + steps,
        )
        train_loop(
            NoEvalWorkload(self.workload),
            self.submission,
            self.hp,
            self.variables,
            itertools.repeat(self.batch),
            np_rng.prng_key(1),
            backend=self.backend,
            clock=Clock(sync=self.backend.sync),
            settings=settings,
            state=self.state,
            on_step=lambda loop_state, now: stamps.append(now),
        )
        return [b - a for a, b in zip(stamps, stamps[1:])]

    def bare_block(self, steps: int) -> list[float]:
        """The same step written by hand: zero_grad / forward / loss / backward / step."""
        workload, hp = self.workload, self.hp
        model = self.variables.params
        optimizer = self.variables.optimizer_state["optimizer"]
        scheduler = self.variables.optimizer_state["scheduler"]
        inputs, targets = self.batch["inputs"], self.batch["targets"]
        weights = self.batch["weights"]
        model.train()
        times = []
        for _ in range(steps):
            start = time.time()
            optimizer.zero_grad(set_to_none=True)
            logits = model(inputs)
            # The same loss math as the submission (the workload's masked, smoothed loss_fn).
            losses = workload.loss_fn(targets, logits, weights, label_smoothing=hp.label_smoothing)
            loss = losses["summed"] / losses["n_valid_examples"]
            loss.backward()
            optimizer.step()
            scheduler.step()
            times.append(time.time() - start)
        return times


def measure(name, batch_size, steps, compiled, rounds) -> tuple[float, float]:
    """Medians over `rounds` alternating blocks (the order flips each round, so drift and
    load from other processes hit both paths alike)."""
    module = __import__(f"workloads.{name}.input_pipeline", fromlist=["fake_batch"])
    batch = to_torch(module.fake_batch(batch_size, layout="NCHW"), torch.device("cpu"))
    case = Case(name, batch, compiled)
    case.runner_block(3)  # warm up both paths (compilation, allocator, first eval point)
    case.bare_block(3)
    runner, bare = [], []
    for index in range(rounds):
        blocks = [(case.runner_block, runner), (case.bare_block, bare)]
        for block, times in blocks if index % 2 == 0 else blocks[::-1]:
            times += block(steps)
    return statistics.median(runner), statistics.median(bare)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="2 rounds (a smoke run)")
    args = parser.parse_args(argv)
    configure_process("pytorch", "v1.0")
    warnings.filterwarnings("ignore")
    worst = 0.0
    for (name, batch_size, steps), compiled in itertools.product(CASES, (False, True)):
        rounds = min(args.rounds, 2) if args.quick else args.rounds
        runner, bare = measure(name, batch_size, steps, compiled, rounds)
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
