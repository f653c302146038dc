"""CIFAR-10 in PyTorch: ResNet-18 with a 3x3 stride-1 stem and no max-pool (docs/workloads.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from algoperf.torch.classification import TorchClassifier
from algoperf.torch.init import lecun_normal_
from algoperf.torch.layers import Shortcut
from algoperf.torch.layers import batch_norm as _batch_norm


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = _batch_norm(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = _batch_norm(out_channels)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = Shortcut(in_channels, out_channels, stride) if needs_projection else None

    def forward(self, x_BCHW):
        residual = x_BCHW if self.shortcut is None else self.shortcut(x_BCHW)
        y = F.relu(self.bn1(self.conv1(x_BCHW)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + residual)


class ResNet18(nn.Module):
    """Module names (`conv1`, `layer2.0.shortcut.bn`, `fc`) give the upstream parameter types."""

    def __init__(
        self,
        num_classes: int = 10,
        stage_sizes: tuple[int, ...] = (2, 2, 2, 2),
        widths: tuple[int, ...] = (64, 128, 256, 512),
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(3, widths[0])
        self.bn1 = _batch_norm(widths[0])
        in_channels = widths[0]
        for index, (num_blocks, width) in enumerate(zip(stage_sizes, widths)):
            blocks = []
            for block in range(num_blocks):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(BasicBlock(in_channels, width, stride))
                in_channels = width
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
        # Zero-init the last BN of each residual branch: every block starts as the identity.
        for module in self.modules():
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, inputs_BCHW: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(inputs_BCHW)))
        for index in range(self.num_stages):
            x = getattr(self, f"layer{index + 1}")(x)
        x = F.avg_pool2d(x, 4)  # 4x4 -> 1x1 at 32x32 inputs
        return self.fc(torch.flatten(x, 1))


class Workload(TorchClassifier):
    output_param_prefixes = ("fc.",)
    data_layout = "NCHW"

    def build_model(self, **model_kwargs) -> nn.Module:
        return ResNet18(**model_kwargs)
