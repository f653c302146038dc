"""fastMRI's declarations for the registry suite (tests/test_workload_registry.py): a narrow
two-pool U-Net on small non-square slices whose odd half-size takes the up stage's reflect-pad
path; the fixture is workloads/fastmri/fixture.py's (32x32 targets)."""

from __future__ import annotations

import functools

import numpy as np

from algoperf.spec import ParameterType as T
from algoperf.workloads import parity
from algoperf.workloads.fastmri import fixture

TINY = {"num_channels": 8, "num_pool_layers": 2}
"""Every module type of the full-size U-Net, narrow: two down blocks, the bottleneck, two up
stages. It overrides both sizes fastmri_model_size changes, so that variant's tiny model is the
base's."""
HEIGHT, WIDTH = 30, 28
"""Non-square, and 30 -> 15 -> 7 pools to an odd size: the first up stage reflect-pads one row at
the bottom (none on the right), so a swapped pad side or a transposed H/W shows."""


def slice_batch(workload, batch_size: int, seed: int, height=HEIGHT, width=WIDTH) -> dict:
    """A batch as the pipeline gives it: blurred-noise images normalised by their own mean and
    std and clipped to [-6, 6], a target that is the input plus a smooth difference, the raw
    scale of real slices (mean, std ~1e-5, volume_max ~1e-3), the last row padding (zeros,
    std and volume_max 1, weight 0) when there are several."""
    del workload  # the same numpy batch in both frameworks
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(batch_size, height + 4, width + 4))
    blurred = sum(noise[:, i : i + height, j : j + width] for i in range(5) for j in range(5))
    inputs = (blurred - blurred.mean((1, 2), keepdims=True)) / blurred.std((1, 2), keepdims=True)
    targets = inputs + 0.3 * np.roll(inputs, 3, axis=2) + 0.1 * rng.normal(size=inputs.shape)
    batch = {
        "inputs": np.clip(inputs, -6, 6).astype(np.float32),
        "targets": np.clip(targets, -6, 6).astype(np.float32),
        "mean": rng.uniform(1e-5, 1e-4, batch_size).astype(np.float32),
        "std": rng.uniform(1e-5, 1e-4, batch_size).astype(np.float32),
        "volume_max": rng.uniform(5e-4, 2e-3, batch_size).astype(np.float32),
        "weights": np.ones(batch_size, np.float32),
    }
    if batch_size > 1:
        for key in ("inputs", "targets", "mean"):
            batch[key][-1] = 0.0
        for key in ("std", "volume_max"):
            batch[key][-1] = 1.0
        batch["weights"][-1] = 0.0
    return batch


def transpose_conv_and_group_norm(module) -> parity.Leaves | None:
    """ConvTranspose2d weight [in, out, kh, kw] -> flax ConvTranspose kernel [kh, kw, in, out],
    spatially flipped (lax.conv_transpose correlates with the kernel as stored; torch's
    transposed conv scatters with it); GroupNorm(1, C) weight/bias -> LayerNorm scale/bias."""
    from torch import nn

    if isinstance(module, nn.ConvTranspose2d):
        return {"params": {"kernel": module.weight.permute(2, 3, 0, 1).flip(0, 1)}}
    if isinstance(module, nn.GroupNorm):
        return {"params": {"scale": module.weight, "bias": module.bias}}
    return None


def randomize_(model, seed: int = 0) -> None:
    """Non-trivial LayerNorm scales and biases (init 1/0) and output bias (init 0), so the
    parity checks prove their mapping too."""
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.GroupNorm):
                module.weight.add_(0.2 * torch.randn(module.weight.shape, generator=generator))
                module.bias.add_(0.1 * torch.randn(module.bias.shape, generator=generator))
        model.output_conv.bias.add_(0.5)


TESTS = parity.ModelTests(
    model_kwargs=TINY,
    workload_options=fixture.PIPELINE_OPTIONS,
    batch_size=4,  # 3 slices and a padding row
    output_shape=(HEIGHT, WIDTH),
    # Full-size base: 22 3x3 and 2x2 convs and the 1x1 output conv (no norm parameters).
    param_types={T.CONV_WEIGHT: 23, T.BIAS: 1},
    has_dropout=True,
    label_smoothing=False,
    randomize=randomize_,
    torch_to_flax=functools.partial(parity.torch_to_flax, rules=(transpose_conv_and_group_norm,)),
    make_batch=slice_batch,
    forward_twins={"fastmri_model_size": "fastmri"},  # the same tiny model (see TINY)
    # Measured on a 2-core x86 CPU, tiny model, 30x28 slices, the four variants (randomised LN
    # and output bias): EVAL and TRAIN outputs 2.1e-6 to 3.9e-6 abs at max |output| 2.2 to 4.2
    # (5e-7 to 9.4e-7 relative); loss <= 4.8e-7; params after the SGD step <= 3.9e-7 abs (they
    # move by 3e-2 to 5e-2). Conv kernels (oneDNN vs XLA) and norm reductions round differently;
    # the bounds leave ~10x (outputs) and ~25x (params), while a wrong kernel flip, pad side or
    # norm axis is O(1).
    logits_rtol=1e-5,
    step_atol=1e-5,
    write_fixture=fixture.write_fixture,
    fixture_sizes={"validation": fixture.SIZES["validation"], "test": fixture.SIZES["test"]},
    cli_options="image_size=32,num_workers=0,model_kwargs={'num_channels':8,'num_pool_layers':2}",
    cli_metrics=("loss", "ssim"),
)
