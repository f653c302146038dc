"""K steps of the NAdamW reference submission on fixed fake batches; rank 0 saves the result.

Run by tests/test_ddp.py, either under `torchrun --nproc_per_node=2` (DDP: each rank feeds its
half of every global batch) or as one plain process on the full global batch. Rank 0 saves the
unwrapped model's initial and final state_dicts and the last step's gradients to `--out`.

`--bn_groups G` (one process only) normalises each of G equal slices of the batch with its own
batch-norm statistics and lets only the first slice update the running averages: exactly what G
DDP ranks compute, since DDP keeps BN statistics per rank (as upstream), and what rank 0 holds.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Exact hyperparameters, chosen so that 3 steps move the weights a lot: no warmup (the reference
# schedules start at lr 0), no label smoothing or dropout.
HPARAMS = {
    "learning_rate": 0.003,
    "one_minus_beta1": 0.1,
    "beta2": 0.99,
    "weight_decay": 0.05,
    "warmup_factor": 0.0,
    "label_smoothing": 0.0,
    "dropout_rate": 0.0,
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workload", required=True)
    parser.add_argument("--global_batch_size", type=int, required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--compile", type=int, default=0)
    parser.add_argument("--bn_groups", type=int, default=1)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    # A smaller configuration of the workload (JSON): model_kwargs and declared options.
    parser.add_argument("--workload_kwargs", type=json.loads, default={})
    parser.add_argument("--out", required=True)
    return parser.parse_args(argv)


def ghost_batch_model_fn(model_fn, groups: int):
    """A model_fn that runs `groups` slices of the batch separately (per-slice BN statistics)."""
    import torch

    from algoperf.data.tree import tree_map

    def grouped(params, batch, model_state, mode, rng, update_batch_norm, dropout_rate=None):
        size = len(batch["targets"]) // groups
        outputs = []
        for index in range(groups):
            rows = slice(index * size, (index + 1) * size)
            part = tree_map(lambda leaf, rows=rows: leaf[rows], batch)
            # Only the first slice moves the running averages, as only rank 0's survive in DDP.
            logits, model_state = model_fn(
                params, part, model_state, mode, rng, update_batch_norm and index == 0,
                dropout_rate,
            )  # fmt: skip
            outputs.append(logits)
        return torch.cat(outputs), model_state

    return grouped


def main(argv=None) -> int:
    args = parse_args(argv)

    import torch

    from algoperf import rng as np_rng
    from algoperf import workloads
    from algoperf.data.sharding import Shard
    from algoperf.data.tree import tree_map
    from algoperf.process import configure_process
    from algoperf.search_space import hparams_from_json
    from algoperf.submission import load_submission
    from algoperf.torch.distributed import init_process_group, shutdown_and_exit
    from algoperf.torch.workload import to_torch, unwrap

    configure_process("pytorch", "v1.0", deterministic=True)
    info = init_process_group()
    workload = workloads.load(args.workload, "pytorch", **args.workload_kwargs)
    submission = load_submission(ROOT / "submissions" / "nadamw" / "submission_torch.py")
    hyperparameters = hparams_from_json(HPARAMS)

    dtype = getattr(torch, args.dtype)
    torch.set_default_dtype(dtype)  # the model is built in this dtype
    model, model_state = workload.init_model_fn(np_rng.prng_key(0))
    initial = {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()}
    params = torch.compile(model) if args.compile else model
    if args.bn_groups > 1:
        workload.model_fn = ghost_batch_model_fn(workload.model_fn, args.bn_groups)
    optimizer_state = submission.init_optimizer_state(
        workload, params, model_state, hyperparameters, np_rng.prng_key(1)
    )
    for step in range(args.steps):
        global_batch = workload.fake_batch(args.global_batch_size, seed=100 + step)
        # This rank's rows: examples, or packs of examples (ogbg), whatever the batch's rows are.
        rows = Shard(info.rank, info.world_size).rows(len(global_batch["targets"]))
        # Every leaf keeps this rank's rows (packs, for ogbg); float leaves take the dtype.
        local = tree_map(
            lambda leaf, rows=rows: (
                leaf[rows].astype(args.dtype) if leaf.dtype.kind == "f" else leaf[rows]
            ),
            global_batch,
        )
        batch = to_torch(local, info.device)
        optimizer_state, params, model_state = submission.update_params(
            workload, params, workload.model_params_types, model_state, hyperparameters, batch,
            workload.loss_type, optimizer_state, [], step, np_rng.prng_key(2 + step),
        )  # fmt: skip
    plain = unwrap(params)
    if info.rank == 0:
        result = {
            "state_dict": {k: v.detach().cpu().clone() for k, v in plain.state_dict().items()},
            "grads": {
                name: p.grad.detach().cpu().clone()
                for name, p in plain.named_parameters()
                if p.grad is not None
            },
            "initial_state_dict": initial,
            "world_size": info.world_size,
        }
        torch.save(result, args.out)
    sys.stdout.flush()
    shutdown_and_exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
