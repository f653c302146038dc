"""Train a workload's model in a plain PyTorch loop, without the runner (docs/library.md).

    python examples/plain_pytorch_loop.py --workload mnist --steps 300
    torchrun --standalone --nproc_per_node=2 examples/plain_pytorch_loop.py --workload cifar

Under torchrun the loop wraps the model in DDP itself and reads its rank's rows of each batch;
`evaluate` then sums across ranks. No timing rules apply here: this is library use.
"""

from __future__ import annotations

import argparse
import itertools
import os

import torch
import torch.distributed as dist

from algoperf.torch import library


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="mnist")
    parser.add_argument("--data_dir", default="~/data")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    distributed = "LOCAL_RANK" in os.environ
    if distributed:  # your script owns the process group (library use never starts one)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu"
    task = library.load(args.workload, data_dir=args.data_dir, device=device, allow_download=True)
    model = task.build_model(seed=args.seed)
    trained = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    batches = task.batches("train", args.batch_size, seed=args.seed, shard=distributed)
    for step, batch in enumerate(itertools.islice(batches, args.steps)):
        loss = task.loss(trained, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 100 == 0 and (not distributed or dist.get_rank() == 0):
            print(f"step {step}: loss {loss.item():.4f}", flush=True)
    results = task.evaluate(model, "validation")
    if not distributed or dist.get_rank() == 0:
        metric = task.spec.target_metric_name
        print(
            f"validation {metric} {results[metric]:.4f} on {results['num_examples']} examples "
            f"(target {task.spec.validation_target:g})",
            flush=True,
        )
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
