"""The PyTorch training step shared by the reference submissions (timed: docs/rules.md, "Timing").

A submission builds a `torch.optim.Optimizer` and a `WarmupCosine` schedule; `optimizer_state`
pairs them, and `update_params` (upstream's signature, so a submission exports it as is) runs one
forward/backward/update without host syncs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch.optim.lr_scheduler import LambdaLR

from algoperf import spec
from algoperf.pytorch_utils import pytorch_setup
from algoperf.submissions.common.schedules import WarmupCosine

USE_PYTORCH_DDP, _, _, WORLD_SIZE = pytorch_setup()

# Scalars are logged every this many steps; only then are device values read on the host.
LOG_EVERY_STEPS = 100


def optimizer_state(optimizer: torch.optim.Optimizer, schedule: WarmupCosine) -> dict[str, Any]:
    """The submission's optimizer state: both entries have `state_dict`/`load_state_dict`.

    `LambdaLR` multiplies the optimizer's lr (the schedule's peak) by the schedule's shape.
    """
    return {"optimizer": optimizer, "scheduler": LambdaLR(optimizer, schedule.multiplier())}


def update_params(
    workload: spec.Workload,
    current_param_container: torch.nn.Module,
    current_params_types: spec.ParameterTypeTree,
    model_state: spec.ModelAuxiliaryState,
    hyperparameters: Any,
    batch: dict[str, torch.Tensor],
    loss_type: spec.LossType,
    optimizer_state: dict[str, Any],
    eval_results: spec.EvalResults,
    global_step: int,
    rng: spec.RandomState,
    train_state: Any = None,
) -> spec.UpdateReturn:
    """One training step; hyperparameters read: label_smoothing, dropout_rate, grad_clip.

    `dropout_rate` None means the workload's default; `grad_clip` absent means no clipping.
    The submissions export this function itself as their `update_params`: a wrapper would be
    one more Python call per step on the clock (scripts/bench_overhead.py).
    """
    del current_params_types, loss_type, eval_results, train_state
    model = current_param_container
    optimizer, scheduler = optimizer_state["optimizer"], optimizer_state["scheduler"]
    label_smoothing = getattr(hyperparameters, "label_smoothing", 0.0)
    dropout_rate = getattr(hyperparameters, "dropout_rate", None)
    grad_clip = getattr(hyperparameters, "grad_clip", None)

    optimizer.zero_grad(set_to_none=True)
    logits, new_model_state = workload.model_fn(
        model,
        batch,
        model_state,
        spec.ForwardPassMode.TRAIN,
        rng,
        update_batch_norm=True,
        dropout_rate=dropout_rate,
    )
    # The mean loss over the global batch; `loss_fn` sums over this rank's examples.
    losses = workload.loss_fn(
        batch["targets"], logits, batch.get("weights"), label_smoothing=label_smoothing
    )
    summed, n_valid = losses["summed"], losses["n_valid_examples"]
    if USE_PYTORCH_DDP:
        # One collective, no gradient through it: the global sum (for the logged loss) and the
        # global count. Each rank's loss is its own sum over the global count times the world
        # size, so DDP's gradient average (a mean over ranks) is d(global mean)/dparams. (An
        # autograd all_reduce of the sums gives the same gradients, but torch.distributed.nn's
        # is deprecated as of torch 2.14.) Every rank runs it every step: a collective on
        # logging steps only would have to be taken by all ranks, not rank 0's logger alone.
        n_valid = torch.as_tensor(n_valid, dtype=summed.dtype, device=summed.device)
        totals = torch.stack([summed.detach(), n_valid])
        dist.all_reduce(totals)
        global_sum, n_valid = totals.unbind()
        loss = summed * (WORLD_SIZE / n_valid)
        logged = global_sum / n_valid
    else:
        loss = summed / n_valid
        logged = loss
    loss.backward()
    grad_norm = None
    if grad_clip is not None:
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=grad_clip)
    optimizer.step()
    scheduler.step()

    if global_step % LOG_EVERY_STEPS == 0 and workload.metrics_logger is not None:
        if grad_norm is None:
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            grad_norm = torch.nn.utils.get_total_norm(grads)
        # The only host reads of the step, on logging steps only.
        workload.metrics_logger.append_scalar_metrics(
            {"loss": logged.item(), "grad_norm": grad_norm.item()}, global_step
        )
    return optimizer_state, model, new_model_state
