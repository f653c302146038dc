"""`algoperf run` through the DDP code path with one rank: a check for one-GPU machines.

algoperf runs DDP only for world size > 1, and NCCL refuses two ranks on one GPU, so on a
one-GPU machine the NCCL path (process group init, the DDP wrapper, the step's (sum, count)
all_reduce, the eval sums' all_reduce, the clock's agree_max, the teardown) could not run at all.
This forces use_ddp=True for world size 1; everything else is the normal CLI. With one rank every
collective is the identity, so a deterministic run must give the plain run's eval rows exactly
(scripts/gpu_check.sh, step B). Not for benchmarking.

Usage: torchrun --standalone --nproc_per_node=1 scripts/ddp_one_rank.py run [algoperf run flags]
"""

import dataclasses
import sys

import torch.distributed as dist

import algoperf.torch.distributed as d
import algoperf.torch.workload as w

original = d.dist_info


def forced():
    return dataclasses.replace(original(), use_ddp=True)


d.dist_info = forced
w.dist_info = forced
init = dist.init_process_group


def logged_init(*args, **kwargs):
    init(*args, **kwargs)
    print(
        f"[ddp_one_rank] process group backend={dist.get_backend()} world={dist.get_world_size()}",
        file=sys.stderr,
        flush=True,
    )


dist.init_process_group = logged_init
from algoperf.cli.main import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
