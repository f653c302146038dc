"""ImageNet ViT in JAX/flax: ViT-S/16 (and its glu / post_ln / map variants), docs/workloads.md.

Module names mirror the torch model (`patch_conv`, `blocks_3/attention/query`, `ln_final`,
`map_head/probe`, `head`) so weights map by name and parameter types agree. Dropout follows the
PyTorch model everywhere, including the attention probabilities and the MAP head (upstream's JAX
model skips both, and its post-LN block cannot be initialised; docs/rules.md, "ViT dropout and
post-LN").
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from algoperf.jax.classification import JaxClassifier
from algoperf.jax.layers import dropout

LAYER_NORM_EPS = 1e-6
POSEMB_TEMPERATURE = 10_000.0


def sincos_posemb(grid_height: int, grid_width: int, width: int) -> np.ndarray:
    """[grid_height * grid_width, width] fixed embedding of row-major tokens (see the torch
    model); float64 numpy at trace time, so it is a constant of the compiled program."""
    if width % 4:
        raise ValueError(f"ViT width {width} must be a multiple of 4 for the sin-cos posemb.")
    quarter = width // 4
    omega = 1.0 / POSEMB_TEMPERATURE ** (np.arange(quarter, dtype=np.float64) / (quarter - 1))
    rows, cols = np.meshgrid(np.arange(grid_height), np.arange(grid_width), indexing="ij")
    x_angles = cols.reshape(-1, 1) * omega
    y_angles = rows.reshape(-1, 1) * omega
    posemb = np.concatenate(
        [np.sin(x_angles), np.cos(x_angles), np.sin(y_angles), np.cos(y_angles)], axis=1
    )
    return posemb.astype(np.float32)


def _layer_norm(name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LAYER_NORM_EPS, name=name)


class Attention(nn.Module):
    """Multi-head dot-product attention with biased q/k/v/out projections (xavier, bias 0)."""

    width: int
    num_heads: int

    @nn.compact
    def __call__(self, queries_BQW, inputs_BTW, train: bool, dropout_rate):
        if self.width % self.num_heads:
            raise ValueError(f"ViT width {self.width} is not divisible by {self.num_heads} heads.")
        head_dim = self.width // self.num_heads

        def project(x, name):
            dense = nn.Dense(
                self.width, kernel_init=nn.initializers.xavier_uniform(),
                bias_init=nn.initializers.zeros, name=name,
            )  # fmt: skip
            return dense(x)

        def heads(x_BTW):
            return x_BTW.reshape(*x_BTW.shape[:2], self.num_heads, head_dim)

        q_BQHD = heads(project(queries_BQW, "query"))
        k_BTHD = heads(project(inputs_BTW, "key"))
        v_BTHD = heads(project(inputs_BTW, "value"))
        logits_BHQT = jnp.einsum("bqhd,bthd->bhqt", q_BQHD, k_BTHD) / math.sqrt(head_dim)
        probs_BHQT = dropout(self, jax.nn.softmax(logits_BHQT, axis=-1), dropout_rate, train)
        y_BQHD = jnp.einsum("bhqt,bthd->bqhd", probs_BHQT, v_BTHD)
        return project(y_BQHD.reshape(*y_BQHD.shape[:2], self.width), "out")


class MLP(nn.Module):
    """Dense, GELU (tanh) [times Dense of it: GLU], dropout, Dense; xavier, bias N(0,1e-6)."""

    width: int
    mlp_dim: int
    use_glu: bool = False

    @nn.compact
    def __call__(self, x_BTW, train: bool, dropout_rate):
        def dense(features, name):
            return nn.Dense(
                features, kernel_init=nn.initializers.xavier_uniform(),
                bias_init=nn.initializers.normal(stddev=1e-6), name=name,
            )  # fmt: skip

        h_BTM = nn.gelu(dense(self.mlp_dim, "fc1")(x_BTW), approximate=True)
        if self.use_glu:
            h_BTM = h_BTM * dense(self.mlp_dim, "fc_glu")(h_BTM)
        h_BTM = dropout(self, h_BTM, dropout_rate, train)
        return dense(self.width, "fc2")(h_BTM)


class EncoderBlock(nn.Module):
    """Pre-LN (default) or post-LN transformer block; dropout on both residual branches."""

    width: int
    mlp_dim: int
    num_heads: int
    use_glu: bool
    use_post_layer_norm: bool

    @nn.compact
    def __call__(self, x_BTW, train: bool, dropout_rate):
        ln1, ln2 = _layer_norm("ln1"), _layer_norm("ln2")
        attention = Attention(self.width, self.num_heads, name="attention")
        mlp = MLP(self.width, self.mlp_dim, self.use_glu, name="mlp")
        if self.use_post_layer_norm:
            y = attention(x_BTW, x_BTW, train, dropout_rate)
            x_BTW = ln1(x_BTW + dropout(self, y, dropout_rate, train))
            y = mlp(x_BTW, train, dropout_rate)
            return ln2(x_BTW + dropout(self, y, dropout_rate, train))
        y = ln1(x_BTW)
        y = attention(y, y, train, dropout_rate)
        x_BTW = x_BTW + dropout(self, y, dropout_rate, train)
        y = mlp(ln2(x_BTW), train, dropout_rate)
        return x_BTW + dropout(self, y, dropout_rate, train)


class MAPHead(nn.Module):
    """Multi-head attention pooling: a learned probe [1, width] attends to the tokens, then
    LN + MLP with a residual."""

    width: int
    mlp_dim: int
    num_heads: int

    @nn.compact
    def __call__(self, x_BTW, train: bool, dropout_rate):
        probe = self.param("probe", nn.initializers.xavier_uniform(), (1, self.width))
        probe_B1W = jnp.broadcast_to(probe, (x_BTW.shape[0], 1, self.width))
        attention = Attention(self.width, self.num_heads, name="attention")
        x_B1W = attention(probe_B1W, x_BTW, train, dropout_rate)
        y = MLP(self.width, self.mlp_dim, name="mlp")(_layer_norm("ln")(x_B1W), train, dropout_rate)
        return (x_B1W + y)[:, 0]


class ViT(nn.Module):
    """Defaults are ViT-B/16 (upstream's model defaults); the workload passes ViT-S/16."""

    num_classes: int = 1000
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    mlp_dim: int | None = None
    num_heads: int = 12
    use_glu: bool = False
    use_post_layer_norm: bool = False
    use_map: bool = False

    @nn.compact
    def __call__(self, inputs_BHWC, train: bool = False, dropout_rate=0.0):
        height, width = inputs_BHWC.shape[1:3]
        patch = self.patch_size
        if height % patch or width % patch:
            raise ValueError(f"ViT input {height}x{width} is not a multiple of the patch {patch}.")
        mlp_dim = self.mlp_dim or 4 * self.width
        x = nn.Conv(
            self.width, (patch, patch), strides=(patch, patch), padding="VALID",
            kernel_init=nn.initializers.lecun_normal(), bias_init=nn.initializers.zeros,
            name="patch_conv",
        )(inputs_BHWC)  # fmt: skip
        batch, grid_height, grid_width, _ = x.shape
        x_BTW = x.reshape(batch, grid_height * grid_width, self.width)
        x_BTW = x_BTW + sincos_posemb(grid_height, grid_width, self.width)
        x_BTW = dropout(self, x_BTW, dropout_rate, train)
        for index in range(self.depth):
            block = EncoderBlock(
                self.width, mlp_dim, self.num_heads, self.use_glu, self.use_post_layer_norm,
                name=f"blocks_{index}",
            )  # fmt: skip
            x_BTW = block(x_BTW, train, dropout_rate)
        if not self.use_post_layer_norm:  # post-LN blocks already end in a norm
            x_BTW = _layer_norm("ln_final")(x_BTW)
        if self.use_map:
            map_head = MAPHead(self.width, mlp_dim, self.num_heads, name="map_head")
            x_BW = map_head(x_BTW, train, dropout_rate)
        else:
            x_BW = x_BTW.mean(axis=1)
        x_BW = nn.Dense(
            self.width, kernel_init=nn.initializers.lecun_normal(),
            bias_init=nn.initializers.zeros, name="pre_logits",
        )(x_BW)  # fmt: skip
        return nn.Dense(
            self.num_classes, kernel_init=nn.initializers.zeros,
            bias_init=nn.initializers.zeros, name="head",
        )(jnp.tanh(x_BW))  # fmt: skip


class Workload(JaxClassifier):
    """Data: the shared ImageNet pipeline (workloads/imagenet; options `image_size`,
    `num_workers`), trained with RandAugment and mixup."""

    pipeline_defaults = {"augmentation": "randaugment_mixup"}
    output_param_prefixes = ("head/",)
    data_layout = "NHWC"

    def build_model(self, **model_kwargs) -> nn.Module:
        return ViT(**model_kwargs)

    def init_inputs(self):
        # The parameters do not depend on the image size: one patch is enough for init.
        patch = self.spec.model_kwargs.get("patch_size", 16)
        return jnp.zeros((1, patch, patch, 3), jnp.float32)
