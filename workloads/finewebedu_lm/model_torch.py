"""finewebedu_lm in PyTorch: the decoder-only language model, its per-token cross-entropy and
its perplexity outputs (docs/workloads.md, "finewebedu_lm").

Pre-RMSNorm blocks (attention, then a sigmoid-GLU MLP), a final RMSNorm and the output layer
tied to the token embedding. Attention is causal multi-head attention through
`F.scaled_dot_product_attention` (flash attention on GPUs) with RoPE (θ 500,000, adjacent pairs)
and QK-norm: q and k L2-normalised per head, q times a learned per-layer scale, softmax scale 1.

Precision: parameters float32; with `compute_dtype` bfloat16 the forward runs under
`torch.autocast` (matmuls and attention in bfloat16; norms, RoPE, QK-norm and the residual stream
in float32), and the logits come out float32, so the loss is computed in float32.
`compute_dtype="auto"` (the spec's) is bfloat16 on CUDA and float32 elsewhere (CPU tests).

Module names give the parameter types (algoperf/param_types.py): `embed` (embedding, also the
output layer), `*_norm` (layer-norm scales), `attn.qkv` / `attn.out` (attention QKV / out),
`attn.attn_scale` and the MLP's `fc1` / `fc2` (weights).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from algoperf import spec
from algoperf.torch.workload import TorchWorkload
from algoperf.workloads.finewebedu_lm import metrics as lm_metrics

RMS_NORM_EPS = 1e-6
QK_NORM_EPS = 1e-6
ROPE_THETA = 500_000.0
INIT_STD = 0.02
COMPUTE_DTYPES = ("auto", "bfloat16", "float32")


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """float32 for bfloat16 and float32 tensors; a float64 model (the DDP test's) stays
    float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def check_compute_dtype(compute_dtype: str) -> str:
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(
            f"finewebedu_lm compute_dtype must be one of {COMPUTE_DTYPES}, got {compute_dtype!r}."
        )
    return compute_dtype


def rope_tables(seq_len: int, head_dim: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [seq_len, 1, head_dim / 2] of the angles pos · θ^(-2i / head_dim), computed
    in float64 and rounded once to float32 (so both frameworks hold the same tables)."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float64, device=device) / head_dim
    positions = torch.arange(seq_len, dtype=torch.float64, device=device)
    angles = positions[:, None] * ROPE_THETA ** (-exponents)[None, :]
    return angles.cos().float()[:, None, :], angles.sin().float()[:, None, :]


def apply_rope(x_BTHD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates the adjacent pairs (x[2i], x[2i+1]) of every head by the position's angles
    (float32 in, float32 out)."""
    pairs = x_BTHD.unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1)
    return rotated.flatten(-2)


def qk_norm(x_BTHD: torch.Tensor) -> torch.Tensor:
    """x / (‖x‖ + eps) per head. Upstream's frameworks disagree on the eps (PyTorch adds it
    after the division, JAX to the norm); here, in both frameworks, it goes to the norm: that
    keeps every vector at norm <= 1 (adding eps to each component shifts the vector instead),
    and the two differ by ~1e-6 relative on vectors of norm ~1 or more."""
    return x_BTHD / (torch.linalg.vector_norm(x_BTHD, dim=-1, keepdim=True) + QK_NORM_EPS)


class Attention(nn.Module):
    """Causal multi-head attention: fused q/k/v projection, RoPE, QK-norm with a learned scale
    (initialised to log2(L² - L) for the context length L), softmax scale 1."""

    def __init__(self, emb_dim: int, num_heads: int, seq_len: int) -> None:
        super().__init__()
        if emb_dim % num_heads or (emb_dim // num_heads) % 2:
            raise ValueError(
                f"finewebedu_lm: emb_dim {emb_dim} must split into num_heads {num_heads} heads "
                "of an even size (RoPE rotates pairs)."
            )
        self.num_heads = num_heads
        self.qkv = nn.Linear(emb_dim, 3 * emb_dim, bias=False)
        self.out = nn.Linear(emb_dim, emb_dim, bias=False)
        self.attn_scale = nn.Parameter(torch.tensor(math.log2(seq_len * seq_len - seq_len)))

    def forward(self, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x_BTD.shape
        qkv = self.qkv(x_BTD).view(batch, length, 3, self.num_heads, dim // self.num_heads)
        q_BTHD, k_BTHD, v_BTHD = qkv.unbind(2)
        # RoPE and QK-norm in float32 (bfloat16 would round the rotated pairs and the norms).
        q_BTHD = qk_norm(apply_rope(at_least_float32(q_BTHD), cos, sin)) * self.attn_scale
        k_BTHD = qk_norm(apply_rope(at_least_float32(k_BTHD), cos, sin))
        q, k, v = (t.to(v_BTHD.dtype).transpose(1, 2) for t in (q_BTHD, k_BTHD, v_BTHD))
        attended_BHTD = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0)
        return self.out(attended_BHTD.transpose(1, 2).reshape(batch, length, dim))


class GluMlp(nn.Module):
    """fc1 d -> 2m, then a · sigmoid(b) of its two halves (the first half gated by the second:
    sigmoid GLU, not SwiGLU) -> m, fc2 m -> d."""

    def __init__(self, emb_dim: int, mlp_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(emb_dim, 2 * mlp_dim, bias=False)
        self.fc2 = nn.Linear(mlp_dim, emb_dim, bias=False)

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.glu(self.fc1(x_BTD), dim=-1))


class Block(nn.Module):
    """x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, emb_dim: int, num_heads: int, mlp_dim: int, seq_len: int) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(emb_dim, eps=RMS_NORM_EPS)
        self.attn = Attention(emb_dim, num_heads, seq_len)
        self.mlp_norm = nn.RMSNorm(emb_dim, eps=RMS_NORM_EPS)
        self.mlp = GluMlp(emb_dim, mlp_dim)

    def forward(self, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x_BTD = x_BTD + self.attn(self.attn_norm(x_BTD), cos, sin)
        return x_BTD + self.mlp(self.mlp_norm(x_BTD))


class DecoderLM(nn.Module):
    """Token ids [B, T] -> float32 logits [B, T, vocab_size]; T may be shorter than `seq_len`
    (which sets the attention scale's init), and RoPE follows T."""

    def __init__(
        self,
        *,
        vocab_size: int,
        seq_len: int,
        emb_dim: int,
        num_heads: int,
        num_layers: int,
        mlp_dim: int,
        compute_dtype: str = "auto",
    ) -> None:
        super().__init__()
        self.compute_dtype = check_compute_dtype(compute_dtype)
        self.head_dim = emb_dim // num_heads
        self.embed = nn.Embedding(vocab_size, emb_dim)
        self.layers = nn.ModuleList(
            Block(emb_dim, num_heads, mlp_dim, seq_len) for _ in range(num_layers)
        )
        self.final_norm = nn.RMSNorm(emb_dim, eps=RMS_NORM_EPS)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Upstream's init: every projection and the embedding ~ N(0, 0.02), the projections
        that end a residual branch (attn.out, mlp.fc2) ~ N(0, 0.02 / √(2 · num_layers)); norm
        scales 1 and the attention scales log2(L² - L) (set by their modules)."""
        residual_std = INIT_STD / math.sqrt(2 * len(self.layers))
        nn.init.normal_(self.embed.weight, std=INIT_STD)
        for block in self.layers:
            nn.init.normal_(block.attn.qkv.weight, std=INIT_STD)
            nn.init.normal_(block.mlp.fc1.weight, std=INIT_STD)
            nn.init.normal_(block.attn.out.weight, std=residual_std)
            nn.init.normal_(block.mlp.fc2.weight, std=residual_std)

    def uses_bfloat16(self, device: torch.device) -> bool:
        return self.compute_dtype == "bfloat16" or (
            self.compute_dtype == "auto" and device.type == "cuda"
        )

    def forward(self, inputs_BT: torch.Tensor) -> torch.Tensor:
        device = inputs_BT.device
        cos, sin = rope_tables(inputs_BT.shape[1], self.head_dim, device)
        with torch.autocast(device.type, torch.bfloat16, enabled=self.uses_bfloat16(device)):
            x_BTD = self.embed(inputs_BT)  # float32: the residual stream stays float32
            for block in self.layers:
                x_BTD = block(x_BTD, cos, sin)
            logits_BTV = F.linear(self.final_norm(x_BTD), self.embed.weight)  # tied output
        return at_least_float32(logits_BTV)


# --- loss and eval outputs --------------------------------------------------------------------
def token_cross_entropy(
    label_batch: torch.Tensor,
    logits_batch: torch.Tensor,
    mask_batch: torch.Tensor | None = None,
    label_smoothing: float | torch.Tensor = 0.0,
) -> dict[str, torch.Tensor]:
    """Per-token cross-entropy with labels smoothed to (1 - α)·onehot + α/V, in float32;
    upstream's contract (`summed`, `n_valid_examples` = the mask's sum, or every token without
    a mask, `per_example` [B, T]).

    Written as lse - (1 - α)·z[target] - α·mean(z) (z the logits, lse their logsumexp): equal to
    `F.cross_entropy(label_smoothing=α)` (tests/test_finewebedu_lm_model.py checks it), with α
    a float or a 0-d tensor, and no [B, T, V] log-probabilities kept for the backward pass.
    """
    logits = at_least_float32(logits_batch)
    log_normaliser = torch.logsumexp(logits, dim=-1)
    target_logits = logits.gather(-1, label_batch.long().unsqueeze(-1)).squeeze(-1)
    per_token = (
        log_normaliser
        - (1.0 - label_smoothing) * target_logits
        - label_smoothing * logits.mean(dim=-1)
    )
    if mask_batch is not None:
        per_token = per_token * mask_batch
        n_valid = mask_batch.sum()
    else:
        n_valid = per_token.new_full((), float(per_token.numel()))
    return {"summed": per_token.sum(), "n_valid_examples": n_valid, "per_example": per_token}


def lm_eval_outputs(logits, batch, loss_fn=token_cross_entropy) -> dict[str, torch.Tensor]:
    """One eval batch's sums (workloads/finewebedu_lm/metrics.py reads them): the unsmoothed
    token NLL and the token count over real tokens, and the real windows; padding rows (weight 0)
    add exactly 0 whatever their values. `loss_fn`: the workload's (compiled where the policy
    compiles it: one fused pass over the [B, T, V] logits instead of several eager ones)."""
    weights = batch["weights"]
    losses = loss_fn(batch["targets"], logits, weights)["per_example"]
    zero = torch.zeros_like(losses)
    return {
        "nll_sum": torch.where(weights > 0, losses, zero).sum(),
        "token_count": weights.sum(),
        "num_examples": (weights.amax(dim=-1) > 0).to(weights.dtype).sum(),
    }


class Workload(TorchWorkload):
    """Rows of a batch are windows of token ids; the model's output per row is [T, vocab]
    float32 logits."""

    eval_metrics = lm_metrics.METRICS
    # The output layer is the embedding matrix itself (tied): its one tensor is the output
    # parameter (upstream names a `lm_head` that holds the same tensor).
    output_param_prefixes = ("embed.",)

    def build_model(self, **model_kwargs) -> nn.Module:
        return DecoderLM(**model_kwargs)

    def loss_fn(
        self,
        label_batch: spec.Tensor,
        logits_batch: spec.Tensor,
        mask_batch: spec.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, spec.Tensor]:
        return token_cross_entropy(label_batch, logits_batch, mask_batch, label_smoothing)

    def eval_outputs(self, logits, batch) -> dict[str, torch.Tensor]:
        return lm_eval_outputs(logits, batch, self.loss_fn)

    def train_flops_per_example(self, seq_len: int | None = None) -> float:
        """Training FLOPs of one window (metrics.flops_per_token x its tokens), for MFU."""
        seq_len = seq_len or self.spec.model_kwargs["seq_len"]
        return float(lm_metrics.flops_per_token(self.spec.model_kwargs, seq_len) * seq_len)
