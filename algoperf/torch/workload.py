"""The PyTorch half of every Workload: init, forward with BN/dropout control, input and eval.

A workload's `model_torch.py` subclasses `TorchWorkload` (a classifier: `TorchClassifier` of
`algoperf.torch.classification`) and supplies the model (`build_model`), its loss and its
per-batch eval outputs; data comes from its input pipeline (the data protocol, docs/data.md).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from algoperf import rng as np_rng
from algoperf import spec
from algoperf.data.prefetch import Prefetcher
from algoperf.data.sharding import Shard
from algoperf.data.tree import tree_map
from algoperf.param_types import infer_parameter_type
from algoperf.torch import chunks
from algoperf.torch.distributed import DistInfo, dist_info
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


def _host_tensor(value, pin: bool):
    if not isinstance(value, np.ndarray | np.generic):
        return value  # strings and other non-array leaves pass through
    tensor = torch.from_numpy(np.ascontiguousarray(value))
    return tensor.pin_memory() if pin else tensor


def to_host_tensors(batch: Any, *, pin: bool) -> Any:
    """Numpy batch (any nesting) -> CPU tensors sharing its memory (pinned copies when `pin`)."""
    return tree_map(functools.partial(_host_tensor, pin=pin), batch)


def to_device(batch: Any, device: torch.device) -> Any:
    """Host tensors -> `device` (asynchronous copies from pinned memory on CUDA)."""
    if device.type != "cuda":
        return batch
    return tree_map(
        lambda value: (
            value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
        ),
        batch,
    )


def to_torch(batch: Any, device: torch.device) -> Any:
    """Numpy batch -> tensors on `device` (pinned, asynchronous copies on CUDA)."""
    return to_device(to_host_tensors(batch, pin=device.type == "cuda"), device)


class TorchCollectives:
    """`algoperf.metrics.EvalCollectives` over torch.distributed (one process: no-ops)."""

    def __init__(self, use_ddp: bool, device: torch.device) -> None:
        self.distributed = use_ddp and dist.is_initialized()
        self.device = device

    def add(self, totals, outputs):
        if totals is None:
            return {key: torch.as_tensor(value).double() for key, value in outputs.items()}
        return {key: totals[key] + torch.as_tensor(outputs[key]).double() for key in totals}

    def to_numpy(self, outputs):
        return {
            key: value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
            for key, value in outputs.items()
        }

    def sum_over_ranks(self, values: np.ndarray) -> np.ndarray:
        if not self.distributed:
            return values
        tensor = torch.as_tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.cpu().numpy()

    def gather_over_ranks(self, rows: dict) -> dict:
        if not self.distributed:
            return rows
        everyone: list = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, rows)  # any sizes and dtypes (strings too), rank order
        return {key: np.concatenate([part[key] for part in everyone]) for key in rows}


class TorchWorkload(SpecWorkload):
    """Base for PyTorch workloads: a subclass adds `build_model`, `loss_fn` and `eval_outputs`
    (classifiers take the last two from `algoperf.torch.classification.TorchClassifier`)."""

    framework = "pytorch"

    def __init__(self, workload_spec, *, placement: DistInfo | None = None, **kwargs) -> None:
        """`placement` (library use, algoperf/torch/library.py): the device and rank to use
        instead of the ones torchrun's environment gives; `use_ddp=False` never wraps DDP."""
        super().__init__(workload_spec, **kwargs)
        self._dist = placement or dist_info()
        self._bn_modules: list[nn.Module] | None = None
        self._bn_updating = True

    # --- what a workload supplies ----------------------------------------------------------
    def build_model(self, **model_kwargs) -> nn.Module:
        """The freshly initialised model (on the CPU)."""
        raise NotImplementedError

    def model_inputs(self, batch) -> tuple:
        """The positional arguments of the model's forward, taken from a batch (default: its
        `inputs`; a workload whose model takes several, e.g. audio and paddings, overrides it)."""
        return (batch["inputs"],)

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
        inputs = self.model_inputs(augmented_and_preprocessed_input_batch)
        if self.spec.default_dropout_rate is not None:
            rate = self.spec.default_dropout_rate if dropout_rate is None else dropout_rate
            if training:
                return model(*inputs, dropout_rate=rate), model_state
            with torch.no_grad():
                return model(*inputs, dropout_rate=rate), model_state
        if training:  # a model without dropout (mnist, cifar, resnet): no keyword to pass
            return model(*inputs), model_state
        with torch.no_grad():
            return model(*inputs), model_state

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
    ) -> Iterator[Any]:
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
            planned = self.train_chunks(data_dir, global_batch_size, seed, start_batch)
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

    # --- eval (the loop itself is algoperf.metrics.evaluate) ----------------------------------
    def _eval_batches(self, split, data_dir, global_batch_size):
        seed = self._eval_train_seed if split == "eval_train" else 0
        for batch in self.numpy_batches(split, data_dir, global_batch_size, seed, self.shard):
            yield to_torch(batch, self._dist.device)

    def _eval_compute(self, params, model_state, rng):
        def compute(batch):
            logits, _ = self.model_fn(
                params, batch, model_state, spec.ForwardPassMode.EVAL, rng, False
            )
            with torch.no_grad():
                return self.eval_outputs(logits, batch)

        return compute

    def _collectives(self) -> TorchCollectives:
        return TorchCollectives(self._dist.use_ddp, self._dist.device)
