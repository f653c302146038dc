"""wmt in JAX/flax: the encoder-decoder Transformer, its label-smoothed token cross-entropy, and
the decoder step with a key/value cache that beam search drives (docs/workloads.md, "wmt").

The same model as model_torch.py, module for module (`shared_embedding`,
`encoder/layers_0/self_attn/in_proj`, `decoder/layers_0/cross_attn/kv_proj`, `*_norm`,
`mlp/linear1`, ...), so weights map by name and parameter types agree; q, k and v are fused as
there (upstream's JAX keeps them apart: 185 tensors against 155). Attention goes through
`jax.nn.dot_product_attention` with boolean masks, except in TRAIN mode at a dropout rate that
may be non-zero, where the same computation is written out so the attention probabilities can
be dropped (upstream's JAX had no attention dropout at v0.6, its PyTorch did; both drop them
here, at the one `dropout_rate`).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from algoperf import spec
from algoperf.jax import sharding
from algoperf.jax.layers import dropout
from algoperf.jax.workload import JaxWorkload
from algoperf.workloads.wmt import decode_jax
from algoperf.workloads.wmt import metrics as wmt_metrics
from algoperf.workloads.wmt.decode import BEAM_SIZE

MAX_LEN = 256
LAYER_NORM_EPS = 1e-6
FFN_BIAS_STD = 1e-6
INITIAL_CACHE_LEN = 32
"""Decoding starts with a key/value cache this long; the search doubles it as needed (most
batches end long before 256 positions, and each step reads the whole cache)."""
CACHE_AXIS = 1
"""The positions' axis of the cache's leaves ([N, positions, H, Dh])."""
MASKED = -0.7 * float(np.finfo(np.float32).max)
"""Where a key is hidden: jax.nn.dot_product_attention's fill value (model_torch.py adds it)."""
ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh}


