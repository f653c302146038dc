"""wmt in PyTorch: the encoder-decoder Transformer, its label-smoothed token cross-entropy, and
the decoder step with a key/value cache that beam search drives (docs/workloads.md, "wmt").

Pre-LN blocks (post-LN in wmt_post_ln, without the final norms), one embedding matrix shared by
the encoder input, the decoder input and the output layer (logits = h · Eᵀ / √d), fixed
sinusoidal positions (packed rows use their given positions), attention projections without
bias (q, k and v fused in self-attention, k and v in cross-attention), a ReLU FFN (tanh with a
GLU in wmt_glu_tanh). Attention runs through `F.scaled_dot_product_attention` with an additive
mask of -0.7 · float32 max where a key is hidden (the value `jax.nn.dot_product_attention`
uses): a query row that sees no key (a padding row) then averages all values in both
frameworks, where a boolean mask gives 0 in PyTorch and the mean in JAX. Dropout (one rate)
after embedding + position, on the attention probabilities, on each residual branch, after the
FFN activation and after the FFN.

Module names give the parameter types (algoperf/param_types.py): `shared_embedding`
(embedding, also the output layer), `*_norm` (layer norms), `self_attn.in_proj` (attention
QKV), `cross_attn.q_proj` / `cross_attn.kv_proj` (Q / KV), `*.out_proj` (attention out), the
FFN's `mlp.linear1`, `mlp.glu_linear`, `mlp.linear2` (weights and biases).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from algoperf import spec
from algoperf.torch.workload import TorchWorkload, unwrap
from algoperf.workloads.wmt import decode_torch
from algoperf.workloads.wmt import metrics as wmt_metrics
from algoperf.workloads.wmt.decode import BEAM_SIZE

MAX_LEN = 256
LAYER_NORM_EPS = 1e-6
FFN_BIAS_STD = 1e-6
INITIAL_CACHE_LEN = 32
"""Decoding starts with a key/value cache this long; the search doubles it as needed (most
batches end long before 256 positions, and each step reads the whole cache)."""
CACHE_AXIS = 3
"""The positions' axis of the cache's tensors ([N, 2, H, positions, Dh])."""
MASKED = -0.7 * float(np.finfo(np.float32).max)
"""Added to the scores of hidden keys: jax.nn.dot_product_attention's fill value."""
ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh}


