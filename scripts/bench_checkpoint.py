"""Checkpoint cost of a JAX trial: the backend's save_state / load_state on mnist's real state.

The state is what a trial checkpoints: mnist's params and model state and the NAdamW reference
submission's optimizer state (its first search-space point), as the runner builds them. Each
round saves into a fresh folder and restores from it into a fresh copy of the state, and checks
the restored leaves equal the saved ones.

Usage: .venv/bin/python scripts/bench_checkpoint.py [--workload mnist] [--rounds 20]
Prints the median and min save and restore times in ms and the size on disk.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import tempfile
import time

import jax
import numpy as np

from algoperf import search_space, workloads
from algoperf.backend import get_backend
from algoperf.config import PACKAGE_ROOT
from algoperf.loop import TrainVars
from algoperf.process import configure_process
from algoperf.submission import load_submission

SUBMISSION = PACKAGE_ROOT / "submissions" / "nadamw" / "submission_jax.py"


def trial_state(name: str, backend) -> TrainVars:
    workload = workloads.load(name, "jax")
    submission = load_submission(SUBMISSION)
    space = search_space.load_search_space(SUBMISSION.parent / "tuning_search_space.json")
    hyperparameters = search_space.sample_points(space, 1, seed=0)[0]
    params, model_state = workload.init_model_fn(backend.prng_key(0))
    optimizer_state = submission.init_optimizer_state(
        workload, params, model_state, hyperparameters, backend.prng_key(1)
    )
    return TrainVars(params, model_state, optimizer_state)


def folder_bytes(folder: pathlib.Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="mnist")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    configure_process("jax", "v1.0")
    backend = get_backend("jax")
    state = trial_state(args.workload, backend)
    expected = jax.tree.leaves(jax.device_get(backend._tree(state)))
    saves, restores = [], []
    with tempfile.TemporaryDirectory() as root:
        for index in range(args.rounds):
            folder = pathlib.Path(root) / f"round_{index}"
            folder.mkdir()
            start = time.perf_counter()
            backend.save_state(folder, state)
            saves.append(time.perf_counter() - start)
            # A fresh holder of the same (immutable) arrays: load_state replaces its fields.
            target = TrainVars(state.params, state.model_state, state.optimizer_state)
            start = time.perf_counter()
            restored = backend.load_state(folder, target)
            jax.block_until_ready(backend._tree(restored))
            restores.append(time.perf_counter() - start)
            got = jax.tree.leaves(jax.device_get(backend._tree(restored)))
            assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
        size = folder_bytes(folder)
    leaves = len(expected)
    print(
        f"{args.workload} jax state ({leaves} leaves, {size / 1e6:.2f} MB on disk), "
        f"{args.rounds} rounds: save median {statistics.median(saves) * 1e3:.1f} ms "
        f"(min {min(saves) * 1e3:.1f}), restore median {statistics.median(restores) * 1e3:.1f} "
        f"ms (min {min(restores) * 1e3:.1f})"
    )


if __name__ == "__main__":
    main()
