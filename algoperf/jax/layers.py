"""Small flax pieces several JAX workloads share."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn


def dropout(module: nn.Module, x, rate, train: bool):
    """Inverted dropout whose rate is a call argument (a Python float or a traced scalar), drawn
    from `module`'s "dropout" RNG stream; the identity in eval mode or at a Python rate of 0.
    (flax's `nn.Dropout` fixes its rate at construction; submissions pass it per call.)"""
    if not train or (isinstance(rate, int | float) and rate == 0.0):
        return x
    keep = 1.0 - rate
    mask = jax.random.bernoulli(module.make_rng("dropout"), keep, x.shape)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))
