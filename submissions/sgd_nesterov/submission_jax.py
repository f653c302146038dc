"""SGD with Nesterov momentum, linear warmup then cosine decay to 0 (external tuning), JAX.

Hyperparameters: learning_rate, one_minus_beta1 (momentum = 1 - it),
weight_decay (COUPLED: an L2 term wd * param added to the gradient before the momentum, as
torch.optim.SGD's weight_decay), warmup_factor (warmup's fraction of the schedule),
label_smoothing, and optionally dropout_rate, grad_clip, step_hint_factor (the schedule
spans step_hint * step_hint_factor steps; default 0.75).
"""

from __future__ import annotations

from typing import Any

import optax

from algoperf import spec
from algoperf.submissions.common import batch_sizes, jax_step
from algoperf.submissions.common.defaults import data_selection, prepare_for_eval
from algoperf.submissions.common.schedules import schedule_for

__all__ = [
    "get_batch_size",
    "init_optimizer_state",
    "update_params",
    "prepare_for_eval",
    "data_selection",
]


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
    # Coupled L2: the decay term joins the gradient before the momentum (torch.optim.SGD).
    optimizer = optax.chain(
        optax.add_decayed_weights(hyperparameters.weight_decay),
        optax.sgd(
            learning_rate=schedule.jax,
            momentum=1.0 - hyperparameters.one_minus_beta1,
            nesterov=True,
        ),
    )
    return jax_step.init_opt_state(optimizer, model_params)


def update_params(
    workload: spec.Workload,
    current_param_container: spec.ParameterContainer,
    current_params_types: spec.ParameterTypeTree,
    model_state: spec.ModelAuxiliaryState,
    hyperparameters: spec.Hyperparameters,
    batch: dict[str, spec.Tensor],
    loss_type: spec.LossType,
    optimizer_state: spec.OptimizerState,
    eval_results: spec.EvalResults,
    global_step: int,
    rng: spec.RandomState,
    train_state: dict[str, Any] | None = None,
) -> spec.UpdateReturn:
    del current_params_types, loss_type, eval_results, train_state
    return jax_step.update_params(
        workload,
        current_param_container,
        model_state,
        hyperparameters,
        batch,
        optimizer_state,
        global_step,
        rng,
    )
