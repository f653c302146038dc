"""Batched beam search and greedy decoding in JAX for wmt (docs/workloads.md, wmt), driving a
decoder through the step interface that `decode.py` describes.

The same search as decode_torch.py, step for step, so both frameworks find the same sequences.
The loop over positions is a `lax.while_loop` (one per cache length when the cache grows:
`cache_axis`) that stops early once no unfinished beam of any real source (`valid`) can beat
that source's best finished sequence. Call `beam_search` inside the model's jitted predict
function; the step is traced once per cache length.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from algoperf.workloads.wmt.decode import (
    BEAM_SIZE,
    EOS_ID,
    LENGTH_PENALTY_ALPHA,
    MAX_DECODE_LENGTH,
    PAD_ID,
    length_penalty,
)

StepFn = Callable[[jax.Array, Any, jax.Array, Any], tuple[jax.Array, Any]]


class BeamState(NamedTuple):
    """The search between two steps; decode_torch.BeamState holds the same fields."""

    alive_tokens: jax.Array  # int32 [B, K, L]
    alive_log_probs: jax.Array  # float32 [B, K], -inf: an empty slot
    finished_tokens: jax.Array  # int32 [B, K, L]
    finished_scores: jax.Array  # float32 [B, K], best first, -inf: an empty slot


class BeamSearchOutput(NamedTuple):
    tokens: jax.Array  # int32 [B, K, L]: each source's K best sequences, best first
    scores: jax.Array  # float32 [B, K]: log-probability sum / length_penalty(length)
    steps: jax.Array  # int32 []: positions decoded before the search stopped


def repeat_for_beams(array: jax.Array, beam_size: int) -> jax.Array:
    """Per-source rows [B, ...] -> per-beam rows [B * beam_size, ...] (row b*K + k = row b)."""
    return jnp.repeat(array, beam_size, axis=0)


def initial_state(batch_size: int, beam_size: int, max_len: int) -> BeamState:
    tokens = jnp.full((batch_size, beam_size, max_len), PAD_ID, jnp.int32)
    # One live beam per source: K copies of the empty prefix would fill the beam with duplicates.
    alive = jnp.full((batch_size, beam_size), -jnp.inf, jnp.float32).at[:, 0].set(0.0)
    finished = jnp.full((batch_size, beam_size), -jnp.inf, jnp.float32)
    return BeamState(tokens, alive, tokens, finished)


def _take_rows(tokens: jax.Array, index: jax.Array) -> jax.Array:
    """tokens [B, M, L] gathered along M by index [B, J] -> [B, J, L]."""
    return tokens[jnp.arange(tokens.shape[0])[:, None], index]


def advance(
    state: BeamState,
    log_probs: jax.Array,
    t: jax.Array,
    *,
    eos_id: int = EOS_ID,
    alpha: float = LENGTH_PENALTY_ALPHA,
) -> tuple[BeamState, jax.Array]:
    """One search step (decode_torch.advance): the new state and, for each new alive beam, the
    flat row (b*K + k) of the beam it extends."""
    batch_size, beam_size, max_len = state.alive_tokens.shape
    # 2K candidates hold at least K that do not end in EOS (each beam has one EOS extension),
    # taken from each beam's own 2K best tokens (decode_torch.advance says why).
    per_beam = min(2 * beam_size, log_probs.shape[-1])
    beam_log_probs, beam_tokens = jax.lax.top_k(
        log_probs.reshape(batch_size, beam_size, -1), per_beam
    )
    totals = state.alive_log_probs[:, :, None] + beam_log_probs.astype(jnp.float32)
    top_log_probs, top_index = jax.lax.top_k(totals.reshape(batch_size, -1), 2 * beam_size)
    top_beam = top_index // per_beam
    top_token = jnp.take_along_axis(beam_tokens.reshape(batch_size, -1), top_index, axis=1)
    positions = jnp.arange(max_len)
    top_tokens = jnp.where(
        positions == t, top_token[:, :, None], _take_rows(state.alive_tokens, top_beam)
    )
    final = (top_token == eos_id) | (t == max_len - 1)

    scores = jnp.where(final, top_log_probs / length_penalty(t + 1.0, alpha), -jnp.inf)
    merged = jnp.concatenate([state.finished_scores, scores], 1)
    finished_scores, keep = jax.lax.top_k(merged, beam_size)
    finished_tokens = _take_rows(jnp.concatenate([state.finished_tokens, top_tokens], 1), keep)

    alive_log_probs, keep = jax.lax.top_k(jnp.where(final, -jnp.inf, top_log_probs), beam_size)
    alive_tokens = _take_rows(top_tokens, keep)
    parent = jnp.take_along_axis(top_beam, keep, axis=1)
    rows = jnp.arange(batch_size)[:, None] * beam_size + parent
    new_state = BeamState(alive_tokens, alive_log_probs, finished_tokens, finished_scores)
    return new_state, rows.reshape(-1)


def is_done(state: BeamState, valid: jax.Array, alpha: float = LENGTH_PENALTY_ALPHA) -> jax.Array:
    """decode_torch.is_done: no alive beam of a valid source can still beat its best finished
    one."""
    max_len = state.alive_tokens.shape[2]
    bound = state.alive_log_probs[:, 0] / length_penalty(float(max_len), alpha)
    return jnp.all((state.finished_scores[:, 0] >= bound) | ~valid)


def reorder_cache(cache: Any, rows: jax.Array) -> Any:
    """Every leaf of the cache pytree with its first axis taken at `rows`."""
    return jax.tree_util.tree_map(lambda leaf: jnp.take(leaf, rows, axis=0), cache)


def _valid(valid: jax.Array | None, batch_size: int) -> jax.Array:
    if valid is None:
        return jnp.ones(batch_size, bool)
    return jnp.asarray(valid).astype(bool).reshape(batch_size)


def cache_length(cache: Any, axis: int) -> int:
    """The cache's number of positions: every leaf's size along `axis`, which must agree."""
    lengths = {leaf.shape[axis] for leaf in jax.tree_util.tree_leaves(cache)}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"the cache's leaves hold {sorted(lengths)} positions on axis {axis}.")
    return lengths.pop()


def grow_cache(cache: Any, axis: int, length: int) -> Any:
    """Every leaf zero-padded along `axis` to `length` positions."""

    def grow(leaf):
        padding = [(0, 0)] * leaf.ndim
        padding[axis] = (0, length - leaf.shape[axis])
        return jnp.pad(leaf, padding)

    return jax.tree_util.tree_map(grow, cache)


def cache_lengths(cache: Any, axis: int | None, max_len: int) -> list[int]:
    """The cache's lengths as the search goes: the given one, doubled up to `max_len`."""
    lengths = [max_len if axis is None else min(cache_length(cache, axis), max_len)]
    while lengths[-1] < max_len:
        lengths.append(min(2 * lengths[-1], max_len))
    return lengths


