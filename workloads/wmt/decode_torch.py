"""Batched beam search and greedy decoding in PyTorch for wmt (docs/workloads.md, wmt), driving
a decoder through the step interface that `decode.py` describes.

The beam state lives in fixed-shape tensors ([batch, beam, max_len] tokens, [batch, beam]
scores), so one search step is one graph: `beam_search(..., compile=True)` compiles it with the
model's step inside once per cache length (the cache may start short and grow: `cache_axis`).
The Python loop runs over positions only, and stops early once no unfinished beam of any real
source (`valid`) can beat that source's best finished sequence (a check that reads one boolean
from the device every `check_every` steps).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from algoperf.workloads.wmt.decode import (
    BEAM_SIZE,
    EOS_ID,
    LENGTH_PENALTY_ALPHA,
    MAX_DECODE_LENGTH,
    PAD_ID,
    length_penalty,
)

StepFn = Callable[[torch.Tensor, Any, torch.Tensor, Any], tuple[torch.Tensor, Any]]


class BeamState(NamedTuple):
    """The search between two steps (B sources, K beams, L = max_len positions)."""

    alive_tokens: torch.Tensor
    """int64 [B, K, L]: the unfinished beams, their tokens so far at positions < t, 0 after."""
    alive_log_probs: torch.Tensor
    """float32 [B, K]: their summed token log-probabilities (-inf: an empty slot)."""
    finished_tokens: torch.Tensor
    """int64 [B, K, L]: the best finished sequences so far (EOS included, 0 after it)."""
    finished_scores: torch.Tensor
    """float32 [B, K], best first: their length-penalised scores (-inf: an empty slot)."""


class BeamSearchOutput(NamedTuple):
    tokens: torch.Tensor
    """int64 [B, K, L]: each source's K best sequences, best first (0 after EOS)."""
    scores: torch.Tensor
    """float32 [B, K]: their scores, log-probability sum / length_penalty(length)."""
    steps: int
    """Positions decoded before the search stopped (max_len without an early exit)."""


def repeat_for_beams(tensor: torch.Tensor, beam_size: int) -> torch.Tensor:
    """Per-source rows [B, ...] -> per-beam rows [B * beam_size, ...] (row b*K + k = row b)."""
    return tensor.repeat_interleave(beam_size, dim=0)


def initial_state(batch_size: int, beam_size: int, max_len: int, device) -> BeamState:
    tokens = torch.full((batch_size, beam_size, max_len), PAD_ID, dtype=torch.int64, device=device)
    alive = torch.full((batch_size, beam_size), -torch.inf, device=device)
    # One live beam per source: K copies of the empty prefix would fill the beam with duplicates.
    alive[:, 0] = 0.0
    finished = torch.full((batch_size, beam_size), -torch.inf, device=device)
    return BeamState(tokens, alive, tokens.clone(), finished)


