"""MNIST in JAX/flax: the 784-128-10 MLP with a sigmoid hidden layer."""

from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from algoperf.jax.classification import JaxClassifier


class MLP(nn.Module):
    num_hidden: int = 128
    num_classes: int = 10

    @nn.compact
    def __call__(self, inputs_BHWC, train: bool = False):
        del train
        x = inputs_BHWC.reshape((inputs_BHWC.shape[0], -1))
        # Names mirror the torch model (net.layer1 / net.layer2) so weights map one to one.
        x = nn.sigmoid(nn.Dense(self.num_hidden, name="layer1")(x))
        return nn.Dense(self.num_classes, name="layer2")(x)


class Workload(JaxClassifier):
    output_param_prefixes = ("layer2",)
    data_layout = "NHWC"

    def build_model(self, **model_kwargs) -> nn.Module:
        return MLP(**model_kwargs)

    def init_inputs(self):
        return jnp.zeros((1, 28, 28, 1), jnp.float32)
