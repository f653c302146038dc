"""The PyTorch half of every Workload: init, forward with BN/dropout control, loss, input and eval.

A workload's `model_torch.py` subclasses `TorchWorkload` and supplies the model (`build_model`),
its data (`numpy_batches`) and, where it differs from classification, its loss and eval sums.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from algoperf import rng as np_rng
from algoperf import spec
from algoperf.data.prefetch import Prefetcher
from algoperf.data.sharding import Shard
from algoperf.param_types import infer_parameter_type
from algoperf.torch import chunks
from algoperf.torch.distributed import dist_info
from algoperf.workload_base import SpecWorkload

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside torch.compile and DDP wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, DDP):
            model = model.module
        else:
            return model


def to_host_tensors(batch: dict[str, np.ndarray], *, pin: bool) -> dict[str, torch.Tensor]:
    """Numpy batch -> CPU tensors sharing its memory (copied to pinned memory when `pin`)."""
    out = {}
    for key, value in batch.items():
        tensor = torch.from_numpy(np.ascontiguousarray(value))
        out[key] = tensor.pin_memory() if pin else tensor
    return out


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Host tensors -> `device` (asynchronous copies from pinned memory on CUDA)."""
    if device.type != "cuda":
        return batch
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def to_torch(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """Numpy batch -> tensors on `device` (pinned, asynchronous copies on CUDA)."""
    return to_device(to_host_tensors(batch, pin=device.type == "cuda"), device)


class TorchWorkload(SpecWorkload):
    """Base for PyTorch workloads; classification loss and metrics by default."""

    framework = "pytorch"

    def __init__(self, workload_spec, **kwargs) -> None:
        super().__init__(workload_spec, **kwargs)
        self._dist = dist_info()
        self._bn_modules: list[nn.Module] | None = None
        self._bn_updating = True

    # --- what a workload supplies ----------------------------------------------------------
    def build_model(self, **model_kwargs) -> nn.Module:
        """The freshly initialised model (on the CPU)."""
        raise NotImplementedError

    @property
    def shard(self) -> Shard:
        return Shard(self._dist.rank, self._dist.world_size)

    # --- model -----------------------------------------------------------------------------
    def init_model_fn(self, rng: spec.RandomState) -> spec.ModelInitState:
        torch.manual_seed(np_rng.seed_from_key(rng))
        model = self.build_model(**self.spec.model_kwargs)
        self._param_shapes = {
            name: spec.ShapeTuple(p.shape) for name, p in model.named_parameters()
        }
        self._param_types = {
            name: infer_parameter_type(name, p.ndim) for name, p in model.named_parameters()
        }
        self._bn_modules = [m for m in model.modules() if isinstance(m, _BN_TYPES)]
        self._bn_updating = True
        model.to(self._dist.device)
        if self._dist.use_ddp:
            device_ids = [self._dist.local_rank] if self._dist.device.type == "cuda" else None
            model = DDP(model, device_ids=device_ids)
        return model, None

    def _set_bn_momentum(self, update_batch_norm: bool) -> None:
        # Upstream semantics: with update_batch_norm=False in TRAIN mode, BN still normalises with
        # batch statistics but its running averages stay put (momentum 0).
        for module in self._bn_modules or ():
            if not update_batch_norm:
                if not hasattr(module, "_saved_momentum"):
                    module._saved_momentum = module.momentum
                module.momentum = 0.0
            elif hasattr(module, "_saved_momentum"):
                module.momentum = module._saved_momentum
                del module._saved_momentum

    def model_fn(
        self,
        params: spec.ParameterContainer,
        augmented_and_preprocessed_input_batch: dict[str, spec.Tensor],
        model_state: spec.ModelAuxiliaryState,
        mode: spec.ForwardPassMode,
        rng: spec.RandomState,
        update_batch_norm: bool,
        dropout_rate: float | None = None,
    ) -> tuple[spec.Tensor, spec.ModelAuxiliaryState]:
        del rng  # dropout uses torch's global RNG, seeded identically on every rank
        model = params
        training = mode == spec.ForwardPassMode.TRAIN
        if model.training != training:
            model.train(training)
        if training and self._bn_modules and update_batch_norm != self._bn_updating:
            self._set_bn_momentum(update_batch_norm)  # only when the setting changes
            self._bn_updating = update_batch_norm
        inputs = augmented_and_preprocessed_input_batch["inputs"]
        if self.spec.default_dropout_rate is not None:
            rate = self.spec.default_dropout_rate if dropout_rate is None else dropout_rate
            if training:
                return model(inputs, dropout_rate=rate), model_state
            with torch.no_grad():
                return model(inputs, dropout_rate=rate), model_state
        if training:  # a model without dropout (mnist, cifar, resnet): no keyword to pass
            return model(inputs), model_state
        with torch.no_grad():
            return model(inputs), model_state

    # --- loss ------------------------------------------------------------------------------
    def loss_fn(
        self,
        label_batch: spec.Tensor,
        logits_batch: spec.Tensor,
        mask_batch: spec.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, spec.Tensor]:
        """Softmax cross-entropy; integer labels or soft (one-hot / mixup) label rows."""
        if label_batch.dtype.is_floating_point and label_batch.ndim == logits_batch.ndim:
            num_classes = logits_batch.shape[-1]
            smoothed = label_batch * (1.0 - label_smoothing) + label_smoothing / num_classes
            per_example = -(smoothed * F.log_softmax(logits_batch, dim=-1)).sum(dim=-1)
        else:
            per_example = F.cross_entropy(
                logits_batch, label_batch.long(), reduction="none", label_smoothing=label_smoothing
            )
        if mask_batch is not None:
            per_example = per_example * mask_batch
            n_valid = mask_batch.sum()
        else:
            n_valid = per_example.new_full((), float(per_example.shape[0]))  # no host copy
        return {
            "summed": per_example.sum(),
            "n_valid_examples": n_valid,
            "per_example": per_example,
        }

    def eval_metric_sums(
        self, logits: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Sums over the valid rows of one eval batch; `num_examples` is the divisor."""
        weights = batch["weights"]
        targets = batch["targets"]
        labels = targets.argmax(-1) if targets.ndim == logits.ndim else targets
        correct = (logits.argmax(-1) == labels).to(weights.dtype)
        losses = self.loss_fn(targets, logits, weights)["per_example"]
        return {
            "accuracy": (correct * weights).sum(),
            "loss": losses.sum(),
            "num_examples": weights.sum(),
        }

    # --- data ------------------------------------------------------------------------------
    def _build_input_queue(
        self,
        data_rng: spec.RandomState,
        split: str,
        data_dir: str,
        global_batch_size: int,
        cache: bool | None = None,
        repeat_final_dataset: bool | None = None,
        num_batches: int | None = None,
        start_batch: int = 0,
    ) -> Iterator[dict[str, torch.Tensor]]:
        seed = np_rng.seed_from_key(data_rng)
        if split == "train":
            self._eval_train_seed = seed
        # start_batch (ours, not upstream's): continue the train stream of a resumed trial.
        # Called here, not inside a generator, so the dataset is read now (the runner builds the
        # queue before the clock starts), not in the first timed step.
        device = self._dist.device
        pin = device.type == "cuda"
        planned = None
        if split == "train":
            planned = self.train_chunk_plans(
                data_dir, global_batch_size, seed, self.shard, start_batch
            )
        if planned is not None:  # in-memory arrays: gathered and decoded a chunk at a time
            batches = chunks.tensor_train_batches(*planned, pin=pin)
            convert = None
        else:
            batches = self.numpy_batches(
                split, data_dir, global_batch_size, seed, self.shard, start_step=start_batch
            )
            convert = functools.partial(to_host_tensors, pin=pin)
        if num_batches is not None:
            batches = itertools.islice(batches, num_batches)
        if device.type != "cuda":
            # On CPUs the batch is made inside the step. A producer thread measured worse
            # (scripts/bench_dataloader.py, mnist x1): with torch ops it starts a second OpenMP
            # team that slowed every step ~2.7x; with numpy ops, live/cached 1.18 against 1.11.
            return batches if convert is None else map(convert, batches)
        # On GPUs the host is free while the device computes (the runner syncs after each step):
        # the next batches (numpy work, pinning) are made in a thread meanwhile, and the
        # consumer queues the asynchronous copy on its own stream.
        host_batches = Prefetcher(batches, convert)
        return (to_device(batch, device) for batch in host_batches)

    def _eval_model_on_split(
        self,
        split: str,
        num_examples: int,
        global_batch_size: int,
        params: spec.ParameterContainer,
        model_state: spec.ModelAuxiliaryState,
        rng: spec.RandomState,
        data_dir: str,
        global_step: int = 0,
    ) -> dict[str, float]:
        del num_examples, global_step  # every example of the split is visited exactly once
        seed = self._eval_train_seed if split == "eval_train" else 0
        sums: dict[str, torch.Tensor] = {}
        for numpy_batch in self.numpy_batches(split, data_dir, global_batch_size, seed, self.shard):
            batch = to_torch(numpy_batch, self._dist.device)
            logits, _ = self.model_fn(
                params, batch, model_state, spec.ForwardPassMode.EVAL, rng, False
            )
            with torch.no_grad():
                for key, value in self.eval_metric_sums(logits, batch).items():
                    sums[key] = sums.get(key, 0.0) + value.double()
        return self._reduce_sums(sums)

    def _reduce_sums(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        keys = sorted(sums)
        stacked = torch.stack([torch.as_tensor(sums[k]) for k in keys]).to(torch.float64)
        if self._dist.use_ddp and dist.is_initialized():
            dist.all_reduce(stacked)
        values = dict(zip(keys, stacked.cpu().tolist()))
        count = values.pop("num_examples")
        results = {key: value / max(count, 1.0) for key, value in values.items()}
        results["num_examples"] = int(round(count))
        return results