def beam_search(
    step_fn: StepFn,
    cache: Any,
    context: Any = None,
    *,
    batch_size: int,
    beam_size: int = BEAM_SIZE,
    max_len: int = MAX_DECODE_LENGTH,
    eos_id: int = EOS_ID,
    alpha: float = LENGTH_PENALTY_ALPHA,
    cache_axis: int | None = None,
    valid: jax.Array | None = None,
    early_exit: bool = True,
) -> BeamSearchOutput:
    """Beam search over `batch_size` sources; the arguments are decode_torch.beam_search's
    (`t` is a traced int32 scalar). Traceable: call it under `jax.jit`. With `cache_axis`, one
    `lax.while_loop` runs per cache length (so the step is traced once per length) and the
    cache is padded between them."""
    if not jax.tree_util.tree_leaves(cache):
        raise ValueError("the decoder cache holds no array; it must hold the key/value buffers.")

    def body(carry):
        state, cache, t = carry
        previous = state.alive_tokens[:, :, jnp.maximum(t - 1, 0)]
        log_probs, cache = step_fn(previous.reshape(-1), cache, t, context)
        state, rows = advance(state, log_probs, t, eos_id=eos_id, alpha=alpha)
        return state, reorder_cache(cache, rows), t + 1

    valid = _valid(valid, batch_size)
    carry = (initial_state(batch_size, beam_size, max_len), cache, jnp.zeros((), jnp.int32))
    for index, length in enumerate(cache_lengths(cache, cache_axis, max_len)):
        if index:
            carry = (carry[0], grow_cache(carry[1], cache_axis, length), carry[2])

        def keep_going(carry, length=length):
            going = carry[2] < length
            return going & ~is_done(carry[0], valid, alpha) if early_exit else going

        carry = jax.lax.while_loop(keep_going, body, carry)
    state, _, steps = carry
    return BeamSearchOutput(state.finished_tokens, state.finished_scores, steps)