def _take_rows(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """tokens [B, M, L] gathered along M by index [B, J] -> [B, J, L]."""
    return tokens.gather(1, index[:, :, None].expand(-1, -1, tokens.shape[2]))


def advance(
    state: BeamState,
    log_probs: torch.Tensor,
    t: torch.Tensor,
    *,
    eos_id: int = EOS_ID,
    alpha: float = LENGTH_PENALTY_ALPHA,
) -> tuple[BeamState, torch.Tensor]:
    """One search step: extend every alive beam by every token (`log_probs` [B*K, V] at
    position `t`), keep the K best unfinished extensions alive and merge the finished ones (EOS,
    or any token at the last position) into the K best finished sequences.

    Returns the new state and, for each new alive beam, the flat row (b*K + k) of the beam it
    extends: the cache rows to carry over.
    """
    batch_size, beam_size, max_len = state.alive_tokens.shape
    # 2K candidates hold at least K that do not end in EOS (each beam has one EOS extension).
    # They are among each beam's own 2K best tokens: taking those first spares a [B, K, V]
    # sum (and, for bf16 log-probabilities, a float32 copy of them).
    per_beam = min(2 * beam_size, log_probs.shape[-1])
    beam_log_probs, beam_tokens = log_probs.view(batch_size, beam_size, -1).topk(per_beam, dim=2)
    totals = state.alive_log_probs[:, :, None] + beam_log_probs.float()
    top_log_probs, top_index = totals.view(batch_size, -1).topk(2 * beam_size, dim=1)
    top_beam = top_index // per_beam
    top_token = beam_tokens.view(batch_size, -1).gather(1, top_index)
    positions = torch.arange(max_len, device=t.device)
    top_tokens = torch.where(
        positions == t, top_token[:, :, None], _take_rows(state.alive_tokens, top_beam)
    )
    final = (top_token == eos_id) | (t == max_len - 1)

    scores = torch.where(final, top_log_probs / length_penalty(t + 1.0, alpha), -torch.inf)
    finished_scores, keep = torch.cat([state.finished_scores, scores], 1).topk(beam_size, dim=1)
    finished_tokens = _take_rows(torch.cat([state.finished_tokens, top_tokens], 1), keep)

    alive_log_probs, keep = torch.where(final, -torch.inf, top_log_probs).topk(beam_size, dim=1)
    alive_tokens = _take_rows(top_tokens, keep)
    parent = top_beam.gather(1, keep)
    rows = torch.arange(batch_size, device=t.device)[:, None] * beam_size + parent
    new_state = BeamState(alive_tokens, alive_log_probs, finished_tokens, finished_scores)
    return new_state, rows.view(-1)


def is_done(
    state: BeamState, valid: torch.Tensor, alpha: float = LENGTH_PENALTY_ALPHA
) -> torch.Tensor:
    """0-d bool: every valid source's best finished score is at least the best any alive beam
    can still reach (log-probabilities only fall, and the penalty is largest at max_len)."""
    max_len = state.alive_tokens.shape[2]
    bound = state.alive_log_probs[:, 0] / length_penalty(float(max_len), alpha)
    return ((state.finished_scores[:, 0] >= bound) | ~valid).all()


def _map_tensors(function: Callable[[torch.Tensor], torch.Tensor], tree: Any) -> Any:
    if isinstance(tree, torch.Tensor):
        return function(tree)
    if isinstance(tree, dict):
        return {key: _map_tensors(function, value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_map_tensors(function, value) for value in tree)
    raise TypeError(f"a decoder cache holds tensors, dicts, lists and tuples, not {type(tree)}")


def reorder_cache(cache: Any, rows: torch.Tensor) -> Any:
    """Every leaf of the cache pytree with its first axis taken at `rows`."""
    return _map_tensors(lambda leaf: leaf.index_select(0, rows), cache)


def cache_length(cache: Any, axis: int) -> int:
    """The cache's number of positions: every leaf's size along `axis`, which must agree."""
    lengths = set()
    _map_tensors(lambda leaf: lengths.add(leaf.shape[axis]), cache)
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"the cache's leaves hold {sorted(lengths)} positions on axis {axis}.")
    return lengths.pop()


def _start_length(cache: Any, axis: int | None, max_len: int) -> int:
    return max_len if axis is None else cache_length(cache, axis)


def grow_cache(cache: Any, axis: int, length: int) -> Any:
    """Every leaf zero-padded along `axis` to `length` positions."""

    def grow(leaf: torch.Tensor) -> torch.Tensor:
        shape = list(leaf.shape)
        shape[axis] = length - shape[axis]
        return torch.cat([leaf, leaf.new_zeros(shape)], dim=axis)

    return _map_tensors(grow, cache)


def _search_step(step_fn: StepFn, eos_id: int, alpha: float, state, cache, context, valid, t):
    """One position of the search: the model's step, `advance`, the cache reorder, and whether
    the search is done; returns t + 1 as the next position (it stays on the device)."""
    batch_size, beam_size, _ = state.alive_tokens.shape
    previous = state.alive_tokens.gather(2, (t - 1).clamp(min=0).expand(batch_size, beam_size, 1))
    log_probs, cache = step_fn(previous.view(-1), cache, t, context)
    state, rows = advance(state, log_probs, t, eos_id=eos_id, alpha=alpha)
    return state, reorder_cache(cache, rows), is_done(state, valid, alpha), t + 1


@functools.cache
def _compiled(function: Callable) -> Callable:
    # One wrapper per search function: dynamo then compiles once per model step and shape.
    # fullgraph: the model's step must trace whole too (decode.py, the step interface).
    return torch.compile(function, dynamic=False, fullgraph=True)


@torch.no_grad()
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
    valid: torch.Tensor | None = None,
    early_exit: bool = True,
    check_every: int = 1,
    compile: bool = False,
) -> BeamSearchOutput:
    """Beam search over `batch_size` sources (decode.py: the step interface, the scores).

    Args:
      step_fn: `step_fn(tokens [N], cache, t, context) -> (log_probs [N, V], cache)`, with
        N = batch_size * beam_size and `t` a 0-d int64 tensor on the cache's device.
      cache: the decoder's cache for N rows (every leaf [N, ...]) and `max_len` positions, or
        fewer with `cache_axis`.
      context: what the step reads and no step changes (encoder output and source mask),
        passed to every step untouched; never reordered.
      cache_axis: the positions' axis in every cache leaf. Given it, the cache may start with
        fewer positions than `max_len` and is doubled (zero-padded, at most to `max_len`)
        whenever the search reaches its end; the step must then read the cache's length from
        its shape. Reordering and attending over a short cache costs less, and most batches
        end long before `max_len`.
      valid: bool [batch_size], False for the padding rows of an eval batch: their beams do
        not hold back the early exit (their output is whatever the search had then).
      early_exit: stop once no alive beam can beat its source's best finished sequence (the
        result is the same as running all `max_len` steps).
      check_every: read the early-exit flag from the device every this many steps.
      compile: run each step (the model's step and the search's own work) through
        torch.compile, compiled once per model step and cache length.

    Returns:
      The K best finished sequences per source, best first, their scores and the number of
      positions decoded.
    """
    device = _cache_device(cache)
    state = initial_state(batch_size, beam_size, max_len, device)
    valid = _valid(valid, batch_size, device)
    search_step = _compiled(_search_step) if compile else _search_step
    length = _start_length(cache, cache_axis, max_len)
    t = torch.zeros((), dtype=torch.int64, device=device)
    steps = 0
    while steps < max_len:
        if steps == length:
            length = min(2 * length, max_len)
            cache = grow_cache(cache, cache_axis, length)
        state, cache, done, t = search_step(step_fn, eos_id, alpha, state, cache, context, valid, t)
        steps += 1
        if early_exit and steps % check_every == 0 and bool(done):
            break
    return BeamSearchOutput(state.finished_tokens, state.finished_scores, steps)


