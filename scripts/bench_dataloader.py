"""Input-pipeline cost: step time with the live sharded loader over step time with a cached batch.

A step is the NAdamW reference `update_params` (plus, for the live loader, `next(input_queue)`
on the queue `workload._build_input_queue` returns, as the runner's data_selection does). For
mnist and cifar, each from format-exact files of random pixels written to a temp dir, full size
(MNIST: 60,000 + 10,000 idx images, so the train split is the real 50,000; CIFAR-10: 5 x 10,000
+ 10,000 images in the python batch files), at 1 process and at 2 processes (torchrun, gloo).
Full size matters: the 4,000-image offline sample fits in the L3 cache and its epoch (31 steps)
reshuffles every ~1.5 chunks, neither true of the real dataset.

The same worker run in separate processes measures differently (the cached mnist step was
1.3-2.5 ms from one process to the next on this 2-vCPU VM: memory placement, neighbours), so
each case runs `repeats` processes and reports the median of their ratios, all of them beside it.

The in-memory streams gather and decode ~8 MB of batches at once (algoperf/data/arrays.py), so
one step in ~20 carries that work. Live and cached steps therefore alternate in blocks of whole
chunks (>= 20 steps): every live block holds the same number of chunks. Each round runs one block
of each kind in a seeded random order (so no kind always follows the same one), and the ratio
is the median over rounds of live block time / cached block time of the same round: it keeps
the chunk's cost (a ratio of step medians would leave it out) but not the machine's multi-ms
hiccups (a ratio of means keeps those: printed beside it, with the ratio of step medians and of
median block times), and pairing blocks of one round cancels drift over minutes (cifar's blocks
last 15-35 s, and this VM's speed drifts by 10% and more between them). Blocks, not single
steps, also keep a live step's cache misses from being charged to the cached step that follows
it (one-by-one alternation did: ~2% on mnist).

A third block kind, `premade`, cycles through distinct batches made before timing (>= 64 MB of
them): each step reads new data but no loader work is timed.
premade/cached is what new data costs a step by itself; live/premade is the loader's own cost.
A fourth, `copy`, is the least any loader of fresh data can do: once a chunk, one copy per key of
the next chunk of premade batches (contiguous, already decoded) into a reused buffer, then a view
a step; no indices, no gather, no decode. copy/cached is the floor a live loader is measured
against on this machine: writing the bytes a step consumes is not free (on this project's 2-vCPU
VMs it measured 1.06-1.09 for mnist x1, the live loader 1.08-1.12).
Minor page faults a step (first touches of fresh memory, ~3.5 us each on this project's VMs) are
printed for live and cached blocks; the torch stream reuses its chunk buffers
(algoperf/torch/chunks.py), so its live count is ~0 (it was 4-30 a step with a new chunk array
each time, depending on what else the process had allocated).

Usage: .venv/bin/python scripts/bench_dataloader.py [--quick] [--compile] [--repeats N]
       [--loader queue|inline|prefetch] [--workloads mnist,cifar] [--processes 1,2]
Prints one line per case and, last, `worst ratio: X.XXX` (goal <= 1.05), the worst over the cases
of their median process's paired ratio.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import pathlib
import pickle
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
SUBMISSION = ROOT / "submissions" / "nadamw" / "submission_torch.py"
# (workload, global batch size, rounds, warm-up steps, repeats); a round is one live, one cached,
# one premade and one copy block of whole chunks (20 steps for mnist x1, 21 for cifar x1, twice
# that at 2 processes); `repeats` processes per case. mnist: the reference batch size; cifar: 32,
# not 128, so a case takes minutes on 2 CPU cores (a smaller batch is the harder case: the
# loader's fixed cost per batch weighs more) and one process (its 1 s steps vary less).
CASES = (("mnist", 128, 60, 50, 3), ("cifar", 32, 5, 2, 1))
PREMADE_BYTES, MAX_PREMADE = 64 << 20, 400
MIN_BLOCK_STEPS = 20
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
    """One process of a case: live / cached / premade / copy blocks in turn; rank 0 prints a JSON
    line."""
    warnings.filterwarnings("ignore")
    import torch

    from algoperf import rng as np_rng
    from algoperf import search_space, workloads
    from algoperf.backend import get_backend
    from algoperf.data.arrays import steps_per_chunk
    from algoperf.data.prefetch import Prefetcher
    from algoperf.process import configure_process
    from algoperf.submission import load_submission
    from algoperf.torch.distributed import shutdown_and_exit
    from algoperf.torch.workload import to_torch

    if args.chunk_bytes:
        from algoperf.data import arrays

        arrays.CHUNK_BYTES = args.chunk_bytes
    configure_process("pytorch", "v1.0")
    backend = get_backend("pytorch")
    workload = workloads.load(args.workload, "pytorch")
    submission = load_submission(SUBMISSION)
    space = search_space.load_search_space(SUBMISSION.parent / "tuning_search_space.json")
    hyperparameters = search_space.sample_points(space, 1, seed=0)[0]
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
    train_split = workload.dataset(args.data_dir)["train"]
    chunk_steps = steps_per_chunk(
        train_split, workload.shard.local_batch_size(args.global_batch_size)
    )
    block_steps = chunk_steps * -(-MIN_BLOCK_STEPS // chunk_steps)  # whole chunks, >= 20 steps
    # New data without loader work: distinct batches made before the clock (>= PREMADE_BYTES, more
    # than this machine's 32 MB L3), so each step reads new data but no loader work is timed.
    batch_bytes = sum(value.nbytes for value in cached.values())
    premade_count = min(MAX_PREMADE, max(2 * block_steps, -(-PREMADE_BYTES // batch_bytes)))
    premade_count = -(-premade_count // chunk_steps) * chunk_steps  # whole chunks, for `copy`
    batches = [next(input_queue) for _ in range(premade_count)]
    premade = {key: torch.stack([batch[key] for batch in batches]) for key in cached}
    del batches
    premade_batches = [
        {key: value[i] for key, value in premade.items()} for i in range(premade_count)
    ]

    def copy_stream():
        """The least a loader of fresh data does: write each chunk's bytes once (see above)."""
        buffer = {key: torch.empty_like(value[:chunk_steps]) for key, value in premade.items()}
        for start in itertools.cycle(range(0, premade_count, chunk_steps)):
            for key, value in buffer.items():
                value.copy_(premade[key][start : start + chunk_steps])
            for i in range(chunk_steps):
                yield {key: value[i] for key, value in buffer.items()}

    sources = {
        "live": lambda: next(input_queue),
        "cached": lambda: cached,
        "premade": itertools.cycle(premade_batches).__next__,
        "copy": copy_stream().__next__,
    }

    def block(source, steps: int) -> list[float]:
        nonlocal optimizer_state, model, model_state
        times = []
        for step in range(steps):
            start = time.perf_counter()
            batch = source()
            optimizer_state, model, model_state = submission.update_params(
                workload, model, None, model_state, hyperparameters, batch, None,
                optimizer_state, [], step + 1, step_rng,
            )  # fmt: skip
            backend.sync()
            times.append(time.perf_counter() - start)
        return times

    for source in sources.values():  # warm-up: compilation, allocator, caches
        block(source, args.warmup_steps)
    blocks = {name: [] for name in sources}
    faults = dict.fromkeys(sources, 0)  # minor page faults (first touches of new memory)
    order = list(sources)
    for round_index in range(args.rounds):
        random.Random(round_index).shuffle(order)  # the same order on every rank
        for name in order:
            source = sources[name]
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            blocks[name].append(block(source, block_steps))
            faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    if backend.rank == 0:
        result = {"block_steps": block_steps, "chunk_steps": chunk_steps}
        for name, times in blocks.items():
            steps = sum(times, [])
            result[name] = statistics.median(map(sum, times)) / block_steps
            result[f"{name}_median"] = statistics.median(steps)
            result[f"{name}_mean"] = statistics.fmean(steps)
            result[f"{name}_faults"] = faults[name] / len(steps)
            # this kind's block over the cached block of the same round
            result[f"{name}_paired"] = statistics.median(
                sum(kind) / sum(base) for kind, base in zip(times, blocks["cached"])
            )
        print("RESULT " + json.dumps(result), flush=True)
    shutdown_and_exit(0)
    return 0


