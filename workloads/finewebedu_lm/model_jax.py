"""finewebedu_lm in JAX/flax: the decoder-only language model, its per-token cross-entropy and
its perplexity outputs (docs/workloads.md, "finewebedu_lm").

The same model as model_torch.py, with the same module names (`embed`, `layers_0/attn/qkv`,
`layers_0/mlp_norm`, `final_norm`...) so weights map by name and parameter types agree; q, k
and v are one fused projection in both frameworks. Attention goes through
`jax.nn.dot_product_attention(is_causal=True)`, cuDNN's fused kernel on GPUs in bfloat16.

Precision, as PyTorch's autocast gives it: parameters float32; with `compute_dtype` bfloat16 the
projections, attention, the MLP and the output layer take bfloat16 inputs and weights; norms,
RoPE, QK-norm and the residual stream stay float32, and the logits are returned float32, so the
loss is computed in float32 (upstream's JAX took log-softmax of bfloat16 logits).
`compute_dtype="auto"` is bfloat16 on GPUs and float32 elsewhere.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from algoperf import spec
from algoperf.jax.workload import JaxWorkload
from algoperf.workloads.finewebedu_lm import metrics as lm_metrics

RMS_NORM_EPS = 1e-6
QK_NORM_EPS = 1e-6
ROPE_THETA = 500_000.0
INIT_STD = 0.02
COMPUTE_DTYPES = ("auto", "bfloat16", "float32")


def resolve_compute_dtype(compute_dtype: str):
    """ "auto" -> bfloat16 on GPUs, float32 elsewhere."""
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(
            f"finewebedu_lm compute_dtype must be one of {COMPUTE_DTYPES}, got {compute_dtype!r}."
        )
    if compute_dtype == "auto":
        return jnp.bfloat16 if jax.default_backend() == "gpu" else jnp.float32
    return jnp.bfloat16 if compute_dtype == "bfloat16" else jnp.float32


def rope_tables(seq_len: int, head_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin [seq_len, 1, head_dim / 2] of the angles pos · θ^(-2i / head_dim), computed
    in float64 and rounded once to float32 (constants of the traced program)."""
    exponents = np.arange(0, head_dim, 2, dtype=np.float64) / head_dim
    angles = np.arange(seq_len, dtype=np.float64)[:, None] * ROPE_THETA ** (-exponents)[None, :]
    return (
        np.cos(angles).astype(np.float32)[:, None, :],
        np.sin(angles).astype(np.float32)[:, None, :],
    )


