"""Layers the PyTorch ResNets share (cifar's ResNet-18, imagenet_resnet's ResNet-50)."""

from __future__ import annotations

from torch import nn

# Both ResNets use flax's BatchNorm defaults, in PyTorch's terms (momentum = 1 - 0.9).
BN_MOMENTUM, BN_EPS = 0.1, 1e-5


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class Shortcut(nn.Module):
    """Projection shortcut (1x1 conv with stride + BN) where a residual block changes shape."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
        self.bn = batch_norm(out_channels)

    def forward(self, x_BCHW):
        return self.bn(self.conv(x_BCHW))
