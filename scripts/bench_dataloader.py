"""Input-pipeline cost: step time with the live sharded loader over step time with a cached batch.

A step is the NAdamW reference `update_params` (plus, for the live loader, `next(input_queue)`
on the queue `workload._build_input_queue` returns, as the runner's data_selection does). For
mnist (the offline MNIST sample) and cifar (format-exact CIFAR-10 batch files of random pixels,
full size: 5 x 10,000 training + 10,000 test images, written to a temp dir) at 1 process and at
2 processes (torchrun, gloo). Live and cached steps alternate one by one to cancel drift; the
ratio is of the medians, and the ratio of the means is printed beside it: the in-memory stream
gathers ~8 MB of batches at once (algoperf/data/arrays.py), so one step in ~20 carries the
gather, which the median leaves out and the mean keeps.

Usage: .venv/bin/python scripts/bench_dataloader.py [--quick] [--compile]
       [--loader queue|inline|prefetch] [--workloads mnist,cifar]
Prints one line per case and, last, `worst ratio: X.XXX` (goal <= 1.05), the worst ratio of
medians.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
SUBMISSION = ROOT / "submissions" / "nadamw" / "submission_torch.py"
# (workload, global batch size, steps per block, rounds, warm-up steps). mnist: the reference
# batch size; cifar: 32, not 128, so a case takes minutes on 2 CPU cores (a smaller batch is the
# harder case: the loader's fixed cost per batch weighs more). Live and cached steps alternate
# one by one (the loaders here make each batch inside `next`, no background work), so load from
# other processes on the machine hits both alike.
CASES = (("mnist", 128, 1, 1500, 50), ("cifar", 32, 1, 20, 2))
PROCESS_COUNTS = (1, 2)


def write_cifar_files(folder: pathlib.Path, images_per_file: int = 10_000) -> None:
    """The python distribution's six pickled batch files, full size, random pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        images = rng.integers(0, 256, (images_per_file, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, images_per_file)]
        content = {b"batch_label": name.encode(), b"labels": labels, b"data": images}
        with open(folder / name, "wb") as handle:
            pickle.dump(content, handle, protocol=2)


def worker(args: argparse.Namespace) -> int:
    """One process of a case: alternating live / cached blocks; rank 0 prints a JSON line."""
    warnings.filterwarnings("ignore")
    import torch

    import workloads
    from algoperf import rng as np_rng
    from algoperf import tuning
    from algoperf.backend import get_backend
    from algoperf.data.prefetch import Prefetcher
    from algoperf.process import configure_process
    from algoperf.submission import load_submission
    from algoperf.torch.distributed import shutdown_and_exit
    from algoperf.torch.workload import to_torch

    configure_process("pytorch", "v1.0")
    backend = get_backend("pytorch")
    workload = workloads.load(args.workload, "pytorch")
    submission = load_submission(SUBMISSION)
    space = tuning.load_search_space(SUBMISSION.parent / "tuning_search_space.json")
    hyperparameters = tuning.sample_points(space, 1, seed=0)[0]
    data_rng = np_rng.prng_key(0)
    if args.loader == "queue":
        input_queue = workload._build_input_queue(
            data_rng, "train", args.data_dir, args.global_batch_size
        )
    else:
        numpy_batches = workload.numpy_batches(
            "train", args.data_dir, args.global_batch_size, np_rng.seed_from_key(data_rng),
            workload.shard,
        )  # fmt: skip
        to_tensors = functools.partial(to_torch, device=backend.device)
        if args.loader == "inline":  # numpy batch and tensor wrap inside the step
            input_queue = map(to_tensors, numpy_batches)
        else:  # both made in a background thread while the step runs
            input_queue = Prefetcher(numpy_batches, to_tensors)
    model, model_state = workload.init_model_fn(np_rng.prng_key(1))
    model = torch.compile(model) if args.compile else model
    optimizer_state = submission.init_optimizer_state(
        workload, model, model_state, hyperparameters, None
    )
    cached = next(input_queue)
    step_rng = np_rng.prng_key(2)

    def block(live: bool, steps: int) -> list[float]:
        nonlocal optimizer_state, model, model_state
        times = []
        for step in range(steps):
            start = time.perf_counter()
            batch = next(input_queue) if live else cached
            optimizer_state, model, model_state = submission.update_params(
                workload, model, None, model_state, hyperparameters, batch, None,
                optimizer_state, [], step + 1, step_rng,
            )  # fmt: skip
            backend.sync()
            times.append(time.perf_counter() - start)
        return times

    block(True, args.warmup_steps)  # warm-up: compilation, allocator, caches
    block(False, args.warmup_steps)
    live, cached_times = [], []
    for _ in range(args.rounds):
        live += block(True, args.steps)
        cached_times += block(False, args.steps)
    if backend.rank == 0:
        result = {
            "live": statistics.median(live),
            "cached": statistics.median(cached_times),
            "live_mean": statistics.fmean(live),
            "cached_mean": statistics.fmean(cached_times),
        }
        print("RESULT " + json.dumps(result), flush=True)
    shutdown_and_exit(0)
    return 0


def run_case(args, case: tuple, nproc: int, data_dir: str) -> dict[str, float]:
    workload, batch_size, steps, rounds, warmup_steps = case
    script = [
        str(pathlib.Path(__file__).resolve()), "--worker", "--workload", workload,
        "--global_batch_size", str(batch_size), "--steps", str(steps),
        "--rounds", str(rounds), "--warmup_steps", str(warmup_steps), "--data_dir", data_dir,
    ]  # fmt: skip
    script += ["--compile"] if args.compile else []
    script += ["--loader", args.loader]
    if nproc == 1:
        command = [sys.executable, *script]
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command = [*launcher, f"--nproc_per_node={nproc}", *script]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{workload} x{nproc} failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--warmup_steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--workloads", default="mnist,cifar")
    parser.add_argument(
        "--loader",
        choices=("queue", "inline", "prefetch"),
        default="queue",
        help="queue: workload._build_input_queue, what the runner uses (default); inline: the "
        "batch is made inside the step; prefetch: made by algoperf.data.prefetch.Prefetcher",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--global_batch_size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data_dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="bench_dataloader_") as tmp:
        if "cifar" in args.workloads.split(","):
            write_cifar_files(pathlib.Path(tmp) / "cifar10" / "cifar-10-batches-py")
        for workload, batch_size, steps, rounds, warmup_steps in CASES:
            if workload not in args.workloads.split(","):
                continue
            rounds = max(rounds // 4, 2) if args.quick else rounds
            for nproc in PROCESS_COUNTS:
                case = (workload, batch_size, steps, rounds, warmup_steps)
                times = run_case(args, case, nproc, tmp)
                ratio = times["live"] / times["cached"]
                worst = max(worst, ratio)
                print(
                    f"{workload:6} batch {batch_size:4} x{nproc} process(es): live "
                    f"{times['live'] * 1e3:9.3f} ms/step, cached {times['cached'] * 1e3:9.3f} "
                    f"ms/step, ratio {ratio:.3f} (means: "
                    f"{times['live_mean'] / times['cached_mean']:.3f})",
                    flush=True,
                )
    print(f"worst ratio: {worst:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
