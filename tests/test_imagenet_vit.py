"""ImageNet ViT (docs/workloads.md), what is specific to it: the model classes' defaults (ViT-B/16),
the fixed 2-D sin-cos position embedding, clear errors for images that do not fit the patches,
and the dropout helper whose rate is a call argument in JAX.

Counts and types of every variant, init / forward / loss / backward, the dropout contract, torch
<-> JAX parity (with a 2 x 3 token grid) and `algoperf run` on the fixture tree are in the
registry suite (tests/test_workload_registry.py, from workloads/imagenet_vit/testing.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import linen as flax_nn

from algoperf.workloads.imagenet_vit import model_jax, model_torch

VIT_B_DEFAULTS = (87_006_184, 200)  # as upstream's test_num_params builds them


def _counts(shapes) -> tuple[int, int]:
    return sum(int(np.prod(s)) for s in shapes), len(shapes)


def test_model_defaults_are_vit_b16():
    """Upstream's test_num_params builds the model classes with their defaults (ViT-B/16)."""
    with torch.device("meta"):
        torch_shapes = [p.shape for p in model_torch.ViT().parameters()]
    assert _counts(torch_shapes) == VIT_B_DEFAULTS
    variables = jax.eval_shape(
        model_jax.ViT().init, jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3))
    )
    assert _counts([leaf.shape for leaf in jax.tree.leaves(variables["params"])]) == VIT_B_DEFAULTS


def test_position_embedding_matches_the_formula_in_both_frameworks():
    width, omega = 384, 1.0 / 10_000 ** (np.arange(96) / 95)
    pe_torch = model_torch.sincos_posemb(2, 3, width, "cpu").numpy()
    pe_jax = model_jax.sincos_posemb(2, 3, width)
    assert pe_torch.shape == pe_jax.shape == (6, width)
    np.testing.assert_allclose(pe_torch, pe_jax, atol=1e-7)
    row, col = 1, 2  # token 5 of a 2 x 3 grid, row-major
    expected = np.concatenate(
        [np.sin(col * omega), np.cos(col * omega), np.sin(row * omega), np.cos(row * omega)]
    )
    np.testing.assert_allclose(pe_jax[row * 3 + col], expected, atol=1e-6)


def test_bad_image_size_is_a_clear_error():
    model = model_torch.ViT(width=32, depth=1, num_heads=2, patch_size=16)
    with pytest.raises(ValueError, match="not a multiple of the patch size 16"):
        model(torch.zeros(1, 3, 24, 32))
    with pytest.raises(ValueError, match="not a multiple of the patch 16"):
        jax.eval_shape(
            model_jax.ViT(width=32, depth=1, num_heads=2).init,
            jax.random.PRNGKey(0),
            jnp.zeros((1, 24, 32, 3)),
        )


def test_jax_dropout_rate_is_a_call_argument():
    """Inverted dropout: the kept fraction is 1 - rate, kept values scaled by 1 / (1 - rate);
    off in eval mode and at rate 0; a traced rate works under jit."""

    class Probe(flax_nn.Module):
        @flax_nn.compact
        def __call__(self, x, train, rate):
            return model_jax.dropout(self, x, rate, train)

    x = jnp.ones((100_000,))
    rngs = {"dropout": jax.random.PRNGKey(0)}
    traced = jax.jit(lambda x, rate: Probe().apply({}, x, True, rate, rngs=rngs))
    out = np.asarray(traced(x, 0.25))
    assert abs(np.mean(out == 0) - 0.25) < 0.01
    np.testing.assert_allclose(np.unique(out), [0.0, 1 / 0.75], rtol=1e-6)
    assert np.array_equal(Probe().apply({}, x, False, 0.25, rngs=rngs), x)
    assert np.array_equal(Probe().apply({}, x, True, 0.0, rngs=rngs), x)