def greedy_search(
    step_fn: StepFn,
    cache: Any,
    context: Any = None,
    *,
    batch_size: int,
    max_len: int = MAX_DECODE_LENGTH,
    eos_id: int = EOS_ID,
    cache_axis: int | None = None,
    valid: jax.Array | None = None,
) -> jax.Array:
    """The most likely token at each position until EOS: int32 [batch_size, max_len], 0 after
    EOS and in padding rows (decode_torch.greedy_search). Traceable: call it under `jax.jit`."""

    def body(carry):
        tokens, finished, cache, t = carry
        previous = tokens[:, jnp.maximum(t - 1, 0)]
        log_probs, cache = step_fn(previous, cache, t, context)
        chosen = jnp.where(finished, PAD_ID, jnp.argmax(log_probs, -1).astype(jnp.int32))
        tokens = jnp.where(jnp.arange(max_len) == t, chosen[:, None], tokens)
        return tokens, finished | (chosen == eos_id), cache, t + 1

    tokens = jnp.full((batch_size, max_len), PAD_ID, jnp.int32)
    carry = (tokens, ~_valid(valid, batch_size), cache, jnp.zeros((), jnp.int32))
    for index, length in enumerate(cache_lengths(cache, cache_axis, max_len)):
        if index:
            carry = (*carry[:2], grow_cache(carry[2], cache_axis, length), carry[3])

        def keep_going(carry, length=length):
            return (carry[3] < length) & ~jnp.all(carry[1])

        carry = jax.lax.while_loop(keep_going, body, carry)
    return carry[0]


# A toy decoder for tests and benchmarks (decode.toy_decoder_params), not a translation model;
# the same function as decode_torch's toy.


def toy_params(params: dict) -> dict[str, jax.Array]:
    """decode.toy_decoder_params' numpy weights as jax arrays."""
    return {name: jnp.asarray(value) for name, value in params.items()}


def toy_cache(params: dict[str, jax.Array], rows: int, max_len: int) -> dict:
    """The toy's empty key/value cache: [rows, max_len, dim] each."""
    zeros = jnp.zeros((rows, max_len, params["embed"].shape[1]), params["embed"].dtype)
    return {"keys": zeros, "values": zeros}


def toy_forward(params: dict, inputs: jax.Array, context: jax.Array) -> jax.Array:
    """Log-probabilities [N, T, V] for decoder inputs [N, T] (decode_torch.toy_forward)."""
    length = inputs.shape[1]
    x = params["embed"][inputs] + params["position"][:length] + context[:, None, :]
    queries, keys, values = (x @ params[name] for name in ("query", "key", "value"))
    logits = jnp.einsum("ntd,nsd->nts", queries, keys) / keys.shape[-1] ** 0.5
    causal = jnp.tril(jnp.ones((length, length), bool))
    weights = jax.nn.softmax(jnp.where(causal, logits, -jnp.inf), axis=-1)
    hidden = jnp.tanh(x + weights @ values)
    return jax.nn.log_softmax(hidden @ params["output"] + params["output_bias"], axis=-1)


def toy_step(params: dict, tokens: jax.Array, cache: dict, t: jax.Array, context):
    """The toy through the step interface, with its key/value cache (decode_torch.toy_step)."""
    positions = jnp.arange(cache["keys"].shape[1])
    x = params["embed"][tokens] + params["position"][t] + context
    here = (positions == t)[None, :, None]
    keys = jnp.where(here, (x @ params["key"])[:, None, :], cache["keys"])
    values = jnp.where(here, (x @ params["value"])[:, None, :], cache["values"])
    logits = jnp.einsum("nd,nld->nl", x @ params["query"], keys) / keys.shape[-1] ** 0.5
    weights = jax.nn.softmax(jnp.where(positions > t, -jnp.inf, logits), axis=-1)
    hidden = jnp.tanh(x + jnp.einsum("nl,nld->nd", weights, values))
    log_probs = jax.nn.log_softmax(hidden @ params["output"] + params["output_bias"], axis=-1)
    return log_probs, {"keys": keys, "values": values}


def toy_uncached_step(params: dict, tokens: jax.Array, cache: dict, t: jax.Array, context):
    """The toy without a key/value cache (decode_torch.toy_uncached_step)."""
    positions = jnp.arange(cache["inputs"].shape[1])
    inputs = jnp.where(positions == t, tokens[:, None], cache["inputs"])
    log_probs = toy_forward(params, inputs, context)
    return log_probs[jnp.arange(inputs.shape[0]), t], {"inputs": inputs}