def apply_rope(x_BTHD, cos, sin):
    """Rotates the adjacent pairs (x[2i], x[2i+1]) of every head (float32 in and out)."""
    pairs = x_BTHD.reshape(*x_BTHD.shape[:-1], -1, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = jnp.stack((even * cos - odd * sin, even * sin + odd * cos), axis=-1)
    return rotated.reshape(x_BTHD.shape)


def qk_norm(x_BTHD):
    """x / (‖x‖ + eps) per head: the eps placement model_torch.qk_norm explains."""
    return x_BTHD / (jnp.linalg.norm(x_BTHD, axis=-1, keepdims=True) + QK_NORM_EPS)


def dense(features: int, std: float, dtype, name: str) -> nn.Dense:
    return nn.Dense(
        features,
        use_bias=False,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=nn.initializers.normal(stddev=std),
        name=name,
    )


class Attention(nn.Module):
    """Causal multi-head attention: fused q/k/v projection, RoPE, QK-norm with a learned scale
    (initialised to log2(L² - L)), softmax scale 1."""

    num_heads: int
    seq_len: int
    residual_std: float
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x_BTD, cos, sin):
        batch, length, dim = x_BTD.shape
        if dim % self.num_heads or (dim // self.num_heads) % 2:
            raise ValueError(
                f"finewebedu_lm: emb_dim {dim} must split into num_heads {self.num_heads} heads "
                "of an even size (RoPE rotates pairs)."
            )
        qkv = dense(3 * dim, INIT_STD, self.dtype, "qkv")(x_BTD)
        qkv = qkv.reshape(batch, length, 3, self.num_heads, dim // self.num_heads)
        q_BTHD, k_BTHD, v_BTHD = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        attn_scale = self.param(
            "attn_scale",
            nn.initializers.constant(math.log2(self.seq_len * self.seq_len - self.seq_len)),
            (),
            jnp.float32,  # upstream's JAX kept it in bfloat16; its PyTorch in float32
        )
        # RoPE and QK-norm in float32, as in model_torch.py.
        q_BTHD = qk_norm(apply_rope(q_BTHD.astype(jnp.float32), cos, sin)) * attn_scale
        k_BTHD = qk_norm(apply_rope(k_BTHD.astype(jnp.float32), cos, sin))
        on_gpu = jax.default_backend() == "gpu"
        attended_BTHD = jax.nn.dot_product_attention(
            q_BTHD.astype(self.dtype),
            k_BTHD.astype(self.dtype),
            v_BTHD,
            is_causal=True,
            scale=1.0,
            # cuDNN's fused kernel takes 16-bit inputs only; XLA's own otherwise.
            implementation="cudnn" if on_gpu and self.dtype == jnp.bfloat16 else None,
        )
        out = attended_BTHD.reshape(batch, length, dim)
        return dense(dim, self.residual_std, self.dtype, "out")(out)


class GluMlp(nn.Module):
    """fc1 d -> 2m, a · sigmoid(b) of its two halves -> m, fc2 m -> d."""

    mlp_dim: int
    residual_std: float
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x_BTD):
        hidden = dense(2 * self.mlp_dim, INIT_STD, self.dtype, "fc1")(x_BTD)
        return dense(x_BTD.shape[-1], self.residual_std, self.dtype, "fc2")(nn.glu(hidden))


class Block(nn.Module):
    """x + attn(norm(x)), then x + mlp(norm(x))."""

    num_heads: int
    mlp_dim: int
    seq_len: int
    residual_std: float
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x_BTD, cos, sin):
        norm = functools.partial(nn.RMSNorm, epsilon=RMS_NORM_EPS, param_dtype=jnp.float32)
        attn = Attention(self.num_heads, self.seq_len, self.residual_std, self.dtype, name="attn")
        x_BTD = x_BTD + attn(norm(name="attn_norm")(x_BTD), cos, sin)
        mlp = GluMlp(self.mlp_dim, self.residual_std, self.dtype, name="mlp")
        return x_BTD + mlp(norm(name="mlp_norm")(x_BTD))


class TiedEmbedding(nn.Module):
    """The token embedding [V, d] ~ N(0, 0.02): looked up in float32, and used transposed as
    the output layer in the compute dtype."""

    vocab_size: int
    emb_dim: int

    def setup(self):
        self.embedding = self.param(
            "embedding",
            nn.initializers.normal(stddev=INIT_STD),
            (self.vocab_size, self.emb_dim),
            jnp.float32,
        )

    def __call__(self, ids_BT):
        return jnp.take(self.embedding, ids_BT, axis=0)

    def attend(self, x_BTD, dtype):
        return jnp.einsum("btd,vd->btv", x_BTD.astype(dtype), self.embedding.astype(dtype))


