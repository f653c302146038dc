"""DDP scaling on CPU: training throughput (examples/s) of 2 processes (torchrun, gloo) over 1.

A step is `next(input_queue)` + the NAdamW reference `update_params`, on the queue the runner
uses (each rank reads its half of every global batch). torchrun gives each of its processes one
thread (OMP_NUM_THREADS=1), so the scaling ratio compares it with one process on one thread (ideal:
2.0); one process with torch's default threads (one per core) is printed too, as users get it.
mnist runs on the offline MNIST sample, cifar on format-exact random-pixel CIFAR-10 files.

Usage: .venv/bin/python scripts/bench_ddp.py [--quick] [--compile] [--workloads mnist,cifar]
Prints one line per workload: examples/s of each configuration and the 2-process ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
import warnings

ROOT = pathlib.Path(__file__).resolve().parents[1]
SUBMISSION = ROOT / "submissions" / "nadamw" / "submission_torch.py"
# (workload, global batch size, timed steps, warm-up steps)
CASES = (("mnist", 128, 400, 40), ("cifar", 64, 6, 2))


def worker(args: argparse.Namespace) -> int:
    """Train `args.steps` steps after a warm-up; rank 0 prints examples/s as a JSON line."""
    warnings.filterwarnings("ignore")
    import torch

    from algoperf import rng as np_rng
    from algoperf import search_space, workloads
    from algoperf.backend import get_backend
    from algoperf.process import configure_process
    from algoperf.submission import load_submission
    from algoperf.torch.distributed import shutdown_and_exit

    configure_process("pytorch", "v1.0")
    backend = get_backend("pytorch")
    workload = workloads.load(args.workload, "pytorch")
    submission = load_submission(SUBMISSION)
    space = search_space.load_search_space(SUBMISSION.parent / "tuning_search_space.json")
    hyperparameters = search_space.sample_points(space, 1, seed=0)[0]
    input_queue = workload._build_input_queue(
        np_rng.prng_key(0), "train", args.data_dir, args.global_batch_size
    )
    model, model_state = workload.init_model_fn(np_rng.prng_key(1))
    model = torch.compile(model) if args.compile else model
    optimizer_state = submission.init_optimizer_state(
        workload, model, model_state, hyperparameters, None
    )
    step_rng = np_rng.prng_key(2)
    start = 0.0
    for step in range(args.warmup_steps + args.steps):
        if step == args.warmup_steps:
            backend.barrier()
            start = time.perf_counter()
        optimizer_state, model, model_state = submission.update_params(
            workload, model, None, model_state, hyperparameters, next(input_queue), None,
            optimizer_state, [], step + 1, step_rng,
        )  # fmt: skip
    backend.sync()
    backend.barrier()
    elapsed = time.perf_counter() - start
    if backend.rank == 0:
        result = {
            "examples_per_s": args.global_batch_size * args.steps / elapsed,
            "threads": torch.get_num_threads(),
        }
        print("RESULT " + json.dumps(result), flush=True)
    shutdown_and_exit(0)
    return 0


def run_case(args, case: tuple, nproc: int, data_dir: str, threads: int | None = None) -> dict:
    """One configuration in fresh processes; `threads` sets OMP_NUM_THREADS (None: default)."""
    workload, batch_size, steps, warmup_steps = case
    script = [
        str(pathlib.Path(__file__).resolve()), "--worker", "--workload", workload,
        "--global_batch_size", str(batch_size), "--steps", str(steps),
        "--warmup_steps", str(warmup_steps), "--data_dir", data_dir,
    ]  # fmt: skip
    script += ["--compile"] if args.compile else []
    if nproc == 1:
        command = [sys.executable, *script]
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command = [*launcher, f"--nproc_per_node={nproc}", *script]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    env.pop("OMP_NUM_THREADS", None)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(f"{workload} x{nproc} failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--workloads", default="mnist,cifar")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--global_batch_size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--warmup_steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data_dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from bench_dataloader import write_cifar_files

    with tempfile.TemporaryDirectory(prefix="bench_ddp_") as tmp:
        if "cifar" in args.workloads.split(","):
            write_cifar_files(pathlib.Path(tmp) / "cifar10" / "cifar-10-batches-py")
        for workload, batch_size, steps, warmup_steps in CASES:
            if workload not in args.workloads.split(","):
                continue
            steps = max(steps // 4, 2) if args.quick else steps
            case = (workload, batch_size, steps, warmup_steps)
            default = run_case(args, case, 1, tmp)
            one = run_case(args, case, 1, tmp, threads=1)
            two = run_case(args, case, 2, tmp)
            rate = {name: run["examples_per_s"] for name, run in (("1", one), ("2", two))}
            print(
                f"{workload:6} batch {batch_size:4}: examples/s 1 process {rate['1']:8.1f} "
                f"(1 thread), {default['examples_per_s']:8.1f} ({default['threads']} threads); "
                f"2 processes {rate['2']:8.1f} (1 thread each); ratio 2/1 "
                f"{rate['2'] / rate['1']:.3f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
