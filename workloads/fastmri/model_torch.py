"""fastMRI in PyTorch: the U-Net that reconstructs 4x-undersampled knee slices, its L1 loss and
its SSIM (docs/workloads.md, "fastmri").

Batches hold images [B, H, W] (normalised, no channel axis); the model adds the channel and runs
NCHW, and returns [B, H, W]. Any H, W work: a size that 2^pools does not divide is handled as
upstream handles it (average pooling floors, the up stage reflect-pads one row or column).

NCHW, not channels_last: on a 2-core x86 CPU (one thread, full-size base, 320x320, batch 2,
forward + L1 + backward + AdamW, the two layouts interleaved in one process) eager NCHW took
4.0 s/step and eager channels_last 5.1 s (oneDNN's NHWC conv backward is the slower one here).
Compiled, inductor's layout optimisation turns the convs to channels_last by itself (5.8 vs 5.1
s/step for the two input layouts; 3.7 s with TORCHINDUCTOR_LAYOUT_OPTIMIZATION=0), and it does
so on GPUs, where cuDNN prefers that layout: converting in the model adds nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from algoperf import spec
from algoperf.torch.init import lecun_normal_
from algoperf.torch.workload import TorchWorkload
from algoperf.workloads.fastmri import metrics as fastmri_metrics
from algoperf.workloads.fastmri import ssim

INSTANCE_NORM_EPS = 1e-5
LAYER_NORM_EPS = 1e-6
LEAKY_RELU_SLOPE = 0.2
ACTIVATIONS = {
    "leaky_relu": lambda x: F.leaky_relu(x, LEAKY_RELU_SLOPE),
    "tanh": torch.tanh,
}


def activation_fn(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(
            f"unknown fastmri activation {name!r}; choose one of {sorted(ACTIVATIONS)}."
        )
    return ACTIVATIONS[name]


def instance_norm(x_BCHW: torch.Tensor) -> torch.Tensor:
    """Per example and channel over (H, W), biased variance, no affine (InstanceNorm2d's
    defaults); written out so it keeps the input's memory format."""
    var, mean = torch.var_mean(x_BCHW, dim=(2, 3), keepdim=True, correction=0)
    return (x_BCHW - mean) * torch.rsqrt(var + INSTANCE_NORM_EPS)


class ConvBlock(nn.Module):
    """2 x [Conv 3x3 pad 1 (no bias) -> InstanceNorm (or LayerNorm over (C, H, W) with a
    per-channel scale and bias: GroupNorm with one group) -> activation -> Dropout2d]."""

    def __init__(
        self, in_channels: int, out_channels: int, activation: str, use_layer_norm: bool
    ) -> None:
        super().__init__()
        self.conv_0 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv_1 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        if use_layer_norm:
            self.layer_norm_0 = nn.GroupNorm(1, out_channels, eps=LAYER_NORM_EPS)
            self.layer_norm_1 = nn.GroupNorm(1, out_channels, eps=LAYER_NORM_EPS)
        self.use_layer_norm = use_layer_norm
        self.activation = activation_fn(activation)

    def forward(self, x_BCHW: torch.Tensor, dropout_rate: float) -> torch.Tensor:
        x = x_BCHW
        for index in range(2):
            x = getattr(self, f"conv_{index}")(x)
            if self.use_layer_norm:
                x = getattr(self, f"layer_norm_{index}")(x)
            else:
                x = instance_norm(x)
            x = self.activation(x)
            if dropout_rate:
                # Dropout2d: whole channels of an example, as upstream's reference.
                x = F.dropout2d(x, dropout_rate, training=self.training)
        return x


class TransposeConvBlock(nn.Module):
    """TransposeConv 2x2 / 2 (no bias) -> InstanceNorm -> activation (InstanceNorm in the
    layernorm variant too, as upstream's)."""

    def __init__(self, in_channels: int, out_channels: int, activation: str) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2, bias=False)
        self.activation = activation_fn(activation)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.activation(instance_norm(self.conv(x_BCHW)))


