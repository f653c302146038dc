"""torchrun environment -> rank, world size, device; process-group setup and teardown."""

from __future__ import annotations

import dataclasses
import os
import sys

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """Where this process sits: from torchrun's environment, without creating anything."""

    use_ddp: bool
    rank: int
    local_rank: int
    world_size: int
    device: torch.device


def dist_info() -> DistInfo:
    """Read torchrun's variables (cheap, side-effect free; works before the group exists)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_ddp = "LOCAL_RANK" in os.environ and world_size > 1
    if torch.cuda.is_available():
        visible = torch.cuda.device_count()
        if local_rank >= visible:
            # Otherwise the first CUDA call fails deep inside torch ("invalid device ordinal"), or
            # NCCL refuses two ranks on one GPU; one process per GPU is what DDP here expects.
            raise ValueError(
                f"LOCAL_RANK={local_rank} has no GPU of its own: this node shows {visible} CUDA "
                f"device(s); start at most {visible} process(es) per node (torchrun "
                f"--nproc_per_node={visible}), or hide the GPUs (CUDA_VISIBLE_DEVICES='') for CPU."
            )
        device = torch.device(f"cuda:{local_rank}")
    else:
        device = torch.device("cpu")
    return DistInfo(use_ddp, rank, local_rank, world_size, device)


def init_process_group() -> DistInfo:
    """Create the default process group when launched by torchrun (NCCL on GPUs, gloo on CPU)."""
    info = dist_info()
    if info.use_ddp and not dist.is_initialized():
        if info.device.type == "cuda":
            torch.cuda.set_device(info.device)
        backend = "nccl" if info.device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend, device_id=info.device if backend == "nccl" else None
        )
    return info


def shutdown_and_exit(code: int = 0) -> None:
    """End a torchrun worker without gloo's shutdown race (torch 2.14.1 aborts now and then at
    interpreter exit; tests/test_ddp.py).

    Destroying the group and leaving with os._exit skips the racy thread teardown.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
