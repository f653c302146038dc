"""CIFAR-10 in JAX/flax: ResNet-18 with a 3x3 stride-1 stem and no max-pool (docs/workloads.md).

Module names mirror the torch model (`conv1`, `layer2_0/shortcut/bn`, `fc`) so weights map by name
and parameter types agree. Convs pad 1 px explicitly: flax's "SAME" pads stride-2 convs
asymmetrically (0 before, 1 after), torch pads (1, 1).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from algoperf.jax.classification import JaxClassifier

# flax BN momentum is the decay of the running average: 0.9 here = torch momentum 0.1.
BN_MOMENTUM, BN_EPS = 0.9, 1e-5
_PAD_1 = ((1, 1), (1, 1))


def _conv3x3(features: int, strides: int, name: str) -> nn.Conv:
    return nn.Conv(
        features, (3, 3), strides=(strides, strides), padding=_PAD_1, use_bias=False,
        kernel_init=nn.initializers.lecun_normal(), name=name,
    )  # fmt: skip


def _batch_norm(train: bool, name: str, zero_scale: bool = False) -> nn.BatchNorm:
    # use_fast_variance=False: E[(x - mean)^2] like torch, not E[x^2] - mean^2, which cancels
    # catastrophically in float32 (one SGD step then drifts ~1e-4 from torch; ~1e-7 with this).
    return nn.BatchNorm(
        use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS,
        use_fast_variance=False, name=name,
        scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones,
    )  # fmt: skip


class Shortcut(nn.Module):
    """Projection shortcut (1x1 conv with stride + BN) where the block changes shape."""

    features: int
    strides: int

    @nn.compact
    def __call__(self, x_BHWC, train: bool):
        x = nn.Conv(
            self.features, (1, 1), strides=(self.strides, self.strides), padding="VALID",
            use_bias=False, kernel_init=nn.initializers.lecun_normal(), name="conv",
        )(x_BHWC)  # fmt: skip
        return _batch_norm(train, "bn")(x)


class BasicBlock(nn.Module):
    features: int
    strides: int

    @nn.compact
    def __call__(self, x_BHWC, train: bool):
        residual = x_BHWC
        if self.strides != 1 or x_BHWC.shape[-1] != self.features:
            residual = Shortcut(self.features, self.strides, name="shortcut")(x_BHWC, train)
        y = _conv3x3(self.features, self.strides, "conv1")(x_BHWC)
        y = nn.relu(_batch_norm(train, "bn1")(y))
        y = _conv3x3(self.features, 1, "conv2")(y)
        # Zero-init the last BN of each residual branch: every block starts as the identity.
        y = _batch_norm(train, "bn2", zero_scale=True)(y)
        return nn.relu(y + residual)


class ResNet18(nn.Module):
    num_classes: int = 10
    stage_sizes: tuple[int, ...] = (2, 2, 2, 2)
    widths: tuple[int, ...] = (64, 128, 256, 512)

    @nn.compact
    def __call__(self, inputs_BHWC, train: bool = False):
        x = _conv3x3(self.widths[0], 1, "conv1")(inputs_BHWC)
        x = nn.relu(_batch_norm(train, "bn1")(x))
        for index, (num_blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
            for block in range(num_blocks):
                strides = 2 if index > 0 and block == 0 else 1
                x = BasicBlock(width, strides, name=f"layer{index + 1}_{block}")(x, train)
        x = nn.avg_pool(x, (4, 4), strides=(4, 4))  # 4x4 -> 1x1 at 32x32 inputs
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(
            self.num_classes, kernel_init=nn.initializers.normal(stddev=0.01),
            bias_init=nn.initializers.zeros, name="fc",
        )(x)  # fmt: skip


class Workload(JaxClassifier):
    """`init_model_fn` (inherited) returns the BN `batch_stats` as model_state; upstream's JAX
    CIFAR returns the params there instead and loses them (a bug; docs/rules.md, "CIFAR
    details")."""

    output_param_prefixes = ("fc",)
    data_layout = "NHWC"

    def build_model(self, **model_kwargs) -> nn.Module:
        return ResNet18(**model_kwargs)

    def init_inputs(self):
        return jnp.zeros((1, 32, 32, 3), jnp.float32)
