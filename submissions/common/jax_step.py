"""The JAX training step shared by the reference submissions (timed: docs/rules.md, "Timing").

One module-level jitted function; `workload`, the optax update function and the loss/dropout
settings are static, so it compiles once per trial and is reused from the cache every step.
Params, model state and optimizer state are donated: the runner keeps only the returned ones.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from algoperf import jax_sharding_utils, spec

# Scalars are logged every this many steps; only then are device values read on the host.
LOG_EVERY_STEPS = 100


def _train_step(
    workload,
    opt_update_fn,
    label_smoothing,
    dropout_rate,
    grad_clip,
    opt_state,
    params,
    model_state,
    batch,
    rng,
):
    def mean_loss(trained_params):
        logits, new_model_state = workload.model_fn(
            trained_params,
            batch,
            model_state,
            spec.ForwardPassMode.TRAIN,
            rng,
            update_batch_norm=True,
            dropout_rate=dropout_rate,
        )
        losses = workload.loss_fn(
            batch["targets"], logits, batch.get("weights"), label_smoothing=label_smoothing
        )
        # The batch is one global array, so these sums already cover every device.
        return losses["summed"] / losses["n_valid_examples"], new_model_state

    (loss, new_model_state), grads = jax.value_and_grad(mean_loss, has_aux=True)(params)
    grad_norm = optax.tree.norm(grads)
    if grad_clip is not None:
        scale = jnp.minimum(1.0, grad_clip / (grad_norm + 1e-6))
        grads = jax.tree.map(lambda g: g * scale, grads)
    updates, new_opt_state = opt_update_fn(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    return new_opt_state, new_params, new_model_state, loss, grad_norm


@functools.cache
def _jitted_train_step():
    # Built on first use, not at import: the shardings need the device mesh.
    return jax.jit(
        _train_step,
        static_argnames=(
            "workload",
            "opt_update_fn",
            "label_smoothing",
            "dropout_rate",
            "grad_clip",
        ),
        donate_argnames=("opt_state", "params", "model_state"),
        out_shardings=jax_sharding_utils.get_replicate_sharding(),
    )


def update_params(
    workload: spec.Workload,
    params: spec.ParameterContainer,
    model_state: spec.ModelAuxiliaryState,
    hyperparameters: Any,
    batch: dict[str, jax.Array],
    optimizer_state: tuple[Any, Any],
    global_step: int,
    rng: spec.RandomState,
) -> spec.UpdateReturn:
    """One training step; hyperparameters read: label_smoothing, dropout_rate, grad_clip.

    `optimizer_state` is upstream's `(opt_state, opt_update_fn)` tuple.
    """
    opt_state, opt_update_fn = optimizer_state
    grad_clip = getattr(hyperparameters, "grad_clip", None)
    new_opt_state, new_params, new_model_state, loss, grad_norm = _jitted_train_step()(
        workload=workload,
        opt_update_fn=opt_update_fn,
        label_smoothing=float(getattr(hyperparameters, "label_smoothing", 0.0)),
        dropout_rate=getattr(hyperparameters, "dropout_rate", None),
        grad_clip=None if grad_clip is None else float(grad_clip),
        opt_state=opt_state,
        params=params,
        model_state=model_state,
        batch=batch,
        rng=rng,
    )
    if global_step % LOG_EVERY_STEPS == 0 and workload.metrics_logger is not None:
        # The only host reads of the step, on logging steps only.
        workload.metrics_logger.append_scalar_metrics(
            {"loss": float(loss), "grad_norm": float(grad_norm)}, global_step
        )
    return (new_opt_state, opt_update_fn), new_params, new_model_state


def init_opt_state(optimizer: optax.GradientTransformation, params) -> tuple[Any, Any]:
    """Upstream's JAX optimizer state `(opt_state, opt_update_fn)`, the state replicated."""
    opt_state = jax_sharding_utils.replicate(optimizer.init(params))
    return opt_state, optimizer.update