def run_case(args, case: tuple, nproc: int, data_dir: str) -> dict[str, float]:
    workload, batch_size, rounds, warmup_steps = case[:4]
    script = [
        str(pathlib.Path(__file__).resolve()), "--worker", "--workload", workload,
        "--global_batch_size", str(batch_size), "--rounds", str(rounds),
        "--warmup_steps", str(warmup_steps), "--data_dir", data_dir,
    ]  # fmt: skip
    script += ["--chunk_bytes", str(args.chunk_bytes)] if args.chunk_bytes else []
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
        "--processes",
        default=",".join(map(str, PROCESS_COUNTS)),
        help="process counts to run (comma-separated; on GPUs at most one per GPU)",
    )
    parser.add_argument(
        "--repeats", type=int, help="processes per case (default: CASES; 1 with --quick)"
    )
    parser.add_argument(
        "--loader",
        choices=("queue", "inline", "prefetch"),
        default="queue",
        help="queue: workload._build_input_queue, what the runner uses (default); inline: the "
        "batch is made inside the step; prefetch: made by algoperf.data.prefetch.Prefetcher",
    )
    parser.add_argument(
        "--chunk_bytes", type=int, help="override algoperf.data.arrays.CHUNK_BYTES (to explore)"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--global_batch_size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data_dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="bench_dataloader_") as tmp:
        if "cifar" in args.workloads.split(","):
            write_cifar_files(pathlib.Path(tmp) / "cifar10" / "cifar-10-batches-py")
        if "mnist" in args.workloads.split(","):
            from algoperf.workloads.mnist.input_pipeline import write_random_files

            write_random_files(pathlib.Path(tmp) / "mnist")
        for workload, batch_size, rounds, warmup_steps, repeats in CASES:
            if workload not in args.workloads.split(","):
                continue
            rounds = max(rounds // 4, 2) if args.quick else rounds
            repeats = args.repeats or (1 if args.quick else repeats)
            for nproc in map(int, args.processes.split(",")):
                case = (workload, batch_size, rounds, warmup_steps)
                runs = sorted(
                    (run_case(args, case, nproc, tmp) for _ in range(repeats)),
                    key=lambda times: times["live_paired"],
                )
                times = runs[len(runs) // 2]  # the median run (the upper one of an even count)
                ratio = times["live_paired"]
                worst = max(worst, ratio)
                each = ", ".join(f"{run['live_paired']:.3f}" for run in runs)
                print(
                    f"{workload:6} batch {batch_size:4} x{nproc} process(es), blocks of "
                    f"{times['block_steps']:2} ({times['chunk_steps']} a chunk): ratio {ratio:.3f} "
                    f"(median of {len(runs)} processes: {each}); in that one: live "
                    f"{times['live'] * 1e3:8.3f} ms/step, cached "
                    f"{times['cached'] * 1e3:8.3f} ms/step (median blocks "
                    f"{times['live'] / times['cached']:.3f}, means "
                    f"{times['live_mean'] / times['cached_mean']:.3f}, step medians "
                    f"{times['live_median'] / times['cached_median']:.3f}); premade "
                    f"{times['premade'] * 1e3:8.3f} ms/step: premade/cached "
                    f"{times['premade_paired']:.3f}, live/premade "
                    f"{times['live_paired'] / times['premade_paired']:.3f}; copy/cached "
                    f"{times['copy_paired']:.3f} (the floor), live/copy "
                    f"{times['live_paired'] / times['copy_paired']:.3f}; page faults a step: "
                    f"live {times['live_faults']:.1f}, cached {times['cached_faults']:.1f}",
                    flush=True,
                )
    print(f"worst ratio: {worst:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
