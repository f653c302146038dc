"""ImageNet in JAX/flax: ResNet-50 v1.5, the stride on the 3x3 conv of each bottleneck.

Module names mirror the torch model (`conv1`, `layer2_0/shortcut/bn`, `fc`) so weights map by name
and parameter types agree. Convs pad explicitly, as torch does: flax's "SAME" pads stride-2 convs
asymmetrically (less before than after).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import linen as nn

from algoperf.jax.classification import JaxClassifier

# flax BN momentum is the decay of the running average: 0.9 here = torch momentum 0.1.
BN_MOMENTUM, BN_EPS = 0.9, 1e-5
EXPANSION = 4
ACTIVATIONS = {
    "relu": nn.relu,
    "silu": nn.silu,
    "gelu": lambda x: nn.gelu(x, approximate=True),  # the gelu variant: tanh approximation
}


def activation_fn(name: str):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}."
        ) from None


def _conv(features: int, kernel: int, strides: int, name: str) -> nn.Conv:
    pad = (kernel - 1) // 2
    return nn.Conv(
        features, (kernel, kernel), strides=(strides, strides), padding=((pad, pad), (pad, pad)),
        use_bias=False, kernel_init=nn.initializers.lecun_normal(), name=name,
    )  # fmt: skip


def _batch_norm(train: bool, name: str, scale: float = 1.0) -> nn.BatchNorm:
    # use_fast_variance=False: E[(x - mean)^2] like torch, not E[x^2] - mean^2, which cancels
    # catastrophically in float32.
    return nn.BatchNorm(
        use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS,
        use_fast_variance=False, scale_init=nn.initializers.constant(scale), name=name,
    )  # fmt: skip


class Shortcut(nn.Module):
    """Projection shortcut (1x1 conv with stride + BN) on the first block of every stage."""

    features: int
    strides: int

    @nn.compact
    def __call__(self, x_BHWC, train: bool):
        return _batch_norm(train, "bn")(_conv(self.features, 1, self.strides, "conv")(x_BHWC))


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride: v1.5) -> 1x1 expand, plus the shortcut."""

    width: int
    strides: int
    activation: str
    bn_init_scale: float

    @nn.compact
    def __call__(self, x_BHWC, train: bool):
        act = activation_fn(self.activation)
        out_features = self.width * EXPANSION
        residual = x_BHWC
        if self.strides != 1 or x_BHWC.shape[-1] != out_features:
            residual = Shortcut(out_features, self.strides, name="shortcut")(x_BHWC, train)
        y = act(_batch_norm(train, "bn1")(_conv(self.width, 1, 1, "conv1")(x_BHWC)))
        y = act(_batch_norm(train, "bn2")(_conv(self.width, 3, self.strides, "conv2")(y)))
        # The last BN of each residual branch starts at bn_init_scale (0: identity blocks).
        y = _batch_norm(train, "bn3", self.bn_init_scale)(_conv(out_features, 1, 1, "conv3")(y))
        return act(y + residual)


class ResNet50(nn.Module):
    num_classes: int = 1000
    stage_sizes: tuple[int, ...] = (3, 4, 6, 3)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    activation: str = "relu"
    bn_init_scale: float = 0.0

    @nn.compact
    def __call__(self, inputs_BHWC, train: bool = False):
        act = activation_fn(self.activation)
        x = _conv(self.widths[0], 7, 2, "conv1")(inputs_BHWC)
        x = act(_batch_norm(train, "bn1")(x))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for index, (num_blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
            for block in range(num_blocks):
                strides = 2 if index > 0 and block == 0 else 1
                x = Bottleneck(
                    width, strides, self.activation, self.bn_init_scale,
                    name=f"layer{index + 1}_{block}",
                )(x, train)  # fmt: skip
        x = jnp.mean(x, axis=(1, 2))  # global average pool
        return nn.Dense(
            self.num_classes, kernel_init=nn.initializers.normal(stddev=0.01),
            bias_init=nn.initializers.zeros, name="fc",
        )(x)  # fmt: skip


class Workload(JaxClassifier):
    output_param_prefixes = ("fc",)
    data_layout = "NHWC"

    def build_model(self, **model_kwargs) -> nn.Module:
        activation_fn(model_kwargs.get("activation", "relu"))  # a clear error before init
        return ResNet50(**model_kwargs)

    def init_inputs(self):
        return jnp.zeros(
            (1, self.pipeline.options.image_size, self.pipeline.options.image_size, 3), jnp.float32
        )
