"""Weight initialisers shared by the torch models (flax's defaults, so both frameworks agree)."""

from __future__ import annotations

import math

import torch
from torch import nn

# Std of a unit normal truncated to [-2, 2]; dividing by it keeps the variance at 1/fan_in.
_TRUNCATED_NORMAL_STD = 0.87962566103423978


def lecun_normal_(weight: torch.Tensor, fan_in: int | None = None) -> torch.Tensor:
    """flax's `lecun_normal`: truncated normal on [-2σ, 2σ], σ = sqrt(1/fan_in) / 0.8796."""
    if fan_in is None:
        fan_in = weight[0].numel() if weight.ndim > 1 else weight.numel()
    std = math.sqrt(1.0 / fan_in) / _TRUNCATED_NORMAL_STD
    with torch.no_grad():
        return nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2 * std, b=2 * std)


def lecun_init_(module: nn.Module) -> None:
    """lecun-normal weights and zero biases for every Linear and Conv in `module`."""
    for child in module.modules():
        if isinstance(child, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
            lecun_normal_(child.weight)
            if child.bias is not None:
                nn.init.zeros_(child.bias)
