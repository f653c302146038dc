"""ImageNet ViT's declarations for the registry suite (tests/test_workload_registry.py): one encoder
block (every other size as the spec), a 2 x 3 token grid, the MAP head's probe in the weight map."""

from __future__ import annotations

import functools

import numpy as np

from algoperf.spec import ParameterType as T
from algoperf.workloads import parity
from algoperf.workloads.imagenet import testing as imagenet_testing


def map_probe(module) -> parity.Leaves | None:
    """The MAP head's own parameter: its probe (its attention, norm and MLP map generically)."""
    from algoperf.workloads.imagenet_vit import model_torch

    if isinstance(module, model_torch.MAPHead):
        return {"params": {"probe": module.probe}}
    return None


torch_to_flax = functools.partial(parity.torch_to_flax, rules=(map_probe,))
"""torch ViT -> flax variables: Linear/Conv2d/LayerNorm by name, plus the MAP probe."""


def randomize_(model, seed: int = 0) -> None:
    """Non-trivial LN scales/biases, MLP biases and head: a fresh ViT has LN 1/0, MLP biases
    ~1e-6 and a zero head, so its logits would be 0 and prove nothing."""
    import torch
    from torch import nn

    from algoperf.workloads.imagenet_vit import model_torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.add_(0.2 * torch.randn(module.weight.shape, generator=generator))
                module.bias.add_(0.2 * torch.randn(module.bias.shape, generator=generator))
            elif isinstance(module, model_torch.MLP):
                for linear in (module.fc1, module.fc2):
                    linear.bias.add_(0.1 * torch.randn(linear.bias.shape, generator=generator))
        model.head.weight.copy_(0.1 * torch.randn(model.head.weight.shape, generator=generator))
        model.head.bias.copy_(0.1 * torch.randn(model.head.bias.shape, generator=generator))


def non_square_batch(workload, batch_size: int, seed: int) -> dict[str, np.ndarray]:
    """32 x 48 pixels in the workload's layout: a 2 x 3 token grid, so swapped rows and columns
    (of the patches or of the position embedding) would show."""
    rng = np.random.default_rng(seed)
    inputs = rng.standard_normal((batch_size, 3, 32, 48)).astype(np.float32)
    if workload.pipeline.layout == "NHWC":
        inputs = np.ascontiguousarray(inputs.transpose(0, 2, 3, 1))
    return {
        "inputs": inputs,
        "targets": rng.integers(0, 1000, batch_size),
        "weights": np.ones(batch_size, np.float32),
    }


TESTS = parity.ModelTests(
    model_kwargs={"depth": 1},
    workload_options={"image_size": 32, "num_workers": 0},
    batch_size=4,
    output_shape=(1000,),
    # Parameter types of the full base ViT-S/16: patch conv, 12 blocks (2 LN, q/k/v/out, 2-layer
    # MLP), final LN, pre_logits, head.
    param_types={
        T.CONV_WEIGHT: 1,
        T.LAYER_NORM_SCALE: 25,
        T.LAYER_NORM_BIAS: 25,
        T.ATTENTION_Q: 12,
        T.ATTENTION_K: 12,
        T.ATTENTION_V: 12,
        T.ATTENTION_OUT: 12,
        T.ATTENTION_BIAS: 48,
        T.WEIGHT: 26,
        T.BIAS: 27,
    },
    has_dropout=True,
    zero_output_init=True,  # the head starts at zero (docs/workloads.md)
    randomize=randomize_,
    torch_to_flax=torch_to_flax,
    make_batch=non_square_batch,
    # Measured on a 2-core x86 CPU, one encoder block, all four variants: EVAL and TRAIN logits
    # 2.6e-6 to 3.3e-6 abs at max |logit| 3.8 to 4.7 (6.6e-7 to 7.1e-7 relative); loss
    # <= 9.5e-7; params after the SGD step 1.2e-7 abs (they move by 2.5e-2 to 4.3e-2). The bounds
    # leave ~10x (logits) and ~80x (params) for other CPUs' summation orders; a mapping error is
    # far larger (patch kernel with H and W swapped: 3.6 abs on the logits).
    logits_rtol=1e-5,
    step_atol=1e-5,
    write_fixture=imagenet_testing.write_fixture,
    fixture_sizes=imagenet_testing.FIXTURE_SIZES,
    # One encoder block and 32 px images keep the compiles to seconds.
    cli_options="image_size=32,num_workers=0,model_kwargs={'depth':1}",
    cli_metrics=("accuracy", "loss"),
)
