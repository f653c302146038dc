"""wmt's decoding, the framework-free part (docs/workloads.md, wmt): the settings, the length
penalty, the decoder-step interface both beam searches drive, and token ids -> text.

The searches themselves are `decode_torch.beam_search` and `decode_jax.beam_search`; they find
the same sequences on the same model (tests/test_wmt_decode.py).

The step interface (what the Transformer's decoder implements, in either framework)
--------------------------------------------------------------------------------
A search decodes `batch_size` sources with `beam_size` beams each, so the model sees
`N = batch_size * beam_size` rows; row `b * beam_size + k` is beam `k` of source `b`
(`repeat_for_beams` in decode_torch.py and decode_jax.py lays per-source tensors out that way).
The model supplies three things:

- `cache`: the decoder's self-attention keys and values for `N` rows and `max_len` positions, a
  pytree (dict, tuple or list) of arrays **each with `N` as its first axis**. The search reorders
  every leaf along that axis after each step, as beams are kept, dropped and copied. Hold no step
  counter in it (flax's `cache_index` is a scalar): the position comes as `t`. Better: start it
  short (e.g. 32 positions) and pass `cache_axis=` (the positions' axis of every leaf) to the
  search, which doubles it whenever decoding reaches its end; the step then reads the cache's
  length from its shape. Each step reorders the whole cache and attends over all of it, so a
  256-position cache costs 256 positions' work at every step of a batch that ends at 40.
- `context`: any pytree the step reads and no step changes (the encoder output, the
  cross-attention keys and values, the source mask). Beams of one source share it, so it is
  passed to every step as it is and never reordered (copying it per step would cost as much as
  the cache). It may hold one row per source, the step attending from the `beam_size`
  consecutive rows of a source together (no copies), or one row per beam (`repeat_for_beams`).
  `None` if there is none.
- `step(tokens, cache, t, context) -> (log_probs, cache)`: `tokens` int [N] is each row's
  previous token (0, the pad id, at `t == 0`: the decoder input is the target shifted right with
  0 in front); `t` is the position being predicted, a 0-d integer array (a traced value under
  `jax.jit`, a tensor in PyTorch, so one compiled step serves every position). It writes the keys
  and values of `tokens` at position `t` of the cache, attends to positions `<= t`, and returns
  float `log_probs` [N, vocab] (a log-softmax: every value <= 0) for the token at position `t`,
  and the updated cache. No shape changes from step to step. In PyTorch the step must trace
  whole under torch.compile (`beam_search(compile=True)` uses fullgraph): read and write at `t`
  with tensor ops (`index_select`, `index_copy`, `torch.where(positions == t, ...)`), never
  `x[t]`, which reads a 0-d tensor on the host.

Greedy decoding (`greedy_search`) drives the same step with `N = batch_size`.

Scores follow GNMT: the sum of a sequence's token log-probabilities over `length_penalty(len)`,
where `len` counts the tokens up to and including EOS. A sequence that reaches `max_len` tokens
without EOS is a finished candidate too, scored with `len = max_len`, and keeps all its tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

BEAM_SIZE = 4
MAX_DECODE_LENGTH = 256
EOS_ID = 2
PAD_ID = 0
LENGTH_PENALTY_ALPHA = 0.6


def length_penalty(length, alpha: float = LENGTH_PENALTY_ALPHA):
    """GNMT's length penalty ((5 + length) / 6) ** alpha, for a number or a numpy, torch or jax
    array of lengths (tokens up to and including EOS)."""
    return ((5.0 + length) / 6.0) ** alpha


def cut_at_eos(tokens: Sequence[int] | np.ndarray, eos_id: int = EOS_ID) -> list[int]:
    """The token ids before the first EOS, pad ids (0) left out. A row without EOS keeps all its
    tokens (upstream kept only the first one of such a row, reading the EOS position as an argmax
    over an all-false mask)."""
    row = np.asarray(tokens).reshape(-1)
    ends = np.flatnonzero(row == eos_id)
    if ends.size:
        row = row[: ends[0]]
    return row[row != PAD_ID].tolist()


def detokenize_rows(
    tokens: np.ndarray, detokenize: Callable[[list[int]], str], eos_id: int = EOS_ID
) -> list[str]:
    """Each row of `tokens` [rows, length] cut at its first EOS (`cut_at_eos`) and turned into
    text by `detokenize` (a SentencePiece model's `decode`, which takes a list of ids)."""
    return [detokenize(cut_at_eos(row, eos_id)) for row in np.asarray(tokens)]


def toy_decoder_params(
    vocab_size: int, dim: int, max_len: int, *, seed: int = 0, eos_bias: float = 0.0
) -> dict[str, np.ndarray]:
    """Weights (float32 numpy) of a toy decoder for tests and benchmarks, not a translation
    model: one causal self-attention over the tokens so far, conditioned on a per-source vector,
    and an output projection. `decode_torch.toy_step` and `decode_jax.toy_step` implement it
    through the step interface with a real key/value cache; the same weights give the same
    log-probabilities in both. `eos_bias` is added to EOS's logit (more or fewer early stops)."""
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(dim)
    output_bias = np.zeros(vocab_size)
    output_bias[EOS_ID] = eos_bias
    params = {
        "embed": rng.normal(size=(vocab_size, dim)),
        "position": rng.normal(size=(max_len, dim)) * 0.5,
        "query": rng.normal(size=(dim, dim)) * scale,
        "key": rng.normal(size=(dim, dim)) * scale,
        "value": rng.normal(size=(dim, dim)) * scale,
        "output": rng.normal(size=(dim, vocab_size)) * 2.0,
        "output_bias": output_bias,
    }
    return {name: value.astype(np.float32) for name, value in params.items()}
