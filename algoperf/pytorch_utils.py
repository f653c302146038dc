"""Compatibility names for submissions written for upstream: `pytorch_setup()`.

Submissions call it at import time (`USE_PYTORCH_DDP, RANK, DEVICE, N_GPUS = pytorch_setup()`),
so it only reads the environment; the process group is created by the runner.
"""

from __future__ import annotations


def pytorch_setup():
    """(use_ddp, rank, device, n_gpus) of this process, from torchrun's environment."""
    from algoperf.torch.distributed import dist_info

    info = dist_info()
    return info.use_ddp, info.rank, info.device, info.world_size


def pytorch_init(use_pytorch_ddp: bool, rank: int, profiler=None) -> None:
    """Upstream name kept for old scripts: the runner already configured the process."""
    del use_pytorch_ddp, rank, profiler
    from algoperf.torch.distributed import init_process_group

    init_process_group()


def sync_ddp_time(time: float, device) -> float:
    """Upstream name: the max of a time over ranks."""
    del device
    from algoperf.torch.backend import make_backend

    return make_backend().agree_max([time])[0]
