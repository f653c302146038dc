"""NAdamW with warmup + cosine decay, self-tuning ruleset (JAX).

The external NAdamW submission with the fixed point of `hyperparameters.py`: the runner passes
`hyperparameters=None` here, and nothing depends on the workload.
"""

from __future__ import annotations

from typing import Any

from algoperf import spec
from algoperf.submissions.common.defaults import data_selection, prepare_for_eval
from algoperf.submissions.nadamw import submission_jax as nadamw
from algoperf.submissions.nadamw_self_tuning.hyperparameters import HYPERPARAMETERS

__all__ = [
    "get_batch_size",
    "init_optimizer_state",
    "update_params",
    "prepare_for_eval",
    "data_selection",
]


def get_batch_size(workload_name: str) -> int:
    return nadamw.get_batch_size(workload_name)


def init_optimizer_state(
    workload: spec.Workload,
    model_params: spec.ParameterContainer,
    model_state: spec.ModelAuxiliaryState,
    hyperparameters: spec.Hyperparameters,
    rng: spec.RandomState,
) -> spec.OptimizerState:
    del hyperparameters  # None in the self-tuning ruleset
    return nadamw.init_optimizer_state(workload, model_params, model_state, HYPERPARAMETERS, rng)


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
    del hyperparameters  # None in the self-tuning ruleset
    return nadamw.update_params(
        workload,
        current_param_container,
        current_params_types,
        model_state,
        HYPERPARAMETERS,
        batch,
        loss_type,
        optimizer_state,
        eval_results,
        global_step,
        rng,
        train_state,
    )