def _greedy_step(step_fn: StepFn, eos_id: int, tokens, finished, cache, context, t):
    previous = tokens.gather(1, (t - 1).clamp(min=0).expand(tokens.shape[0], 1))
    log_probs, cache = step_fn(previous.view(-1), cache, t, context)
    chosen = torch.where(finished, PAD_ID, log_probs.argmax(-1))
    positions = torch.arange(tokens.shape[1], device=t.device)
    tokens = torch.where(positions == t, chosen[:, None], tokens)
    finished = finished | (chosen == eos_id)
    return tokens, finished, cache, finished.all(), t + 1


@torch.no_grad()
def greedy_search(
    step_fn: StepFn,
    cache: Any,
    context: Any = None,
    *,
    batch_size: int,
    max_len: int = MAX_DECODE_LENGTH,
    eos_id: int = EOS_ID,
    cache_axis: int | None = None,
    valid: torch.Tensor | None = None,
    check_every: int = 1,
    compile: bool = False,
) -> torch.Tensor:
    """The most likely token at each position until EOS: int64 [batch_size, max_len], 0 after
    EOS (and everywhere in rows that `valid` marks as padding). The arguments are
    `beam_search`'s, with N = batch_size (nothing is reordered)."""
    device = _cache_device(cache)
    tokens = torch.full((batch_size, max_len), PAD_ID, dtype=torch.int64, device=device)
    finished = ~_valid(valid, batch_size, device)
    greedy_step = _compiled(_greedy_step) if compile else _greedy_step
    length = _start_length(cache, cache_axis, max_len)
    t = torch.zeros((), dtype=torch.int64, device=device)
    for steps in range(max_len):
        if steps == length:
            length = min(2 * length, max_len)
            cache = grow_cache(cache, cache_axis, length)
        tokens, finished, cache, done, t = greedy_step(
            step_fn, eos_id, tokens, finished, cache, context, t
        )
        if (steps + 1) % check_every == 0 and bool(done):
            break
    return tokens