def activation_fn(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown wmt activation {name!r}; choose one of {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[name]


def position_table(max_len: int, dim: int) -> np.ndarray:
    """float32 [max_len, dim]: sin in the first dim/2 features, cos in the rest, frequencies
    exp(-i · ln(10⁴) / (dim/2 - 1)); computed in float64 and rounded once (as model_torch.py)."""
    half = dim // 2
    frequencies = np.exp(np.arange(half) * (-math.log(10_000.0) / (half - 1)))
    angles = np.arange(max_len)[:, None] * frequencies[None, :]
    table = np.zeros((max_len, dim))
    table[:, :half], table[:, half : 2 * half] = np.sin(angles), np.cos(angles)
    return table.astype(np.float32)


def shift_right(targets_BL, segments_BL=None):
    """The decoder input: targets one position right with 0 in front, and 0 at the start of
    every packed segment (model_torch.shift_right)."""
    shifted = jnp.pad(targets_BL[:, :-1], ((0, 0), (1, 0)))
    if segments_BL is not None:
        previous = jnp.pad(segments_BL[:, :-1], ((0, 0), (1, 0)))
        shifted = jnp.where(segments_BL == previous, shifted, jnp.zeros_like(shifted))
    return shifted


def real_tokens(tokens_BL):
    """bool [B, L]: the positions at or before each row's last non-zero id: every real id, an
    unknown-piece id 0 inside a sentence included, and no padding (model_torch.real_tokens)."""
    positions = jnp.arange(tokens_BL.shape[-1])
    last = jnp.where(tokens_BL != 0, positions, -1).max(-1, keepdims=True)
    return positions <= last


def attention_mask(query_valid, key_valid, query_segments=None, key_segments=None, causal=False):
    """bool [B, 1, Q, K]: a (non-padding) query may see a (non-padding) key of its own segment
    (and not after it, when causal)."""
    allowed = query_valid[:, :, None] & key_valid[:, None, :]
    if query_segments is not None:
        allowed = allowed & (query_segments[:, :, None] == key_segments[:, None, :])
    if causal:
        length = allowed.shape[-1]
        allowed = allowed & jnp.tril(jnp.ones((length, length), bool))
    return allowed[:, None]


def attend(module: nn.Module, q, k, v, mask, train: bool, dropout_rate):
    """Softmax attention of q [B, Q, H, Dh] over k, v [B, K, H, Dh] where `mask` allows, scale
    1/√Dh; the attention probabilities dropped at `dropout_rate` in TRAIN mode."""
    if not train or (isinstance(dropout_rate, int | float) and dropout_rate == 0.0):
        return jax.nn.dot_product_attention(q, k, v, mask=mask)
    # jax.nn.dot_product_attention's own steps (XLA path), so both give the same rounding.
    scores = jnp.einsum("BTNH,BSNH->BNTS", q, k) * jnp.float32(1.0 / np.sqrt(q.shape[-1]))
    probs = jax.nn.softmax(jnp.where(mask, scores, jnp.float32(MASKED)), axis=-1)
    probs = dropout(module, probs, dropout_rate, train)
    return jnp.einsum("BNTS,BSNH->BTNH", probs, v)


def fused_xavier(parts: int):
    """xavier-uniform for a kernel [d, parts · d] of `parts` fused d x d projections: each block
    drawn as its own matrix (so q, k and v are initialised as separate projections)."""
    xavier = nn.initializers.xavier_uniform()

    def init(key, shape, dtype=jnp.float32):
        width = shape[1] // parts
        keys = jax.random.split(key, parts)
        return jnp.concatenate([xavier(k, (shape[0], width), dtype) for k in keys], axis=1)

    return init


def _projection(features: int, parts: int = 1) -> nn.Dense:
    init = fused_xavier(parts) if parts > 1 else nn.initializers.xavier_uniform()
    return nn.Dense(features, use_bias=False, kernel_init=init)


def _layer_norm() -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LAYER_NORM_EPS)


def _heads(x_BLD, num_heads: int):
    batch, length, dim = x_BLD.shape
    return x_BLD.reshape(batch, length, num_heads, dim // num_heads)


def _merge(x_BLHD):
    return x_BLHD.reshape(*x_BLHD.shape[:2], -1)


class SelfAttention(nn.Module):
    """q/k/v fused in `in_proj`, no biases, queries times `temperature` after projection."""

    dim: int
    num_heads: int
    temperature: float

    def setup(self):
        if self.dim % self.num_heads:
            raise ValueError(
                f"wmt: emb_dim {self.dim} must split into num_heads {self.num_heads} heads."
            )
        self.in_proj = _projection(3 * self.dim, parts=3)
        self.out_proj = _projection(self.dim)

    def _qkv(self, x_BLD):
        q, k, v = (_heads(t, self.num_heads) for t in jnp.split(self.in_proj(x_BLD), 3, axis=-1))
        return (q * self.temperature if self.temperature != 1.0 else q), k, v

    def __call__(self, x_BLD, mask, train: bool, dropout_rate):
        q, k, v = self._qkv(x_BLD)
        return self.out_proj(_merge(attend(self, q, k, v, mask, train, dropout_rate)))

    def step(self, x_N1D, cache: dict, t, mask):
        """One position: its key and value written at `t` of the cache ([N, max_len, H, Dh]
        each), attention over the positions `mask` allows (<= t)."""
        q, k, v = self._qkv(x_N1D)
        keys = jax.lax.dynamic_update_slice_in_dim(cache["k"], k, t, axis=1)
        values = jax.lax.dynamic_update_slice_in_dim(cache["v"], v, t, axis=1)
        out = jax.nn.dot_product_attention(q, keys, values, mask=mask)
        return self.out_proj(_merge(out)), {"k": keys, "v": values}


class CrossAttention(nn.Module):
    """`q_proj`, k/v fused in `kv_proj`, no biases, queries times `temperature`."""

    dim: int
    num_heads: int
    temperature: float

    def setup(self):
        self.q_proj = _projection(self.dim)
        self.kv_proj = _projection(2 * self.dim, parts=2)
        self.out_proj = _projection(self.dim)

    def keys_values(self, encoded_BSD):
        k, v = jnp.split(self.kv_proj(encoded_BSD), 2, axis=-1)
        return _heads(k, self.num_heads), _heads(v, self.num_heads)

    def __call__(self, x_BLD, keys_values, mask, train: bool, dropout_rate):
        q = _heads(self.q_proj(x_BLD), self.num_heads)
        if self.temperature != 1.0:
            q = q * self.temperature
        out = attend(self, q, *keys_values, mask, train, dropout_rate)
        return self.out_proj(_merge(out))


class Mlp(nn.Module):
    """linear1 -> activation [x glu_linear(input)] -> dropout -> linear2 -> dropout."""

    dim: int
    mlp_dim: int
    activation: str
    glu: bool

    def setup(self):
        def dense(features):
            return nn.Dense(
                features,
                kernel_init=nn.initializers.xavier_uniform(),
                bias_init=nn.initializers.normal(stddev=FFN_BIAS_STD),
            )

        self.linear1 = dense(self.mlp_dim)
        if self.glu:
            self.glu_linear = dense(self.mlp_dim)
        self.linear2 = dense(self.dim)

    def __call__(self, x_BLD, train: bool, dropout_rate):
        hidden = activation_fn(self.activation)(self.linear1(x_BLD))
        if self.glu:
            hidden = hidden * self.glu_linear(x_BLD)
        hidden = dropout(self, hidden, dropout_rate, train)
        return dropout(self, self.linear2(hidden), dropout_rate, train)


def residual(pre_ln: bool, x, norm, branch):
    """x + f(norm(x)) (pre-LN) or norm(x + f(x)) (post-LN)."""
    return x + branch(norm(x)) if pre_ln else norm(x + branch(x))


class EncoderLayer(nn.Module):
    dim: int
    num_heads: int
    mlp_dim: int
    pre_ln: bool
    temperature: float
    activation: str
    glu: bool

    def setup(self):
        self.attn_norm = _layer_norm()
        self.self_attn = SelfAttention(self.dim, self.num_heads, self.temperature)
        self.mlp_norm = _layer_norm()
        self.mlp = Mlp(self.dim, self.mlp_dim, self.activation, self.glu)

    def __call__(self, x_BLD, mask, train: bool, dropout_rate):
        def attention(h):
            out = self.self_attn(h, mask, train, dropout_rate)
            return dropout(self, out, dropout_rate, train)

        x_BLD = residual(self.pre_ln, x_BLD, self.attn_norm, attention)
        return residual(
            self.pre_ln, x_BLD, self.mlp_norm, lambda h: self.mlp(h, train, dropout_rate)
        )


class DecoderLayer(nn.Module):
    dim: int
    num_heads: int
    mlp_dim: int
    pre_ln: bool
    temperature: float
    activation: str
    glu: bool

    def setup(self):
        self.self_attn_norm = _layer_norm()
        self.self_attn = SelfAttention(self.dim, self.num_heads, self.temperature)
        self.cross_attn_norm = _layer_norm()
        self.cross_attn = CrossAttention(self.dim, self.num_heads, self.temperature)
        self.mlp_norm = _layer_norm()
        self.mlp = Mlp(self.dim, self.mlp_dim, self.activation, self.glu)

    def keys_values(self, encoded_BSD):
        return self.cross_attn.keys_values(encoded_BSD)

    def _cross_and_mlp(self, y, keys_values, cross_mask, train: bool, dropout_rate):
        def cross(h):
            out = self.cross_attn(h, keys_values, cross_mask, train, dropout_rate)
            return dropout(self, out, dropout_rate, train)

        y = residual(self.pre_ln, y, self.cross_attn_norm, cross)
        return residual(self.pre_ln, y, self.mlp_norm, lambda h: self.mlp(h, train, dropout_rate))

    def __call__(self, y_BLD, keys_values, self_mask, cross_mask, train: bool, dropout_rate):
        def attention(h):
            out = self.self_attn(h, self_mask, train, dropout_rate)
            return dropout(self, out, dropout_rate, train)

        y_BLD = residual(self.pre_ln, y_BLD, self.self_attn_norm, attention)
        return self._cross_and_mlp(y_BLD, keys_values, cross_mask, train, dropout_rate)

    def step(self, y_N1D, cache, t, self_mask, keys_values, cross_mask, beam_size: int):
        """One decoding position of N = B · beam_size rows against B sources' keys and values:
        the beams of a source attend to them as one query sequence of length beam_size."""
        new_cache = {}

        def attention(h):
            out, new_cache["self"] = self.self_attn.step(h, cache, t, self_mask)
            return out

        y_N1D = residual(self.pre_ln, y_N1D, self.self_attn_norm, attention)
        rows, _, dim = y_N1D.shape
        y_BKD = y_N1D.reshape(rows // beam_size, beam_size, dim)
        y_BKD = self._cross_and_mlp(y_BKD, keys_values, cross_mask, False, 0.0)
        return y_BKD.reshape(rows, 1, dim), new_cache["self"]


class _Stack(nn.Module):
    """The encoder's or decoder's `layers` and, pre-LN, its `final_norm`."""

    layer: type
    num_layers: int
    pre_ln: bool
    layer_options: dict

    def setup(self):
        self.layers = [self.layer(**self.layer_options) for _ in range(self.num_layers)]
        if self.pre_ln:
            self.final_norm = _layer_norm()

    def output(self, x):
        """The stack's output: its last layer's, normalised (pre-LN)."""
        return self.final_norm(x) if self.pre_ln else x


class Transformer(nn.Module):
    """(inputs [B, S], targets [B, L], optional packed positions and segment ids) -> float32
    logits [B, L, vocab_size] of each target token, teacher-forced."""

    vocab_size: int
    emb_dim: int
    num_heads: int
    mlp_dim: int
    num_layers: int
    pre_ln: bool = True
    attention_temp: float = 1.0
    activation: str = "relu"
    glu: bool = False
    max_len: int = MAX_LEN

    def setup(self):
        self.shared_embedding = nn.Embed(
            self.vocab_size, self.emb_dim, embedding_init=nn.initializers.normal(stddev=1.0)
        )
        options = {
            "dim": self.emb_dim,
            "num_heads": self.num_heads,
            "mlp_dim": self.mlp_dim,
            "pre_ln": self.pre_ln,
            "temperature": self.attention_temp,
            "activation": self.activation,
            "glu": self.glu,
        }
        self.encoder = _Stack(EncoderLayer, self.num_layers, self.pre_ln, options)
        self.decoder = _Stack(DecoderLayer, self.num_layers, self.pre_ln, options)
        self.positions = jnp.asarray(position_table(self.max_len, self.emb_dim))

    # --- the teacher-forced forward -----------------------------------------------------------
    def embed(self, tokens_BL, positions_BL=None, train: bool = False, dropout_rate=0.0):
        if positions_BL is None:
            position_BLD = self.positions[: tokens_BL.shape[1]]
        else:
            position_BLD = self.positions[positions_BL]
        x_BLD = self.shared_embedding(tokens_BL.astype(jnp.int32)) + position_BLD
        return dropout(self, x_BLD, dropout_rate, train)

    def encode(
        self, inputs_BS, inputs_positions=None, inputs_segmentation=None, train=False,
        dropout_rate=0.0,
    ):  # fmt: skip
        """The encoder output [B, S, D] (its final norm applied in pre-LN)."""
        valid = real_tokens(inputs_BS)
        mask = attention_mask(valid, valid, inputs_segmentation, inputs_segmentation)
        x_BSD = self.embed(inputs_BS, inputs_positions, train, dropout_rate)
        for layer in self.encoder.layers:
            x_BSD = layer(x_BSD, mask, train, dropout_rate)
        return self.encoder.output(x_BSD)

    def output_logits(self, y_BLD):
        """The decoder's last hidden states (final norm applied) -> logits h · Eᵀ / √d."""
        return self.shared_embedding.attend(y_BLD) / math.sqrt(self.emb_dim)

    def __call__(
        self,
        inputs_BS,
        targets_BL,
        inputs_positions=None,
        targets_positions=None,
        inputs_segmentation=None,
        targets_segmentation=None,
        train: bool = False,
        dropout_rate=0.0,
    ):
        encoded = self.encode(inputs_BS, inputs_positions, inputs_segmentation, train, dropout_rate)
        source_valid, target_valid = real_tokens(inputs_BS), real_tokens(targets_BL)
        self_mask = attention_mask(
            target_valid, target_valid, targets_segmentation, targets_segmentation, causal=True
        )
        cross_mask = attention_mask(
            target_valid, source_valid, targets_segmentation, inputs_segmentation
        )
        decoder_input = shift_right(targets_BL, targets_segmentation)
        y_BLD = self.embed(decoder_input, targets_positions, train, dropout_rate)
        for layer in self.decoder.layers:
            keys_values = layer.keys_values(encoded)
            y_BLD = layer(y_BLD, keys_values, self_mask, cross_mask, train, dropout_rate)
        return self.output_logits(self.decoder.output(y_BLD))

    # --- decoding with a key/value cache (workloads/wmt/decode.py: the step interface) -------
    def decode_context(self, inputs_BS) -> dict[str, Any]:
        """What every decoding step reads, one row per source: each decoder layer's
        cross-attention keys and values of the encoded sources, and the sources' padding
        mask [B, 1, 1, S]."""
        encoded = self.encode(inputs_BS)
        return {
            "keys_values": [layer.keys_values(encoded) for layer in self.decoder.layers],
            "source_mask": real_tokens(inputs_BS)[:, None, None, :],
        }

    def init_cache(self, rows: int, max_len: int = MAX_LEN) -> list[dict[str, jax.Array]]:
        """Zero self-attention keys and values [rows, max_len, H, Dh] for every decoder layer."""
        shape = (rows, max_len, self.num_heads, self.emb_dim // self.num_heads)
        return [
            {"k": jnp.zeros(shape, jnp.float32), "v": jnp.zeros(shape, jnp.float32)}
            for _ in range(self.num_layers)
        ]

    def decode_step(self, tokens_N, cache: list, t, context: dict):
        """decode.py's step: the previous tokens [N] (0 at t = 0) -> log-probabilities [N, V]
        of the token at position `t`, and the cache with position t written. N is a multiple
        of the context's sources (N = sources x beams)."""
        max_len = cache[0]["k"].shape[1]
        beam_size = tokens_N.shape[0] // context["source_mask"].shape[0]
        position = jax.lax.dynamic_index_in_dim(self.positions, t, keepdims=False)
        y_N1D = (self.shared_embedding(tokens_N.astype(jnp.int32)) + position)[:, None]
        self_mask = (jnp.arange(max_len) <= t)[None, None, None]
        new_cache = []
        for layer, layer_cache, keys_values in zip(
            self.decoder.layers, cache, context["keys_values"], strict=True
        ):
            y_N1D, layer_cache = layer.step(
                y_N1D, layer_cache, t, self_mask, keys_values, context["source_mask"], beam_size
            )
            new_cache.append(layer_cache)
        logits = self.output_logits(self.decoder.output(y_N1D)[:, 0])
        return jax.nn.log_softmax(logits, axis=-1), new_cache


def translate(
    model: Transformer, params, inputs_BS, valid_B=None, beam_size: int = BEAM_SIZE
) -> decode_jax.BeamSearchOutput:
    """Beam search over every source row: each row's `beam_size` best translations [B, K, L],
    best first, and their scores (L, the rows' length, is also the longest translation: 256 at
    full size). `valid_B`: False for padding rows (they do not hold back the early exit). The
    cache starts at INITIAL_CACHE_LEN positions and doubles as decoding reaches its end.
    Traceable: call it under `jax.jit`."""
    batch_size, length = inputs_BS.shape
    variables = {"params": params}
    context = model.apply(variables, inputs_BS, method=Transformer.decode_context)
    cache = model.apply(
        variables, batch_size * beam_size, min(length, INITIAL_CACHE_LEN),
        method=Transformer.init_cache,
    )  # fmt: skip

    def step(tokens, cache, t, context):
        return model.apply(variables, tokens, cache, t, context, method=Transformer.decode_step)

    return decode_jax.beam_search(
        step, cache, context, batch_size=batch_size, beam_size=beam_size, max_len=length,
        cache_axis=CACHE_AXIS, valid=valid_B,
    )  # fmt: skip


# --- loss and eval outputs --------------------------------------------------------------------
def token_cross_entropy(label_batch, logits_batch, mask_batch=None, label_smoothing=0.0):
    """Per-token cross-entropy against labels smoothed to (1 - α)·onehot + α/V, in float32
    (model_torch.token_cross_entropy); every argument may be traced."""
    logits = logits_batch.astype(jnp.float32)
    log_normaliser = jax.nn.logsumexp(logits, axis=-1)
    labels = label_batch.astype(jnp.int32)[..., None]
    target_logits = jnp.take_along_axis(logits, labels, axis=-1)[..., 0]
    per_token = (
        log_normaliser
        - (1.0 - label_smoothing) * target_logits
        - label_smoothing * logits.mean(axis=-1)
    )
    if mask_batch is not None:
        per_token = per_token * mask_batch
        n_valid = mask_batch.sum()
    else:
        n_valid = jnp.asarray(per_token.size, jnp.float32)
    return {"summed": per_token.sum(), "n_valid_examples": n_valid, "per_example": per_token}


def wmt_eval_outputs(logits, batch) -> dict[str, jax.Array]:
    """One eval batch's sums over its real target tokens (model_torch.wmt_eval_outputs)."""
    targets, weights = batch["targets"], batch["weights"].astype(jnp.float32)
    losses = token_cross_entropy(targets, logits, weights)["per_example"]
    real = weights > 0
    zero = jnp.zeros_like(weights)
    correct = (logits.argmax(-1) == targets).astype(jnp.float32)
    valid = real.any(-1)
    return {
        "loss_sum": jnp.where(real, losses, zero).sum(),
        "correct": jnp.where(real, correct * weights, zero).sum(),
        "token_count": weights.sum(),
        "num_examples": valid.astype(jnp.float32).sum(),
        "valid": valid.astype(jnp.float32),
    }


class Workload(wmt_metrics.BleuEval, JaxWorkload):
    """Rows of a batch are sentence pairs (train rows pack several, with positions and segment
    ids); the model's output per row is [L, vocab] float32 logits."""

    output_param_prefixes = ("shared_embedding/",)

    def build_model(self, **model_kwargs) -> nn.Module:
        return Transformer(**model_kwargs)

    def init_inputs(self):
        tokens = jnp.ones((1, self.spec.model_kwargs.get("max_len", MAX_LEN)), jnp.int32)
        return (tokens, tokens)

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

    def eval_outputs(self, logits, batch) -> dict[str, jax.Array]:
        return wmt_eval_outputs(logits, batch)

    @functools.cached_property
    def _eval_step(self):
        """One jitted eval batch: the teacher-forced outputs, and the beam-search translations
        with their references for BLEU."""

        def step(params, model_state, batch, rng):
            logits, _ = self.model_fn(
                params, batch, model_state, spec.ForwardPassMode.EVAL, rng, False
            )
            outputs = self.eval_outputs(logits, batch)
            valid = batch["weights"].any(axis=-1)
            found = translate(self.model, params, batch["inputs"], valid)
            outputs["predictions"] = found.tokens[:, 0]
            outputs["targets"] = batch["targets"]
            return outputs

        return jax.jit(step, out_shardings=sharding.get_replicate_sharding())