class UNet(nn.Module):
    """`num_pool_layers` down ConvBlocks (widths C, 2C, 4C, ...), each followed by a 2x2 average
    pool; a bottleneck ConvBlock doubling the width; per up stage a TransposeConvBlock halving
    it, the skip concatenated, a ConvBlock; a 1x1 conv with bias to one channel.

    Init: lecun-normal for every conv (flax's, fan-in = kernel area x input channels, the
    transposed convs included), zero output bias, LayerNorm 1/0. Upstream's PyTorch model takes
    a transposed conv's fan-in over its output channels instead (half the base's, whose up
    stages halve the width); the InstanceNorm after it removes the weights' scale from the
    forward, and flax's rule makes both frameworks start from the same distribution.
    """

    def __init__(
        self,
        num_channels: int = 32,
        num_pool_layers: int = 4,
        activation: str = "leaky_relu",
        use_layer_norm: bool = False,
        in_channels: int = 1,
        out_channels: int = 1,
    ) -> None:
        super().__init__()
        if num_channels < 1 or num_pool_layers < 1:
            raise ValueError("fastmri UNet: give num_channels >= 1 and num_pool_layers >= 1.")
        activation_fn(activation)  # a clear error now, not at the first forward
        widths = [num_channels * 2**index for index in range(num_pool_layers)]

        def block(c_in: int, c_out: int) -> ConvBlock:
            return ConvBlock(c_in, c_out, activation, use_layer_norm)

        self.down = nn.ModuleList(
            block(c_in, c_out) for c_in, c_out in zip([in_channels, *widths[:-1]], widths)
        )
        self.bottleneck = block(widths[-1], 2 * widths[-1])
        self.up_transpose = nn.ModuleList(
            TransposeConvBlock(2 * width, width, activation) for width in reversed(widths)
        )
        self.up = nn.ModuleList(block(2 * width, width) for width in reversed(widths))
        self.output_conv = nn.Conv2d(num_channels, out_channels, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                lecun_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.ConvTranspose2d):
                # weight [in, out, kh, kw]: flax's fan-in is kh * kw * in.
                in_channels, _, kernel_h, kernel_w = module.weight.shape
                lecun_normal_(module.weight, fan_in=in_channels * kernel_h * kernel_w)

    def forward(self, inputs_BHW: torch.Tensor, dropout_rate: float = 0.0) -> torch.Tensor:
        x = inputs_BHW.unsqueeze(1)
        skips = []
        for block in self.down:
            x = block(x, dropout_rate)
            skips.append(x)
            x = F.avg_pool2d(x, 2)  # floors odd sizes
        x = self.bottleneck(x, dropout_rate)
        for transpose_block, block in zip(self.up_transpose, self.up):
            skip = skips.pop()
            x = transpose_block(x)
            # An odd size upstairs: reflect-pad one column on the right / one row at the bottom.
            pad_w, pad_h = skip.shape[-1] - x.shape[-1], skip.shape[-2] - x.shape[-2]
            if pad_w or pad_h:
                x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
            x = block(torch.cat([x, skip], dim=1), dropout_rate)
        return self.output_conv(x).squeeze(1)


# --- loss, SSIM and eval outputs ----------------------------------------------------------
def l1_loss(
    label_batch: torch.Tensor,
    logits_batch: torch.Tensor,
    mask_batch: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per example the mean absolute error over its pixels, masked by `mask_batch`; upstream's
    contract (`summed`, `n_valid_examples`, `per_example` [B])."""
    per_example = (logits_batch - label_batch).abs().mean(dim=(1, 2))
    if mask_batch is not None:
        per_example = per_example * mask_batch
        n_valid = mask_batch.sum()
    else:
        n_valid = per_example.new_full((), float(per_example.shape[0]))
    return {"summed": per_example.sum(), "n_valid_examples": n_valid, "per_example": per_example}


def ssim_per_example(outputs, targets, mean, std, volume_max) -> torch.Tensor:
    """SSIM [B] of each de-normalised output and target (workloads/fastmri/ssim.py defines it):
    the window statistics of output·std and target·std (SSIM's variances do not see the shift
    by `mean`, and float32 cancels less without it) from one 7x7 average pool over the valid
    windows, then `mean` added to the local means."""
    ssim.check_image_size(*outputs.shape[-2:])
    scale = std.reshape(-1, 1, 1, 1)
    x, y = outputs.unsqueeze(1) * scale, targets.unsqueeze(1) * scale
    moments = F.avg_pool2d(torch.cat([x, y, x * x, y * y, x * y], dim=1), ssim.WINDOW, stride=1)
    mu_x, mu_y, mean_xx, mean_yy, mean_xy = moments.unbind(1)
    var_x = ssim.COV_NORM * (mean_xx - mu_x * mu_x)
    var_y = ssim.COV_NORM * (mean_yy - mu_y * mu_y)
    cov_xy = ssim.COV_NORM * (mean_xy - mu_x * mu_y)
    shift = mean.reshape(-1, 1, 1)
    mu_x, mu_y = mu_x + shift, mu_y + shift
    data_range = torch.where(volume_max == 0, torch.ones_like(volume_max), volume_max)
    data_range = data_range.reshape(-1, 1, 1)
    c1, c2 = (ssim.K1 * data_range) ** 2, (ssim.K2 * data_range) ** 2
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return (numerator / denominator).mean(dim=(1, 2)).clamp(-1.0, 1.0)


def fastmri_eval_outputs(logits, batch) -> dict[str, torch.Tensor]:
    """One eval batch's sums over its real rows (workloads/fastmri/metrics.py reads them);
    padding rows (weight 0) add exactly 0 whatever their values."""
    targets, weights = batch["targets"], batch["weights"]
    real = weights > 0
    losses = (logits - targets).abs().mean(dim=(1, 2))
    values = ssim_per_example(logits, targets, batch["mean"], batch["std"], batch["volume_max"])
    zero = torch.zeros_like(weights)
    return {
        "loss_sum": torch.where(real, losses * weights, zero).sum(),
        "ssim_sum": torch.where(real, values * weights, zero).sum(),
        "num_examples": weights.sum(),
    }


class Workload(TorchWorkload):
    """Rows of a batch are slices; the model's output per row is the image [H, W]."""

    eval_metrics = fastmri_metrics.METRICS
    output_param_prefixes = ("output_conv.",)

    def build_model(self, **model_kwargs) -> nn.Module:
        return UNet(**model_kwargs)

    def loss_fn(
        self,
        label_batch: spec.Tensor,
        logits_batch: spec.Tensor,
        mask_batch: spec.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, spec.Tensor]:
        del label_smoothing  # a regression loss; upstream's fastMRI takes and ignores it too
        return l1_loss(label_batch, logits_batch, mask_batch)

    def eval_outputs(self, logits, batch) -> dict[str, torch.Tensor]:
        return fastmri_eval_outputs(logits, batch)
