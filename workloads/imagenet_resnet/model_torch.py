"""ImageNet in PyTorch: ResNet-50 v1.5, the stride on each bottleneck's 3x3 conv
(docs/workloads.md).

25,557,032 parameters in 161 tensors, 53 BN layers. Module names (`conv1`, `layer2.0.shortcut.bn`,
`fc`) give the upstream parameter types and map one to one onto the flax model's names.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from algoperf.torch.classification import TorchClassifier
from algoperf.torch.init import lecun_normal_
from algoperf.torch.layers import Shortcut
from algoperf.torch.layers import batch_norm as _batch_norm

EXPANSION = 4
ACTIVATIONS = {
    "relu": F.relu,
    "silu": F.silu,
    # The gelu variant uses the tanh approximation (flax's default gelu).
    "gelu": functools.partial(F.gelu, approximate="tanh"),
}


def activation_fn(name: str):
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}."
        ) from None


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride: v1.5) -> 1x1 expand, plus the shortcut."""

    def __init__(self, in_channels: int, width: int, stride: int, activation: str) -> None:
        super().__init__()
        out_channels = width * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = _batch_norm(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = _batch_norm(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = _batch_norm(out_channels)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = Shortcut(in_channels, out_channels, stride) if needs_projection else None
        self.activation = activation_fn(activation)

    def forward(self, x_BCHW):
        act = self.activation
        residual = x_BCHW if self.shortcut is None else self.shortcut(x_BCHW)
        y = act(self.bn1(self.conv1(x_BCHW)))
        y = act(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return act(y + residual)


class ResNet50(nn.Module):
    def __init__(
        self,
        num_classes: int = 1000,
        stage_sizes: tuple[int, ...] = (3, 4, 6, 3),
        widths: tuple[int, ...] = (64, 128, 256, 512),
        activation: str = "relu",
        bn_init_scale: float = 0.0,
    ) -> None:
        super().__init__()
        self.activation = activation_fn(activation)
        self.bn_init_scale = bn_init_scale
        self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = _batch_norm(widths[0])
        in_channels = widths[0]
        for index, (num_blocks, width) in enumerate(zip(stage_sizes, widths, strict=True)):
            blocks = []
            for block in range(num_blocks):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(Bottleneck(in_channels, width, stride, activation))
                in_channels = width * EXPANSION
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
        self.num_stages = len(stage_sizes)
        self.fc = nn.Linear(in_channels, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                lecun_normal_(module.weight)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # The last BN of each residual branch starts at bn_init_scale (0: the block starts as
        # the identity; 8.0 in the large_bn_init variant).
        for module in self.modules():
            if isinstance(module, Bottleneck):
                nn.init.constant_(module.bn3.weight, self.bn_init_scale)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, inputs_BCHW: torch.Tensor) -> torch.Tensor:
        x = self.activation(self.bn1(self.conv1(inputs_BCHW)))
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        for index in range(self.num_stages):
            x = getattr(self, f"layer{index + 1}")(x)
        x = x.mean(dim=(2, 3))  # global average pool
        return self.fc(x)


class Workload(TorchClassifier):
    output_param_prefixes = ("fc.",)
    data_layout = "NCHW"

    def build_model(self, **model_kwargs) -> nn.Module:
        return ResNet50(**model_kwargs)
