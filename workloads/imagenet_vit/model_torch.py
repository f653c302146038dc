"""ImageNet ViT in PyTorch: ViT-S/16 (and its glu / post_ln / map variants), docs/workloads.md.

No class token: tokens are mean-pooled (or pooled by a MAP head). The image size is free (any
multiple of the patch size); the fixed 2-D sin-cos position embedding follows the token grid.
Module names give the upstream parameter types: `patch_conv` (conv), `ln*` (layer norm),
`attention.query|key|value|out` (attention Q/K/V/out), the rest plain weights and biases.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from algoperf.torch.classification import TorchClassifier
from algoperf.torch.init import lecun_normal_

LAYER_NORM_EPS = 1e-6
POSEMB_TEMPERATURE = 10_000.0


def sincos_posemb(grid_height: int, grid_width: int, width: int, device) -> torch.Tensor:
    """[grid_height * grid_width, width] fixed embedding of row-major tokens.

    Per token [sin(x w), cos(x w), sin(y w), cos(y w)] with x the column, y the row and
    w_i = 1 / 10000^(i / (width/4 - 1)); computed in float64 so both frameworks get the same
    float32 values.
    """
    if width % 4:
        raise ValueError(f"ViT width {width} must be a multiple of 4 for the sin-cos posemb.")
    quarter = width // 4
    omega = 1.0 / POSEMB_TEMPERATURE ** (
        torch.arange(quarter, dtype=torch.float64, device=device) / (quarter - 1)
    )
    rows, cols = torch.meshgrid(
        torch.arange(grid_height, dtype=torch.float64, device=device),
        torch.arange(grid_width, dtype=torch.float64, device=device),
        indexing="ij",
    )
    x_angles = cols.reshape(-1, 1) * omega
    y_angles = rows.reshape(-1, 1) * omega
    posemb = torch.cat([x_angles.sin(), x_angles.cos(), y_angles.sin(), y_angles.cos()], dim=1)
    return posemb.float()


def _dropout(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    return F.dropout(x, rate, training=training) if rate else x


class Attention(nn.Module):
    """Multi-head dot-product attention with biased q/k/v/out projections (xavier, bias 0)."""

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"ViT width {width} is not divisible by num_heads {num_heads}.")
        self.num_heads = num_heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)
        for linear in (self.query, self.key, self.value, self.out):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def _heads(self, x_BTW: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x_BTW.shape
        return x_BTW.view(batch, tokens, self.num_heads, width // self.num_heads).transpose(1, 2)

    def forward(self, queries_BQW, inputs_BTW, dropout_rate: float) -> torch.Tensor:
        q_BHQD = self._heads(self.query(queries_BQW))
        k_BHTD = self._heads(self.key(inputs_BTW))
        v_BHTD = self._heads(self.value(inputs_BTW))
        # Scale 1/sqrt(head_dim) (SDPA's default); dropout on the attention probabilities.
        y_BHQD = F.scaled_dot_product_attention(
            q_BHQD, k_BHTD, v_BHTD, dropout_p=dropout_rate if self.training else 0.0
        )
        batch, _, queries, _ = y_BHQD.shape
        return self.out(y_BHQD.transpose(1, 2).reshape(batch, queries, -1))


class MLP(nn.Module):
    """Linear, GELU (tanh) [times Linear of it: GLU], dropout, Linear; xavier, bias N(0,1e-6)."""

    def __init__(self, width: int, mlp_dim: int, use_glu: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, mlp_dim)
        self.fc_glu = nn.Linear(mlp_dim, mlp_dim) if use_glu else None
        self.fc2 = nn.Linear(mlp_dim, width)
        for linear in self.children():
            nn.init.xavier_uniform_(linear.weight)
            nn.init.normal_(linear.bias, std=1e-6)

    def forward(self, x_BTW: torch.Tensor, dropout_rate: float) -> torch.Tensor:
        h_BTM = F.gelu(self.fc1(x_BTW), approximate="tanh")
        if self.fc_glu is not None:
            h_BTM = h_BTM * self.fc_glu(h_BTM)
        h_BTM = _dropout(h_BTM, dropout_rate, self.training)
        return self.fc2(h_BTM)


class EncoderBlock(nn.Module):
    """Pre-LN (default) or post-LN transformer block; dropout on both residual branches."""

    def __init__(
        self, width: int, mlp_dim: int, num_heads: int, use_glu: bool, use_post_layer_norm: bool
    ) -> None:
        super().__init__()
        self.use_post_layer_norm = use_post_layer_norm
        self.ln1 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.attention = Attention(width, num_heads)
        self.ln2 = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.mlp = MLP(width, mlp_dim, use_glu)

    def forward(self, x_BTW: torch.Tensor, dropout_rate: float) -> torch.Tensor:
        if self.use_post_layer_norm:
            y = self.attention(x_BTW, x_BTW, dropout_rate)
            x_BTW = self.ln1(x_BTW + _dropout(y, dropout_rate, self.training))
            y = self.mlp(x_BTW, dropout_rate)
            return self.ln2(x_BTW + _dropout(y, dropout_rate, self.training))
        y = self.ln1(x_BTW)
        y = self.attention(y, y, dropout_rate)
        x_BTW = x_BTW + _dropout(y, dropout_rate, self.training)
        y = self.mlp(self.ln2(x_BTW), dropout_rate)
        return x_BTW + _dropout(y, dropout_rate, self.training)


class MAPHead(nn.Module):
    """Multi-head attention pooling: a learned probe attends to the tokens, then LN + MLP with a
    residual. The probe is stored as [1, width] (upstream: [1, 1, width]; same values, and its
    parameter type stays WEIGHT instead of reading as a conv kernel)."""

    def __init__(self, width: int, mlp_dim: int, num_heads: int) -> None:
        super().__init__()
        self.probe = nn.Parameter(torch.empty(1, width))
        nn.init.xavier_uniform_(self.probe)  # bound sqrt(6 / (1 + width)), as flax on [1, w]
        self.attention = Attention(width, num_heads)
        self.ln = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.mlp = MLP(width, mlp_dim)

    def forward(self, x_BTW: torch.Tensor, dropout_rate: float) -> torch.Tensor:
        probe_B1W = self.probe.expand(x_BTW.shape[0], 1, -1)
        x_B1W = self.attention(probe_B1W, x_BTW, dropout_rate)
        x_B1W = x_B1W + self.mlp(self.ln(x_B1W), dropout_rate)
        return x_B1W[:, 0]


class ViT(nn.Module):
    """Defaults are ViT-B/16 (upstream's model defaults); the workload passes ViT-S/16."""

    def __init__(
        self,
        num_classes: int = 1000,
        patch_size: int = 16,
        width: int = 768,
        depth: int = 12,
        mlp_dim: int | None = None,
        num_heads: int = 12,
        use_glu: bool = False,
        use_post_layer_norm: bool = False,
        use_map: bool = False,
        num_channels: int = 3,
    ) -> None:
        super().__init__()
        mlp_dim = mlp_dim or 4 * width
        self.patch_size = patch_size
        self.width = width
        self.patch_conv = nn.Conv2d(num_channels, width, patch_size, stride=patch_size)
        blocks = [
            EncoderBlock(width, mlp_dim, num_heads, use_glu, use_post_layer_norm)
            for _ in range(depth)
        ]
        self.blocks = nn.ModuleList(blocks)
        # post-LN blocks already end in a norm: no final encoder norm there.
        self.ln_final = None if use_post_layer_norm else nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.map_head = MAPHead(width, mlp_dim, num_heads) if use_map else None
        self.pre_logits = nn.Linear(width, width)
        self.head = nn.Linear(width, num_classes)
        lecun_normal_(self.patch_conv.weight)
        nn.init.zeros_(self.patch_conv.bias)
        lecun_normal_(self.pre_logits.weight)
        nn.init.zeros_(self.pre_logits.bias)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, inputs_BCHW: torch.Tensor, dropout_rate: float = 0.0) -> torch.Tensor:
        height, width = inputs_BCHW.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"ViT input {height}x{width} is not a multiple of the patch size {self.patch_size}."
            )
        x_BWhw = self.patch_conv(inputs_BCHW)
        grid_height, grid_width = x_BWhw.shape[-2:]
        x_BTW = x_BWhw.flatten(2).transpose(1, 2)  # row-major tokens, as flax's NHWC reshape
        x_BTW = x_BTW + sincos_posemb(grid_height, grid_width, self.width, x_BTW.device)
        x_BTW = _dropout(x_BTW, dropout_rate, self.training)
        for block in self.blocks:
            x_BTW = block(x_BTW, dropout_rate)
        if self.ln_final is not None:
            x_BTW = self.ln_final(x_BTW)
        if self.map_head is not None:
            x_BW = self.map_head(x_BTW, dropout_rate)
        else:
            x_BW = x_BTW.mean(dim=1)
        return self.head(torch.tanh(self.pre_logits(x_BW)))


class Workload(TorchClassifier):
    """Data: the shared ImageNet pipeline (workloads/imagenet; options `image_size`,
    `num_workers`), trained with RandAugment and mixup."""

    pipeline_defaults = {"augmentation": "randaugment_mixup"}
    output_param_prefixes = ("head.",)
    data_layout = "NCHW"

    def build_model(self, **model_kwargs) -> nn.Module:
        return ViT(**model_kwargs)