def _valid(valid: torch.Tensor | None, batch_size: int, device) -> torch.Tensor:
    if valid is None:
        return torch.ones(batch_size, dtype=torch.bool, device=device)
    return valid.to(device=device, dtype=torch.bool).reshape(batch_size)


def _cache_device(cache: Any) -> torch.device:
    """The device of the cache's first tensor (the search state goes there)."""
    pending = [cache]
    while pending:
        node = pending.pop(0)
        if isinstance(node, torch.Tensor):
            return node.device
        if isinstance(node, dict):
            pending += list(node.values())
        elif isinstance(node, (list, tuple)):
            pending += list(node)
    raise ValueError("the decoder cache holds no tensor; it must hold the key/value buffers.")


# A toy decoder for tests and benchmarks (decode.toy_decoder_params), not a translation model.


def toy_params(params: dict, device=None) -> dict[str, torch.Tensor]:
    """decode.toy_decoder_params' numpy weights as tensors."""
    return {name: torch.as_tensor(value, device=device) for name, value in params.items()}


def toy_cache(params: dict[str, torch.Tensor], rows: int, max_len: int) -> dict:
    """The toy's empty key/value cache: [rows, max_len, dim] each."""
    dim = params["embed"].shape[1]
    zeros = params["embed"].new_zeros(rows, max_len, dim)
    return {"keys": zeros, "values": zeros.clone()}


def toy_forward(params: dict, inputs: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """Log-probabilities [N, T, V] of the toy for decoder inputs [N, T] (teacher forcing, no
    cache) and per-row source vectors `context` [N, dim]."""
    length = inputs.shape[1]
    x = params["embed"][inputs] + params["position"][:length] + context[:, None, :]
    queries, keys, values = (x @ params[name] for name in ("query", "key", "value"))
    logits = torch.einsum("ntd,nsd->nts", queries, keys) / keys.shape[-1] ** 0.5
    causal = torch.ones(length, length, dtype=torch.bool, device=inputs.device).tril()
    weights = torch.softmax(logits.masked_fill(~causal, -torch.inf), dim=-1)
    hidden = torch.tanh(x + weights @ values)
    return torch.log_softmax(hidden @ params["output"] + params["output_bias"], dim=-1)


def toy_step(params: dict, tokens: torch.Tensor, cache: dict, t: torch.Tensor, context):
    """The toy through the step interface, with its key/value cache (`toy_cache`)."""
    positions = torch.arange(cache["keys"].shape[1], device=tokens.device)
    # index_select, not [t]: indexing by a 0-d tensor reads it on the host (a graph break).
    x = params["embed"][tokens] + params["position"].index_select(0, t.reshape(1)) + context
    here = (positions == t)[None, :, None]
    keys = torch.where(here, (x @ params["key"])[:, None, :], cache["keys"])
    values = torch.where(here, (x @ params["value"])[:, None, :], cache["values"])
    logits = torch.einsum("nd,nld->nl", x @ params["query"], keys) / keys.shape[-1] ** 0.5
    weights = torch.softmax(logits.masked_fill(positions > t, -torch.inf), dim=-1)
    hidden = torch.tanh(x + torch.einsum("nl,nld->nd", weights, values))
    log_probs = torch.log_softmax(hidden @ params["output"] + params["output_bias"], dim=-1)
    return log_probs, {"keys": keys, "values": values}


def toy_uncached_step(params: dict, tokens: torch.Tensor, cache: dict, t: torch.Tensor, context):
    """The toy through the step interface without a key/value cache: the cache holds the decoder
    inputs so far ({"inputs": int64 [N, max_len]}) and each step reruns `toy_forward`."""
    positions = torch.arange(cache["inputs"].shape[1], device=tokens.device)
    inputs = torch.where(positions == t, tokens[:, None], cache["inputs"])
    log_probs = toy_forward(params, inputs, context)
    return log_probs[torch.arange(inputs.shape[0]), t], {"inputs": inputs}
