"""AdamW, linear warmup then cosine decay to 0 (external tuning), PyTorch.

Hyperparameters: learning_rate, one_minus_beta1, beta2, weight_decay (decoupled and scaled by
the scheduled lr, as in torch.optim.AdamW and optax.adamw), warmup_factor (warmup's fraction of
the schedule), label_smoothing, and optionally dropout_rate, grad_clip, step_hint_factor (the
schedule spans step_hint * step_hint_factor steps; default 0.75).

`update_params` is the shared reference step (submissions/common/torch_step.py).
"""

from __future__ import annotations

import torch

from algoperf import spec
from algoperf.pytorch_utils import pytorch_setup
from algoperf.submissions.common import batch_sizes, torch_step
from algoperf.submissions.common.defaults import data_selection, prepare_for_eval
from algoperf.submissions.common.schedules import schedule_for
from algoperf.submissions.common.torch_step import update_params

__all__ = [
    "get_batch_size",
    "init_optimizer_state",
    "update_params",
    "prepare_for_eval",
    "data_selection",
]

USE_PYTORCH_DDP, RANK, DEVICE, N_GPUS = pytorch_setup()


def get_batch_size(workload_name: str) -> int:
    return batch_sizes.get_batch_size(workload_name)


def init_optimizer_state(
    workload: spec.Workload,
    model_params: spec.ParameterContainer,
    model_state: spec.ModelAuxiliaryState,
    hyperparameters: spec.Hyperparameters,
    rng: spec.RandomState,
) -> spec.OptimizerState:
    del model_state, rng
    schedule = schedule_for(workload.step_hint, hyperparameters)
    optimizer = torch.optim.AdamW(
        model_params.parameters(),
        lr=schedule.peak_lr,
        betas=(1.0 - hyperparameters.one_minus_beta1, hyperparameters.beta2),
        eps=1e-8,
        weight_decay=hyperparameters.weight_decay,
    )
    return torch_step.optimizer_state(optimizer, schedule)
