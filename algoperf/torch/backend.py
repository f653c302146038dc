"""The runner's PyTorch backend: numpy-pair keys, CUDA sync, compile policy, rank agreement."""

from __future__ import annotations

import gc
import logging

import numpy as np
import torch
import torch.distributed as dist

from algoperf import rng as np_rng
from algoperf.torch.distributed import init_process_group


class TorchBackend:
    name = "pytorch"

    def __init__(self) -> None:
        info = init_process_group()
        self.info = info
        self.rank = info.rank
        self.world_size = info.world_size
        self.device_count = info.world_size
        self.device = info.device
        self._cuda = info.device.type == "cuda"

    # Keys are int pairs, as in upstream's PyTorch path (submissions may read rng[0]).
    def prng_key(self, seed: int) -> np.ndarray:
        return np_rng.prng_key(seed)

    def split(self, key, num: int) -> list:
        return list(np_rng.split(key, num))

    def step_rngs(self, key, step: int):
        return tuple(np_rng.split(np_rng.fold_in(key, step), 4))

    def sync(self, *trees) -> None:
        del trees
        if self._cuda:
            torch.cuda.synchronize(self.device)

    def agree_max(self, value: float) -> float:
        if not (self.info.use_ddp and dist.is_initialized()):
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return float(tensor.item())

    def prepare_model(self, workload, params, *, compile_model: bool):
        """torch.compile per the workload's policy; compilation itself runs on the clock."""
        if not compile_model:
            return params
        if not workload.spec.compile_model:
            logging.info("%s: torch.compile skipped (workload policy).", workload.spec.name)
            return params
        return torch.compile(params)

    def reset_memory(self) -> None:
        gc.collect()
        if self._cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def barrier(self) -> None:
        if self.info.use_ddp and dist.is_initialized():
            dist.barrier()


def make_backend() -> TorchBackend:
    return TorchBackend()