class DecoderLM(nn.Module):
    """Token ids [B, T] -> float32 logits [B, T, vocab_size]; T may be shorter than `seq_len`
    (which sets the attention scale's init), and RoPE follows T."""

    vocab_size: int
    seq_len: int
    emb_dim: int
    num_heads: int
    num_layers: int
    mlp_dim: int
    compute_dtype: str = "auto"

    @nn.compact
    def __call__(self, inputs_BT, train: bool = False):
        del train  # no dropout, no batch statistics
        dtype = resolve_compute_dtype(self.compute_dtype)
        residual_std = INIT_STD / math.sqrt(2 * self.num_layers)
        cos, sin = rope_tables(inputs_BT.shape[1], self.emb_dim // self.num_heads)
        embed = TiedEmbedding(self.vocab_size, self.emb_dim, name="embed")
        x_BTD = embed(inputs_BT)
        for index in range(self.num_layers):
            block = Block(
                self.num_heads, self.mlp_dim, self.seq_len, residual_std, dtype,
                name=f"layers_{index}",
            )  # fmt: skip
            x_BTD = block(x_BTD, cos, sin)
        x_BTD = nn.RMSNorm(epsilon=RMS_NORM_EPS, param_dtype=jnp.float32, name="final_norm")(x_BTD)
        return embed.attend(x_BTD, dtype).astype(jnp.float32)


# --- loss and eval outputs --------------------------------------------------------------------
def token_cross_entropy(label_batch, logits_batch, mask_batch=None, label_smoothing=0.0):
    """Per-token cross-entropy with labels smoothed to (1 - α)·onehot + α/V, in float32, as
    model_torch.token_cross_entropy: lse - (1 - α)·z[target] - α·mean(z). Every argument may be
    traced (submissions jit their step with `label_smoothing` a traced value)."""
    logits = logits_batch.astype(jnp.float32)
    log_normaliser = jax.nn.logsumexp(logits, axis=-1)
    target_logits = jnp.take_along_axis(logits, label_batch[..., None].astype(jnp.int32), -1)
    per_token = (
        log_normaliser
        - (1.0 - label_smoothing) * target_logits[..., 0]
        - label_smoothing * jnp.mean(logits, axis=-1)
    )
    if mask_batch is not None:
        per_token = per_token * mask_batch
        n_valid = mask_batch.sum()
    else:
        n_valid = jnp.asarray(per_token.size, dtype=per_token.dtype)
    return {"summed": per_token.sum(), "n_valid_examples": n_valid, "per_example": per_token}


def lm_eval_outputs(logits, batch) -> dict[str, jnp.ndarray]:
    """One eval batch's sums (workloads/finewebedu_lm/metrics.py reads them); padding rows
    (weight 0) add exactly 0 whatever their values."""
    weights = batch["weights"]
    losses = token_cross_entropy(batch["targets"], logits, weights)["per_example"]
    return {
        "nll_sum": jnp.where(weights > 0, losses, 0.0).sum(),
        "token_count": weights.sum(),
        "num_examples": (weights.max(axis=-1) > 0).astype(weights.dtype).sum(),
    }


class Workload(JaxWorkload):
    """Rows of a batch are windows of token ids; the model's output per row is [T, vocab]
    float32 logits."""

    eval_metrics = lm_metrics.METRICS
    # The output layer is the embedding matrix itself (tied): its one tensor.
    output_param_prefixes = ("embed/",)

    def build_model(self, **model_kwargs) -> nn.Module:
        return DecoderLM(**model_kwargs)

    def init_inputs(self):
        # The parameters do not depend on the length; the context length, as upstream.
        return jnp.ones((1, self.spec.model_kwargs["seq_len"]), jnp.int32)

    def loss_fn(
        self,
        label_batch: spec.Tensor,
        logits_batch: spec.Tensor,
        mask_batch: spec.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, spec.Tensor]:
        return token_cross_entropy(label_batch, logits_batch, mask_batch, label_smoothing)

    def eval_outputs(self, logits, batch) -> dict[str, jnp.ndarray]:
        return lm_eval_outputs(logits, batch)

    def train_flops_per_example(self, seq_len: int | None = None) -> float:
        """Training FLOPs of one window (metrics.flops_per_token x its tokens), for MFU."""
        seq_len = seq_len or self.spec.model_kwargs["seq_len"]
        return float(lm_metrics.flops_per_token(self.spec.model_kwargs, seq_len) * seq_len)
