"""finewebedu_lm's eval metrics and its model arithmetic, framework-free (docs/workloads.md,
"finewebedu_lm"): the mean token log-loss and its perplexity over every real token of a split;
the parameter count and training FLOPs per token from the model's shape.

Each eval batch's `eval_outputs` (model_torch.py, model_jax.py) sums on the device over its
tokens weighted by `weights` (1 on the tokens of real windows, 0 on padding rows): `nll_sum`
(the unsmoothed cross-entropy of each token, in nats), `token_count` and `num_examples` (real
windows). The sums are added over batches and ranks before the division, so the perplexity is
`exp(mean token NLL)` over the split's tokens, whatever the batch size or number of ranks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from algoperf.metrics import MeanOfSums

METRICS = (
    MeanOfSums(name="loss", total="nll_sum", count="token_count"),
    MeanOfSums(name="ppl", total="nll_sum", count="token_count", transform=math.exp),
)


def num_params(model_kwargs: Mapping[str, Any]) -> int:
    """Trainable parameters of the decoder (the output layer is the embedding: counted once):
    embedding V·d; per layer the fused q/k/v (3d²) and output (d²) projections, the learned
    attention scale (1), the GLU MLP's d·2m + m·d and two RMSNorm scales (2d); the final norm d."""
    vocab, dim = model_kwargs["vocab_size"], model_kwargs["emb_dim"]
    mlp, layers = model_kwargs["mlp_dim"], model_kwargs["num_layers"]
    per_layer = 4 * dim * dim + 1 + 3 * dim * mlp + 2 * dim
    return vocab * dim + layers * per_layer + dim


def flops_per_token(model_kwargs: Mapping[str, Any], seq_len: int | None = None) -> int:
    """Training FLOPs (forward + backward) per token of a window of `seq_len` tokens (default:
    the model's `seq_len`), the usual dense-transformer count (Kaplan et al. 2020; PaLM's MFU):

      6 · N_matmul + 12 · num_layers · d · seq_len

    N_matmul counts the weights a token meets in a matmul: per layer 4d² (q, k, v, out) and 3·d·m
    (the GLU MLP), plus V·d for the output layer (the tied embedding; the input lookup is no
    matmul). 2 FLOPs per multiply-add forward, twice that backward: 6 per weight. The second
    term is attention's q·kᵀ and weights·v (2 · 2 · seq_len · d per token and layer forward,
    x3 for training), counted over the full square as PyTorch's FlopCounterMode and XLA's cost
    analysis count it, although a causal mask leaves half of it to compute. Norms, RoPE,
    softmax and the loss (O(d) or O(V) per token) are left out.
    """
    vocab, dim = model_kwargs["vocab_size"], model_kwargs["emb_dim"]
    mlp, layers = model_kwargs["mlp_dim"], model_kwargs["num_layers"]
    seq_len = model_kwargs["seq_len"] if seq_len is None else seq_len
    matmul_weights = layers * (4 * dim * dim + 3 * dim * mlp) + vocab * dim
    return 6 * matmul_weights + 12 * layers * dim * seq_len