def activation_fn(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown wmt activation {name!r}; choose one of {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[name]


def position_table(max_len: int, dim: int) -> np.ndarray:
    """float32 [max_len, dim]: sin in the first dim/2 features, cos in the rest, frequencies
    exp(-i · ln(10⁴) / (dim/2 - 1)); computed in float64 and rounded once (model_jax.py holds
    the same function)."""
    half = dim // 2
    frequencies = np.exp(np.arange(half) * (-math.log(10_000.0) / (half - 1)))
    angles = np.arange(max_len)[:, None] * frequencies[None, :]
    table = np.zeros((max_len, dim))
    table[:, :half], table[:, half : 2 * half] = np.sin(angles), np.cos(angles)
    return table.astype(np.float32)


def shift_right(targets_BL: torch.Tensor, segments_BL: torch.Tensor | None = None):
    """The decoder input: targets moved one position right with 0 in front, and 0 at the start
    of every packed segment (which would otherwise see the previous example's EOS; the cached
    decoder always starts from 0)."""
    shifted = F.pad(targets_BL[:, :-1], (1, 0))
    if segments_BL is not None:
        previous = F.pad(segments_BL[:, :-1], (1, 0))
        shifted = torch.where(segments_BL == previous, shifted, torch.zeros_like(shifted))
    return shifted


def real_tokens(tokens_BL: torch.Tensor) -> torch.Tensor:
    """bool [B, L]: the positions at or before each row's last non-zero id. Every sentence
    ends in EOS and rows are filled from the front, so this is every real id, an unknown-piece
    id 0 inside a sentence included (as the pipeline's weights count it), and no padding."""
    positions = torch.arange(tokens_BL.shape[-1], device=tokens_BL.device)
    last = torch.where(tokens_BL != 0, positions, -1).amax(-1, keepdim=True)
    return positions <= last


def attention_bias(
    query_valid_BQ: torch.Tensor,
    key_valid_BK: torch.Tensor,
    query_segments_BQ: torch.Tensor | None = None,
    key_segments_BK: torch.Tensor | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """float32 [B, 1, Q, K]: 0 where a (non-padding) query may see a (non-padding) key of its
    own segment (and not after it, when causal), MASKED elsewhere."""
    allowed = query_valid_BQ[:, :, None] & key_valid_BK[:, None, :]
    if query_segments_BQ is not None:
        allowed = allowed & (query_segments_BQ[:, :, None] == key_segments_BK[:, None, :])
    if causal:
        length = allowed.shape[-1]
        lower = torch.ones(length, length, dtype=torch.bool, device=allowed.device).tril()
        allowed = allowed & lower
    zero = torch.zeros((), device=allowed.device)
    return torch.where(allowed, zero, torch.full_like(zero, MASKED))[:, None]


def _split_heads(x_BLD: torch.Tensor, num_heads: int) -> torch.Tensor:
    batch, length, dim = x_BLD.shape
    return x_BLD.view(batch, length, num_heads, dim // num_heads).transpose(1, 2)


def _merge_heads(x_BHLD: torch.Tensor) -> torch.Tensor:
    batch, heads, length, head_dim = x_BHLD.shape
    return x_BHLD.transpose(1, 2).reshape(batch, length, heads * head_dim)


class SelfAttention(nn.Module):
    """Multi-head self-attention, q/k/v fused in `in_proj`, no biases; the queries are
    multiplied by `temperature` after their projection."""

    def __init__(self, dim: int, num_heads: int, temperature: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"wmt: emb_dim {dim} must split into num_heads {num_heads} heads.")
        self.num_heads, self.temperature = num_heads, temperature
        self.in_proj = nn.Linear(dim, 3 * dim, bias=False)
        self.out_proj = nn.Linear(dim, dim, bias=False)

    def _qkv(self, x_BLD):
        q, k, v = (_split_heads(t, self.num_heads) for t in self.in_proj(x_BLD).chunk(3, -1))
        return (q * self.temperature if self.temperature != 1.0 else q), k, v

    def forward(self, x_BLD, bias, dropout_rate: float) -> torch.Tensor:
        q, k, v = self._qkv(x_BLD)
        rate = dropout_rate if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=rate)
        return self.out_proj(_merge_heads(out))

    def step(self, x_N1D, cache: torch.Tensor, t: torch.Tensor, bias):
        """One position: its key and value written in place at `t` of the cache (keys and
        values, [N, 2, H, max_len, Dh]: one small write, not a copy of the cache), attention
        over the positions `bias` leaves visible (<= t). Returns the output and the cache."""
        q, k, v = self._qkv(x_N1D)
        cache.index_copy_(3, t.reshape(1).long(), torch.stack((k, v), dim=1))
        out = F.scaled_dot_product_attention(q, cache[:, 0], cache[:, 1], attn_mask=bias)
        return self.out_proj(_merge_heads(out)), cache


class CrossAttention(nn.Module):
    """Multi-head attention from the decoder to the encoder output: `q_proj`, k/v fused in
    `kv_proj`, no biases; the queries times `temperature`."""

    def __init__(self, dim: int, num_heads: int, temperature: float) -> None:
        super().__init__()
        self.num_heads, self.temperature = num_heads, temperature
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.kv_proj = nn.Linear(dim, 2 * dim, bias=False)
        self.out_proj = nn.Linear(dim, dim, bias=False)

    def keys_values(self, encoded_BSD) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv_proj(encoded_BSD).chunk(2, -1)
        return _split_heads(k, self.num_heads), _split_heads(v, self.num_heads)

    def forward(self, x_BLD, keys_values, bias, dropout_rate: float) -> torch.Tensor:
        q = _split_heads(self.q_proj(x_BLD), self.num_heads)
        if self.temperature != 1.0:
            q = q * self.temperature
        rate = dropout_rate if self.training else 0.0
        out = F.scaled_dot_product_attention(q, *keys_values, attn_mask=bias, dropout_p=rate)
        return self.out_proj(_merge_heads(out))


class Mlp(nn.Module):
    """linear1 -> activation [x glu_linear(input)] -> dropout -> linear2 -> dropout."""

    def __init__(self, dim: int, mlp_dim: int, activation: str, glu: bool) -> None:
        super().__init__()
        self.activation = activation_fn(activation)
        self.linear1 = nn.Linear(dim, mlp_dim)
        self.glu_linear = nn.Linear(dim, mlp_dim) if glu else None
        self.linear2 = nn.Linear(mlp_dim, dim)

    def forward(self, x_BLD, dropout_rate: float) -> torch.Tensor:
        hidden = self.activation(self.linear1(x_BLD))
        if self.glu_linear is not None:
            hidden = hidden * self.glu_linear(x_BLD)
        hidden = F.dropout(hidden, dropout_rate, self.training)
        return F.dropout(self.linear2(hidden), dropout_rate, self.training)


def _layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=LAYER_NORM_EPS)


class _Block(nn.Module):
    """A residual branch pre-LN (x + f(norm(x))) or post-LN (norm(x + f(x)))."""

    pre_ln: bool

    def residual(self, x, norm: nn.Module, branch) -> torch.Tensor:
        if self.pre_ln:
            return x + branch(norm(x))
        return norm(x + branch(x))


class EncoderLayer(_Block):
    def __init__(self, dim, num_heads, mlp_dim, *, pre_ln, temperature, activation, glu):
        super().__init__()
        self.pre_ln = pre_ln
        self.attn_norm = _layer_norm(dim)
        self.self_attn = SelfAttention(dim, num_heads, temperature)
        self.mlp_norm = _layer_norm(dim)
        self.mlp = Mlp(dim, mlp_dim, activation, glu)

    def forward(self, x_BLD, bias, dropout_rate: float) -> torch.Tensor:
        def attend(h):
            return F.dropout(self.self_attn(h, bias, dropout_rate), dropout_rate, self.training)

        x_BLD = self.residual(x_BLD, self.attn_norm, attend)
        return self.residual(x_BLD, self.mlp_norm, lambda h: self.mlp(h, dropout_rate))


class DecoderLayer(_Block):
    def __init__(self, dim, num_heads, mlp_dim, *, pre_ln, temperature, activation, glu):
        super().__init__()
        self.pre_ln = pre_ln
        self.self_attn_norm = _layer_norm(dim)
        self.self_attn = SelfAttention(dim, num_heads, temperature)
        self.cross_attn_norm = _layer_norm(dim)
        self.cross_attn = CrossAttention(dim, num_heads, temperature)
        self.mlp_norm = _layer_norm(dim)
        self.mlp = Mlp(dim, mlp_dim, activation, glu)

    def _cross_and_mlp(self, y, keys_values, cross_bias, dropout_rate: float) -> torch.Tensor:
        def cross(h):
            out = self.cross_attn(h, keys_values, cross_bias, dropout_rate)
            return F.dropout(out, dropout_rate, self.training)

        y = self.residual(y, self.cross_attn_norm, cross)
        return self.residual(y, self.mlp_norm, lambda h: self.mlp(h, dropout_rate))

    def forward(self, y_BLD, keys_values, self_bias, cross_bias, dropout_rate: float):
        def attend(h):
            return F.dropout(
                self.self_attn(h, self_bias, dropout_rate), dropout_rate, self.training
            )

        y_BLD = self.residual(y_BLD, self.self_attn_norm, attend)
        return self._cross_and_mlp(y_BLD, keys_values, cross_bias, dropout_rate)

    def step(self, y_N1D, cache, t, self_bias, keys_values, cross_bias, beam_size: int):
        """One decoding position of N = B · beam_size rows; the encoder's keys and values and
        `cross_bias` hold B rows (one per source), so the beams of a source attend to them
        together as a query sequence of length beam_size, unrepeated."""
        new_cache = {}

        def attend(h):
            out, new_cache["self"] = self.self_attn.step(h, cache, t, self_bias)
            return out

        y_N1D = self.residual(y_N1D, self.self_attn_norm, attend)
        rows, _, dim = y_N1D.shape
        y_BKD = y_N1D.reshape(rows // beam_size, beam_size, dim)
        y_BKD = self._cross_and_mlp(y_BKD, keys_values, cross_bias, 0.0)
        return y_BKD.reshape(rows, 1, dim), new_cache["self"]


class Transformer(nn.Module):
    """(inputs [B, S], targets [B, L], optional packed positions and segment ids) -> float32
    logits [B, L, vocab_size] of each target token, teacher-forced."""

    def __init__(
        self,
        *,
        vocab_size: int,
        emb_dim: int,
        num_heads: int,
        mlp_dim: int,
        num_layers: int,
        pre_ln: bool = True,
        attention_temp: float = 1.0,
        activation: str = "relu",
        glu: bool = False,
        max_len: int = MAX_LEN,
    ) -> None:
        super().__init__()
        self.emb_dim, self.num_heads, self.pre_ln = emb_dim, num_heads, pre_ln
        options = {
            "pre_ln": pre_ln,
            "temperature": attention_temp,
            "activation": activation,
            "glu": glu,
        }
        self.shared_embedding = nn.Embedding(vocab_size, emb_dim)
        self.encoder = nn.ModuleDict(
            {
                "layers": nn.ModuleList(
                    EncoderLayer(emb_dim, num_heads, mlp_dim, **options) for _ in range(num_layers)
                )
            }
        )
        self.decoder = nn.ModuleDict(
            {
                "layers": nn.ModuleList(
                    DecoderLayer(emb_dim, num_heads, mlp_dim, **options) for _ in range(num_layers)
                )
            }
        )
        if pre_ln:  # post-LN blocks end in a norm already
            self.encoder["final_norm"] = _layer_norm(emb_dim)
            self.decoder["final_norm"] = _layer_norm(emb_dim)
        table = torch.from_numpy(position_table(max_len, emb_dim))
        self.register_buffer("positions", table, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Upstream's init: the embedding ~ N(0, 1); every projection xavier-uniform (q, k and v
        each over its own d x d block, as when they are separate matrices); FFN biases
        ~ N(0, 1e-6); norms scale 1, bias 0."""
        if self.shared_embedding.weight.is_meta:
            return
        nn.init.normal_(self.shared_embedding.weight, std=1.0)
        fused = set()
        for module in self.modules():
            if isinstance(module, SelfAttention | CrossAttention):
                projection = module.in_proj if isinstance(module, SelfAttention) else module.kv_proj
                fused.add(projection)
                for block in projection.weight.split(self.emb_dim, dim=0):
                    nn.init.xavier_uniform_(block)
        for module in self.modules():
            if isinstance(module, nn.Linear) and module not in fused:
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.normal_(module.bias, std=FFN_BIAS_STD)

    # --- the teacher-forced forward -----------------------------------------------------------
    def embed(self, tokens_BL, positions_BL=None, dropout_rate: float = 0.0) -> torch.Tensor:
        if positions_BL is None:
            position_BLD = self.positions[: tokens_BL.shape[1]]
        else:
            position_BLD = self.positions[positions_BL.long()]
        x_BLD = self.shared_embedding(tokens_BL.long()) + position_BLD
        return F.dropout(x_BLD, dropout_rate, self.training)

    def encode(self, inputs_BS, inputs_positions=None, inputs_segmentation=None, dropout_rate=0.0):
        """The encoder output [B, S, D] (its final norm applied in pre-LN)."""
        valid = real_tokens(inputs_BS)
        bias = attention_bias(valid, valid, inputs_segmentation, inputs_segmentation)
        x_BSD = self.embed(inputs_BS, inputs_positions, dropout_rate)
        for layer in self.encoder["layers"]:
            x_BSD = layer(x_BSD, bias, dropout_rate)
        return self.encoder["final_norm"](x_BSD) if self.pre_ln else x_BSD

    def output_logits(self, y_BLD: torch.Tensor) -> torch.Tensor:
        """The decoder's last hidden states (final norm applied) -> logits h · Eᵀ / √d."""
        return F.linear(y_BLD, self.shared_embedding.weight) / math.sqrt(self.emb_dim)

    def forward(
        self,
        inputs_BS: torch.Tensor,
        targets_BL: torch.Tensor,
        inputs_positions: torch.Tensor | None = None,
        targets_positions: torch.Tensor | None = None,
        inputs_segmentation: torch.Tensor | None = None,
        targets_segmentation: torch.Tensor | None = None,
        dropout_rate: float = 0.0,
    ) -> torch.Tensor:
        encoded = self.encode(inputs_BS, inputs_positions, inputs_segmentation, dropout_rate)
        source_valid, target_valid = real_tokens(inputs_BS), real_tokens(targets_BL)
        self_bias = attention_bias(
            target_valid, target_valid, targets_segmentation, targets_segmentation, causal=True
        )
        cross_bias = attention_bias(
            target_valid, source_valid, targets_segmentation, inputs_segmentation
        )
        y_BLD = self.embed(
            shift_right(targets_BL, targets_segmentation), targets_positions, dropout_rate
        )
        for layer in self.decoder["layers"]:
            keys_values = layer.cross_attn.keys_values(encoded)
            y_BLD = layer(y_BLD, keys_values, self_bias, cross_bias, dropout_rate)
        if self.pre_ln:
            y_BLD = self.decoder["final_norm"](y_BLD)
        return self.output_logits(y_BLD)

    # --- decoding with a key/value cache (workloads/wmt/decode.py: the step interface) -------
    def decode_context(self, inputs_BS: torch.Tensor) -> dict[str, Any]:
        """What every decoding step reads, one row per source: each decoder layer's
        cross-attention keys and values of the encoded sources, and the sources' padding
        bias [B, 1, 1, S]."""
        encoded = self.encode(inputs_BS)
        valid = real_tokens(inputs_BS)[:, None, None, :]
        zero = torch.zeros((), device=inputs_BS.device)
        return {
            "keys_values": [
                layer.cross_attn.keys_values(encoded) for layer in self.decoder["layers"]
            ],
            "source_bias": torch.where(valid, zero, torch.full_like(zero, MASKED)),
        }

    def init_cache(self, rows: int, max_len: int = MAX_LEN) -> list[torch.Tensor]:
        """Zero self-attention keys and values, [rows, 2, H, max_len, Dh] for every decoder
        layer (one tensor a layer: half the reorders of separate keys and values)."""
        weight = self.shared_embedding.weight
        shape = (rows, 2, self.num_heads, max_len, self.emb_dim // self.num_heads)
        return [weight.new_zeros(shape) for _ in self.decoder["layers"]]

    def decode_step(self, tokens_N: torch.Tensor, cache: list, t: torch.Tensor, context: dict):
        """decode.py's step: the previous tokens [N] (0 at t = 0) -> log-probabilities [N, V]
        of the token at position `t`, and the cache with position t written. N is a multiple
        of the context's sources (N = sources x beams)."""
        max_len = cache[0].shape[3]
        beam_size = tokens_N.shape[0] // context["source_bias"].shape[0]
        # index_select, not positions[t]: that would read t on the host (a graph break).
        position = self.positions.index_select(0, t.reshape(1).long())
        y_N1D = (self.shared_embedding(tokens_N.long()) + position)[:, None]
        visible = torch.arange(max_len, device=t.device) <= t
        zero = torch.zeros((), device=t.device)
        self_bias = torch.where(visible, zero, torch.full_like(zero, MASKED))[None, None, None]
        new_cache = []
        for layer, layer_cache, keys_values in zip(
            self.decoder["layers"], cache, context["keys_values"], strict=True
        ):
            y_N1D, layer_cache = layer.step(
                y_N1D, layer_cache, t, self_bias, keys_values, context["source_bias"], beam_size
            )
            new_cache.append(layer_cache)
        if self.pre_ln:
            y_N1D = self.decoder["final_norm"](y_N1D)
        return self.output_logits(y_N1D[:, 0]).log_softmax(-1), new_cache


def translate(
    model: Transformer,
    inputs_BS: torch.Tensor,
    valid_B: torch.Tensor | None = None,
    beam_size: int = BEAM_SIZE,
    compile: bool = False,
) -> decode_torch.BeamSearchOutput:
    """Beam search over every source row: each row's `beam_size` best translations [B, K, L],
    best first, and their scores (L, the rows' length, is also the longest translation: 256 at
    full size). `valid_B`: False for padding rows (they do not hold back the early exit). The
    cache starts at INITIAL_CACHE_LEN positions and doubles as decoding reaches its end.
    `compile`: each search step through torch.compile (once per cache length)."""
    batch_size, length = inputs_BS.shape
    with torch.no_grad():
        context = model.decode_context(inputs_BS)
        cache = model.init_cache(batch_size * beam_size, min(length, INITIAL_CACHE_LEN))
        return decode_torch.beam_search(
            model.decode_step, cache, context, batch_size=batch_size, beam_size=beam_size,
            max_len=length, cache_axis=CACHE_AXIS, valid=valid_B, compile=compile,
        )  # fmt: skip


# --- loss and eval outputs --------------------------------------------------------------------
def token_cross_entropy(
    label_batch: torch.Tensor,
    logits_batch: torch.Tensor,
    mask_batch: torch.Tensor | None = None,
    label_smoothing: float | torch.Tensor = 0.0,
) -> dict[str, torch.Tensor]:
    """Per-token cross-entropy against labels smoothed to (1 - α)·onehot + α/V, in float32;
    upstream's contract (`summed`, `n_valid_examples` = the mask's sum, i.e. the real target
    tokens, or every token without a mask; `per_example` [B, L], masked).

    Written as lse - (1 - α)·z[target] - α·mean(z) (z the logits, lse their logsumexp), equal
    to `F.cross_entropy(label_smoothing=α)` (tests/test_wmt_model.py), with α a float or a 0-d
    tensor and no [B, L, V] log-probabilities kept for the backward pass.
    """
    logits = logits_batch.float()
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


def wmt_eval_outputs(logits, batch) -> dict[str, torch.Tensor]:
    """One eval batch's sums over its real target tokens (workloads/wmt/metrics.py reads them):
    the unsmoothed token loss, the correct argmax tokens, the token count, and the real rows;
    padding (weight 0) adds exactly 0 whatever its values."""
    targets, weights = batch["targets"], batch["weights"].float()
    losses = token_cross_entropy(targets, logits, weights)["per_example"]
    real = weights > 0
    zero = torch.zeros_like(weights)
    correct = (logits.argmax(-1) == targets).float()
    valid = real.any(-1)
    return {
        "loss_sum": torch.where(real, losses, zero).sum(),
        "correct": torch.where(real, correct * weights, zero).sum(),
        "token_count": weights.sum(),
        "num_examples": valid.float().sum(),
        "valid": valid.float(),
    }


class Workload(wmt_metrics.BleuEval, TorchWorkload):
    """Rows of a batch are sentence pairs (train rows pack several, with positions and segment
    ids); the model's output per row is [L, vocab] float32 logits."""

    output_param_prefixes = ("shared_embedding.",)

    def build_model(self, **model_kwargs) -> nn.Module:
        return Transformer(**model_kwargs)

    def model_inputs(self, batch) -> tuple:
        return (
            batch["inputs"],
            batch["targets"],
            *(batch.get(key) for key in wmt_metrics.PACKING_KEYS),
        )

    def loss_fn(
        self,
        label_batch: spec.Tensor,
        logits_batch: spec.Tensor,
        mask_batch: spec.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, spec.Tensor]:
        return token_cross_entropy(label_batch, logits_batch, mask_batch, label_smoothing)

    def eval_outputs(self, logits, batch) -> dict[str, torch.Tensor]:
        return wmt_eval_outputs(logits, batch)

    def _eval_compute(self, params, model_state, rng):
        """Each eval batch's teacher-forced outputs, and the beam-search translations with
        their references for BLEU. The search steps are compiled where the runner compiled the
        model and the device is a GPU (on CPUs the compile costs more than it saves)."""
        outputs_of = super()._eval_compute(params, model_state, rng)
        model = unwrap(params)
        compile_search = hasattr(params, "_orig_mod") and self._dist.device.type == "cuda"

        def compute(batch):
            outputs = dict(outputs_of(batch))
            valid = batch["weights"].any(dim=-1)
            found = translate(model, batch["inputs"], valid, compile=compile_search)
            outputs["predictions"] = found.tokens[:, 0]
            outputs["targets"] = batch["targets"]
            return outputs

        return compute
