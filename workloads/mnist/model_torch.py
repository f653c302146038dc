"""MNIST in PyTorch: the 784-128-10 MLP with a sigmoid hidden layer."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from algoperf.torch.classification import TorchClassifier
from algoperf.torch.init import lecun_init_


class MLP(nn.Module):
    def __init__(self, num_hidden: int = 128, num_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            OrderedDict(
                flatten=nn.Flatten(),
                layer1=nn.Linear(28 * 28, num_hidden),
                layer1_sig=nn.Sigmoid(),
                layer2=nn.Linear(num_hidden, num_classes),
            )
        )
        # lecun-normal as in flax; upstream's first torch init keeps kaiming-uniform (a quirk,
        # docs/rules.md, "MNIST normalisation"), we initialise both frameworks alike.
        lecun_init_(self)

    def forward(self, inputs_B1HW):
        return self.net(inputs_B1HW)


class Workload(TorchClassifier):
    output_param_prefixes = ("net.layer2.",)
    data_layout = "NCHW"

    def build_model(self, **model_kwargs) -> nn.Module:
        return MLP(**model_kwargs)
