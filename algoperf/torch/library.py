"""A workload in your own PyTorch training loop, without the runner (docs/library.md).

`load("cifar", data_dir="~/data", device="cuda")` gives the workload's model as a plain
`nn.Module`, its splits as iterators of tensors on your device, a loss that returns a tensor and
an `evaluate` call with the benchmark's metrics. Nothing here starts a process group, wraps DDP,
compiles, or touches the global RNG unless you ask: `build_model(seed=...)` seeds a forked RNG,
`batches(..., shard=True)` reads this rank's rows once you have initialised torch.distributed,
and `evaluate` sums across ranks only then. Timing rules, logging and checkpoints are the
runner's business (`algoperf run`), not this module's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from algoperf import metrics, versions
from algoperf.data.sharding import Shard
from algoperf.torch.distributed import DistInfo
from algoperf.torch.workload import TorchCollectives, TorchWorkload, to_torch


class LocalWorkload:
    """A PyTorch workload for a plain training loop (made by `load`)."""

    def __init__(self, workload: TorchWorkload, data_dir: str, device: torch.device) -> None:
        self.workload = workload
        """The underlying `spec.Workload` (what the runner and submissions see)."""
        self.spec = workload.spec
        """The workload's facts: targets, budgets, sizes (`algoperf.workload_spec.WorkloadSpec`)."""
        self.data_dir = data_dir
        self.device = device

    # --- model ---------------------------------------------------------------------------------
    def build_model(self, seed: int | None = None) -> nn.Module:
        """A freshly initialised model on the device, in train mode. With `seed`, the init draws
        from a forked RNG seeded with it (the global RNG is left as it was); without, from the
        global RNG as any `nn.Module` would."""
        forked = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
        with forked:
            if seed is not None:
                torch.manual_seed(seed)
            model = self.workload.build_model(**self.spec.model_kwargs)
        return model.to(self.device).train()

    def forward(self, model: nn.Module, batch: Any, *, dropout_rate: float | None = None):
        """The model's outputs (logits) on a batch, in the model's current train/eval mode; the
        workload's default dropout where the model has dropout and `dropout_rate` is None."""
        inputs = self.workload.model_inputs(batch)
        if self.spec.default_dropout_rate is None:
            return model(*inputs)
        rate = self.spec.default_dropout_rate if dropout_rate is None else dropout_rate
        return model(*inputs, dropout_rate=rate)

    def loss(self, model: nn.Module, batch: Any, *, label_smoothing: float = 0.0, **forward):
        """The mean loss over the batch's valid examples, a scalar tensor to call backward on."""
        logits = self.forward(model, batch, **forward)
        out = self.workload.loss_fn(
            batch["targets"], logits, batch.get("weights"), label_smoothing=label_smoothing
        )
        return out["summed"] / out["n_valid_examples"]

    # --- data ----------------------------------------------------------------------------------
    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        seed: int = 0,
        start_step: int = 0,
        shard: bool = False,
    ) -> Iterator[Any]:
        """Batches of a split as tensors on the device: `train` is endless (shuffled per `seed`,
        from batch `start_step`); eval_train, validation and test are one pass whose last batch
        is padded (`weights` 0 on padding). `batch_size` is global; with `shard=True` and
        torch.distributed initialised, this rank gets its rows of each batch."""
        rows = self._shard() if shard else Shard()
        batches = self.workload.numpy_batches(
            split, self.data_dir, batch_size, seed, rows, start_step=start_step
        )
        return (to_torch(batch, self.device) for batch in batches)

    def fake_batch(self, batch_size: int, *, seed: int = 0) -> Any:
        """A batch with the real structure and random values, on the device (no data needed)."""
        return to_torch(self.workload.fake_batch(batch_size, seed=seed), self.device)

    # --- eval ----------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, split: str = "validation", *, batch_size: int | None = None,
        seed: int = 0,
    ) -> dict[str, float]:  # fmt: skip
        """The workload's metrics on one pass over `split` (e.g. {"accuracy", "loss",
        "num_examples"}); the model is put in eval mode and back. `seed` picks the eval_train
        subset. With torch.distributed initialised, each rank evaluates its rows and the sums
        are reduced across ranks."""
        distributed = dist.is_available() and dist.is_initialized()
        rows = self._shard() if distributed else Shard()
        batch_size = batch_size or self.workload.eval_batch_size
        batches = self.workload.numpy_batches(split, self.data_dir, batch_size, seed, rows)
        was_training = model.training
        model.eval()
        try:
            return metrics.evaluate(
                (to_torch(batch, self.device) for batch in batches),
                lambda batch: self.workload.eval_outputs(self.forward(model, batch), batch),
                self.workload.eval_metrics,
                TorchCollectives(distributed, self.device),
            )
        finally:
            model.train(was_training)

    def _shard(self) -> Shard:
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(
                "shard=True needs torch.distributed initialised (dist.init_process_group) first."
            )
        return Shard(dist.get_rank(), dist.get_world_size())


def load(
    name: str,
    *,
    data_dir: str = "~/data",
    device: str | torch.device | None = None,
    benchmark_version: str = versions.DEFAULT_VERSION,
    allow_download: bool = False,
    **options: Any,
) -> LocalWorkload:
    """A workload or variant by name (`algoperf list`) for a plain PyTorch loop.

    Args:
      data_dir: where its prepared data lives (see the workload's prepare command).
      device: default "cuda" when available, else "cpu".
      allow_download: let the pipeline download public data it lacks (mnist, cifar).
      **options: the workload's declared options (as `--workload_options`: e.g.
        `image_size`, `num_workers`, `model_kwargs`).

    Raises:
      ValueError: an unknown name or option.
    """
    import os

    from algoperf import workloads

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    distributed = dist.is_available() and dist.is_initialized()
    placement = DistInfo(
        use_ddp=False,
        rank=dist.get_rank() if distributed else 0,
        local_rank=device.index or 0,
        world_size=dist.get_world_size() if distributed else 1,
        device=device,
    )
    workload = workloads.load(
        name,
        "pytorch",
        benchmark_version=benchmark_version,
        allow_download=allow_download,
        placement=placement,
        **options,
    )
    return LocalWorkload(workload, os.path.expanduser(data_dir), device)
