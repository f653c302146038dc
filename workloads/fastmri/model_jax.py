"""fastMRI in JAX/flax: the U-Net that reconstructs 4x-undersampled knee slices, its L1 loss and
its SSIM (docs/workloads.md, "fastmri").

The same model as model_torch.py, NHWC inside. Module names mirror it (`down_0/conv_1`,
`bottleneck/layer_norm_0`, `up_transpose_2/conv`, `output_conv`) so weights map by name and
parameter types agree. The dropout rate is a call argument that reaches every ConvBlock
(upstream's JAX ConvBlock ignores the rate a submission passes and always uses 0; its PyTorch
model applies it: both apply it here).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import linen as nn

from algoperf import spec
from algoperf.jax.workload import JaxWorkload
from algoperf.workloads.fastmri import metrics as fastmri_metrics
from algoperf.workloads.fastmri import ssim

INSTANCE_NORM_EPS = 1e-5
LAYER_NORM_EPS = 1e-6
LEAKY_RELU_SLOPE = 0.2
ACTIVATIONS = {
    "leaky_relu": functools.partial(jax.nn.leaky_relu, negative_slope=LEAKY_RELU_SLOPE),
    "tanh": jnp.tanh,
}


def activation_fn(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(
            f"unknown fastmri activation {name!r}; choose one of {sorted(ACTIVATIONS)}."
        )
    return ACTIVATIONS[name]


def instance_norm(x_BHWC):
    """Per example and channel over (H, W), biased variance (two passes), no affine."""
    mean = jnp.mean(x_BHWC, axis=(1, 2), keepdims=True)
    centred = x_BHWC - mean
    var = jnp.mean(jnp.square(centred), axis=(1, 2), keepdims=True)
    return centred * jax.lax.rsqrt(var + INSTANCE_NORM_EPS)


def channel_dropout(module: nn.Module, x_BHWC, rate, train: bool):
    """Dropout2d: zeroes whole channels of an example (one draw per (example, channel)) and
    scales the rest by 1/(1 - rate); `rate` may be traced. The identity in eval mode or at a
    Python rate of 0."""
    if not train or (isinstance(rate, int | float) and rate == 0.0):
        return x_BHWC
    keep = 1.0 - rate
    shape = (x_BHWC.shape[0], 1, 1, x_BHWC.shape[-1])
    mask = jax.random.bernoulli(module.make_rng("dropout"), keep, shape)
    return jnp.where(mask, x_BHWC / keep, jnp.zeros_like(x_BHWC))


def _conv(features: int, kernel: int, name: str, use_bias: bool = False) -> nn.Conv:
    pad = (kernel - 1) // 2
    return nn.Conv(
        features, (kernel, kernel), padding=((pad, pad), (pad, pad)), use_bias=use_bias,
        kernel_init=nn.initializers.lecun_normal(), bias_init=nn.initializers.zeros, name=name,
    )  # fmt: skip


class ConvBlock(nn.Module):
    """2 x [Conv 3x3 pad 1 (no bias) -> InstanceNorm (or LayerNorm over (H, W, C) with a
    per-channel scale and bias) -> activation -> Dropout2d]."""

    features: int
    activation: str
    use_layer_norm: bool

    @nn.compact
    def __call__(self, x_BHWC, train: bool, dropout_rate):
        x = x_BHWC
        for index in range(2):
            x = _conv(self.features, 3, f"conv_{index}")(x)
            if self.use_layer_norm:
                x = nn.LayerNorm(
                    epsilon=LAYER_NORM_EPS, reduction_axes=(1, 2, 3), feature_axes=-1,
                    use_fast_variance=False, name=f"layer_norm_{index}",
                )(x)  # fmt: skip
            else:
                x = instance_norm(x)
            x = activation_fn(self.activation)(x)
            x = channel_dropout(self, x, dropout_rate, train)
        return x


class TransposeConvBlock(nn.Module):
    """TransposeConv 2x2 / 2 (no bias) -> InstanceNorm -> activation."""

    features: int
    activation: str

    @nn.compact
    def __call__(self, x_BHWC):
        x = nn.ConvTranspose(
            self.features, (2, 2), strides=(2, 2), padding="VALID", use_bias=False,
            kernel_init=nn.initializers.lecun_normal(), name="conv",
        )(x_BHWC)  # fmt: skip
        return activation_fn(self.activation)(instance_norm(x))


class UNet(nn.Module):
    """See model_torch.UNet (the same structure and init: lecun-normal over the kernel area x
    input channels for every conv, the transposed ones included; zero output bias)."""

    num_channels: int = 32
    num_pool_layers: int = 4
    activation: str = "leaky_relu"
    use_layer_norm: bool = False
    out_channels: int = 1

    @nn.compact
    def __call__(self, inputs_BHW, train: bool = False, dropout_rate=0.0):
        if self.num_channels < 1 or self.num_pool_layers < 1:
            raise ValueError("fastmri UNet: give num_channels >= 1 and num_pool_layers >= 1.")
        activation_fn(self.activation)
        widths = [self.num_channels * 2**index for index in range(self.num_pool_layers)]

        def block(features: int, name: str) -> ConvBlock:
            return ConvBlock(features, self.activation, self.use_layer_norm, name=name)

        x = inputs_BHW[..., None]
        skips = []
        for index, width in enumerate(widths):
            x = block(width, f"down_{index}")(x, train, dropout_rate)
            skips.append(x)
            x = nn.avg_pool(x, (2, 2), strides=(2, 2))  # floors odd sizes
        x = block(2 * widths[-1], "bottleneck")(x, train, dropout_rate)
        for index, width in enumerate(reversed(widths)):
            skip = skips.pop()
            x = TransposeConvBlock(width, self.activation, name=f"up_transpose_{index}")(x)
            # An odd size upstairs: reflect-pad one row at the bottom / one column on the right.
            pad_h, pad_w = skip.shape[1] - x.shape[1], skip.shape[2] - x.shape[2]
            if pad_h or pad_w:
                x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
            x = block(width, f"up_{index}")(jnp.concatenate([x, skip], -1), train, dropout_rate)
        return _conv(self.out_channels, 1, "output_conv", use_bias=True)(x)[..., 0]


# --- loss, SSIM and eval outputs ----------------------------------------------------------
def l1_loss(label_batch, logits_batch, mask_batch=None):
    """Per example the mean absolute error over its pixels, masked by `mask_batch`; upstream's
    contract (`summed`, `n_valid_examples`, `per_example` [B])."""
    per_example = jnp.mean(jnp.abs(logits_batch - label_batch), axis=(1, 2))
    if mask_batch is not None:
        per_example = per_example * mask_batch
        n_valid = mask_batch.sum()
    else:
        n_valid = jnp.asarray(per_example.shape[0], dtype=per_example.dtype)
    return {"summed": per_example.sum(), "n_valid_examples": n_valid, "per_example": per_example}


def ssim_per_example(outputs, targets, mean, std, volume_max):
    """SSIM [B] of each de-normalised output and target (workloads/fastmri/ssim.py defines it),
    computed as model_torch.ssim_per_example: window statistics of output·std and target·std
    from one 7x7 average pool over the valid windows, then `mean` added to the local means."""
    ssim.check_image_size(*outputs.shape[-2:])
    scale = std.reshape(-1, 1, 1, 1)
    x, y = outputs[..., None] * scale, targets[..., None] * scale
    stacked = jnp.concatenate([x, y, x * x, y * y, x * y], axis=-1)
    window = (ssim.WINDOW, ssim.WINDOW)
    moments = nn.avg_pool(stacked, window, strides=(1, 1), padding="VALID")
    mu_x, mu_y, mean_xx, mean_yy, mean_xy = (moments[..., k] for k in range(5))
    var_x = ssim.COV_NORM * (mean_xx - mu_x * mu_x)
    var_y = ssim.COV_NORM * (mean_yy - mu_y * mu_y)
    cov_xy = ssim.COV_NORM * (mean_xy - mu_x * mu_y)
    shift = mean.reshape(-1, 1, 1)
    mu_x, mu_y = mu_x + shift, mu_y + shift
    data_range = jnp.where(volume_max == 0, jnp.ones_like(volume_max), volume_max)
    data_range = data_range.reshape(-1, 1, 1)
    c1, c2 = (ssim.K1 * data_range) ** 2, (ssim.K2 * data_range) ** 2
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return jnp.clip(jnp.mean(numerator / denominator, axis=(1, 2)), -1.0, 1.0)


def fastmri_eval_outputs(logits, batch) -> dict[str, jnp.ndarray]:
    """One eval batch's sums over its real rows (workloads/fastmri/metrics.py reads them);
    padding rows (weight 0) add exactly 0 whatever their values."""
    targets, weights = batch["targets"], batch["weights"]
    real = weights > 0
    losses = jnp.mean(jnp.abs(logits - targets), axis=(1, 2))
    values = ssim_per_example(logits, targets, batch["mean"], batch["std"], batch["volume_max"])
    return {
        "loss_sum": jnp.where(real, losses * weights, 0.0).sum(),
        "ssim_sum": jnp.where(real, values * weights, 0.0).sum(),
        "num_examples": weights.sum(),
    }


class Workload(JaxWorkload):
    """Rows of a batch are slices; the model's output per row is the image [H, W]."""

    eval_metrics = fastmri_metrics.METRICS
    output_param_prefixes = ("output_conv/",)

    def build_model(self, **model_kwargs) -> nn.Module:
        return UNet(**model_kwargs)

    def init_inputs(self):
        # The parameters do not depend on the image size: the smallest that every pool halves.
        side = 2 ** self.spec.model_kwargs.get("num_pool_layers", 4)
        return jnp.zeros((1, side, side), jnp.float32)

    def loss_fn(
        self,
        label_batch: spec.Tensor,
        logits_batch: spec.Tensor,
        mask_batch: spec.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, spec.Tensor]:
        del label_smoothing  # a regression loss; upstream's fastMRI takes and ignores it too
        return l1_loss(label_batch, logits_batch, mask_batch)

    def eval_outputs(self, logits, batch) -> dict[str, jnp.ndarray]:
        return fastmri_eval_outputs(logits, batch)
