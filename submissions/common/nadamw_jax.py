"""NAdamW for JAX: the update of `nadamw_torch.py` as an optax `GradientTransformation`.

`nadamw(...)` = scale_by_nadam (Nesterov first moment, bias-corrected) -> add decoupled weight
decay -> scale by -learning_rate, so the decay is multiplied by the scheduled rate, as in torch.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class ScaleByNadamState(NamedTuple):
    count: jax.Array  # int32 scalar: updates taken so far
    mu: Any  # first moment, a pytree like the params
    nu: Any  # second moment


def scale_by_nadam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
    """The NAdam direction (b1 m_t + (1 - b1) g) / (1 - b1^t) / (sqrt(v_t / (1 - b2^t)) + eps)."""

    def init_fn(params):
        zeros = lambda tree: jax.tree.map(jnp.zeros_like, tree)
        return ScaleByNadamState(count=jnp.zeros([], jnp.int32), mu=zeros(params), nu=zeros(params))

    def update_fn(updates, state, params=None):
        del params
        mu = jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g, state.mu, updates)
        nu = jax.tree.map(lambda v, g: b2 * v + (1.0 - b2) * g * g, state.nu, updates)
        count = state.count + 1
        step = count.astype(jnp.float32)
        first_correction = 1.0 - b1**step
        second_correction = 1.0 - b2**step

        def direction(m, v, g):
            nesterov = b1 * m + (1.0 - b1) * g
            return (nesterov / first_correction) / (jnp.sqrt(v / second_correction) + eps)

        new_updates = jax.tree.map(direction, mu, nu, updates)
        return new_updates, ScaleByNadamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def nadamw(
    learning_rate,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """NAdamW; `learning_rate` is a float or an optax schedule (a function of the step count)."""
    return optax.chain(
        scale_by_nadam(b1=b1, b2=b2, eps=eps),
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
