"""wmt's decoding and BLEU (workloads/wmt/decode*.py, bleu.py) on a toy decoder: beam search finds
the exhaustive best sequences where its beam can hold every prefix, cached and uncached decoding
agree, an early exit changes nothing, PyTorch and JAX find the same sequences, a sequence without
EOS keeps its tokens; BLEU from summed statistics of any sharding is sacrebleu's corpus BLEU.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sacrebleu
import torch

from algoperf import metrics
from algoperf.workloads.wmt import bleu, decode
from algoperf.workloads.wmt import decode_jax as dj
from algoperf.workloads.wmt import decode_torch as dt

EOS = decode.EOS_ID


def toy(vocab, max_len, *, seed=0, eos_bias=2.0, dim=8, sources=1, banned=()):
    """Toy weights and `sources` source vectors (numpy, float32); `banned` tokens get -inf."""
    weights = decode.toy_decoder_params(vocab, dim, max_len, seed=seed, eos_bias=eos_bias)
    weights["output_bias"][list(banned)] = -np.inf
    source = np.random.default_rng(seed + 100).normal(size=(sources, dim)).astype(np.float32)
    return weights, source


def torch_search(weights, source, *, beam, max_len, uncached=False, start=None, **options):
    """The toy's beam search in PyTorch; `start`: a cache of that many positions that grows."""
    params = dt.toy_params(weights)
    rows, length = len(source) * beam, start or max_len
    context = dt.repeat_for_beams(torch.from_numpy(source), beam)
    if uncached:
        step = functools.partial(dt.toy_uncached_step, params)
        cache = {"inputs": torch.zeros(rows, length, dtype=torch.int64)}
    else:
        step, cache = functools.partial(dt.toy_step, params), dt.toy_cache(params, rows, length)
    out = dt.beam_search(
        step, cache, context, batch_size=len(source), beam_size=beam, max_len=max_len,
        cache_axis=1 if start else None, **options,
    )  # fmt: skip
    return out.tokens.numpy(), out.scores.numpy(), out.steps


@functools.partial(jax.jit, static_argnames=("beam", "max_len", "uncached", "start", "early_exit"))
def _jax_search(params, source, *, beam, max_len, uncached, start, early_exit):
    rows, length = source.shape[0] * beam, start or max_len
    if uncached:
        step = functools.partial(dj.toy_uncached_step, params)
        cache = {"inputs": jnp.zeros((rows, length), jnp.int32)}
    else:
        step, cache = functools.partial(dj.toy_step, params), dj.toy_cache(params, rows, length)
    context = dj.repeat_for_beams(source, beam)
    return dj.beam_search(
        step, cache, context, batch_size=source.shape[0], beam_size=beam, max_len=max_len,
        cache_axis=1 if start else None, early_exit=early_exit,
    )  # fmt: skip


def jax_search(weights, source, *, beam, max_len, uncached=False, start=None, early_exit=True):
    """The toy's beam search in JAX, jitted (torch_search's arguments)."""
    out = _jax_search(
        dj.toy_params(weights), jnp.asarray(source), beam=beam, max_len=max_len,
        uncached=uncached, start=start, early_exit=early_exit,
    )  # fmt: skip
    return np.asarray(out.tokens), np.asarray(out.scores), int(out.steps)


SEARCHES = {"pytorch": torch_search, "jax": jax_search}


def sequence(row: np.ndarray) -> tuple[int, ...]:
    """A decoded row up to and including its first EOS (all of it without one)."""
    ends = np.flatnonzero(row == EOS)
    return tuple(row[: ends[0] + 1] if ends.size else row)


def exhaustive(weights, source_row, vocab, max_len):
    """Every finished sequence (up to its first EOS, or max_len tokens) and its score, best
    first: the toy's log-probabilities of every token string, teacher-forced."""
    strings = np.asarray(list(itertools.product(range(vocab), repeat=max_len)))
    inputs = np.concatenate([np.zeros((len(strings), 1), np.int64), strings[:, :-1]], 1)
    context = torch.from_numpy(np.repeat(source_row[None], len(strings), 0))
    with torch.no_grad():
        log_probs = dt.toy_forward(dt.toy_params(weights), torch.from_numpy(inputs), context)
    token_log_probs = np.take_along_axis(log_probs.double().numpy(), strings[..., None], 2)[..., 0]
    scores = {}
    for string, row in zip(strings, token_log_probs):
        finished = sequence(string)
        scores[finished] = row[: len(finished)].sum() / decode.length_penalty(len(finished))
    return sorted(scores.items(), key=lambda item: -item[1])


def test_length_penalty_and_cut():
    assert decode.length_penalty(1) == 1.0
    assert decode.length_penalty(7) == pytest.approx(2.0**0.6)
    np.testing.assert_allclose(decode.length_penalty(np.asarray([1.0, 13.0])), [1.0, 3.0**0.6])
    assert decode.cut_at_eos([5, 7, EOS, 9, 0, 0]) == [5, 7]
    assert decode.cut_at_eos([EOS, 4, EOS]) == []
    # Without EOS every token stays (upstream kept only the first); pads are dropped.
    assert decode.cut_at_eos(np.asarray([5, 7, 9, 3])) == [5, 7, 9, 3]
    assert decode.cut_at_eos([5, 7, 0, 0]) == [5, 7]
    words = {3: "a", 4: "b", 5: "c"}
    text = decode.detokenize_rows(
        np.asarray([[3, 4, EOS, 5], [5, 5, 5, 5]]), lambda ids: " ".join(words[i] for i in ids)
    )
    assert text == ["a b", "c c c c"]


# (vocab, max_len, beam): a beam of (vocab - 1) ** (max_len - 1) holds every unfinished prefix,
# so the search is exhaustive; with max_len 2 a beam of `vocab` is enough. (A beam of `vocab`
# alone does not make a longer search exhaustive: it keeps only the K most likely prefixes.)
EXHAUSTIVE_CASES = [(4, 3, 9), (5, 3, 16), (3, 5, 16), (6, 2, 6)]


@pytest.mark.parametrize("framework", SEARCHES)
@pytest.mark.parametrize(("vocab", "max_len", "beam"), EXHAUSTIVE_CASES)
def test_beam_search_finds_the_exhaustive_best(framework, vocab, max_len, beam):
    for seed in range(3):
        weights, source = toy(vocab, max_len, seed=seed, eos_bias=1.0, sources=2)
        tokens, scores, _ = SEARCHES[framework](weights, source, beam=beam, max_len=max_len)
        for b in range(len(source)):  # two sources in one batch, each against its own search
            best = exhaustive(weights, source[b], vocab, max_len)[:beam]
            found = [sequence(row) for row in tokens[b]]
            assert found[0] == best[0][0]
            # The K best too, in order (the scores of these toys are far from ties).
            assert found == [finished for finished, _ in best]
            np.testing.assert_allclose(scores[b], [score for _, score in best], rtol=2e-5)


@pytest.mark.parametrize("framework", SEARCHES)
def test_cached_decoding_equals_uncached(framework):
    weights, source = toy(20, 10, seed=3, eos_bias=1.5, sources=3)
    cached = SEARCHES[framework](weights, source, beam=4, max_len=10)
    uncached = SEARCHES[framework](weights, source, beam=4, max_len=10, uncached=True)
    np.testing.assert_array_equal(cached[0], uncached[0])
    np.testing.assert_allclose(cached[1], uncached[1], rtol=1e-5)


@pytest.mark.parametrize("framework", SEARCHES)
@pytest.mark.parametrize("uncached", [False, True])
def test_a_growing_cache_gives_the_same_search(framework, uncached):
    # 2 -> 4 -> 8 -> 11 positions: every growth, the last one cut at max_len.
    weights, source = toy(20, 11, seed=10, eos_bias=0.5, sources=3)
    full = SEARCHES[framework](weights, source, beam=4, max_len=11, uncached=uncached)
    grown = SEARCHES[framework](weights, source, beam=4, max_len=11, uncached=uncached, start=2)
    assert full[2] == grown[2] == 11
    np.testing.assert_array_equal(full[0], grown[0])
    np.testing.assert_allclose(full[1], grown[1], rtol=1e-5)


def test_toy_steps_equal_teacher_forcing():
    weights, source = toy(11, 7, seed=4, sources=3)
    inputs = np.random.default_rng(0).integers(0, 11, size=(3, 7))
    inputs[:, 0] = 0
    params_t, params_j = dt.toy_params(weights), dj.toy_params(weights)
    forced = dt.toy_forward(params_t, torch.from_numpy(inputs), torch.from_numpy(source)).numpy()
    np.testing.assert_allclose(
        np.asarray(dj.toy_forward(params_j, jnp.asarray(inputs), jnp.asarray(source))),
        forced,
        atol=2e-5,
    )
    cache_t, cache_j = dt.toy_cache(params_t, 3, 7), dj.toy_cache(params_j, 3, 7)
    for t in range(7):
        step_t, cache_t = dt.toy_step(
            params_t, torch.from_numpy(inputs[:, t]), cache_t, torch.tensor(t),
            torch.from_numpy(source),
        )  # fmt: skip
        step_j, cache_j = dj.toy_step(
            params_j, jnp.asarray(inputs[:, t]), cache_j, jnp.int32(t), jnp.asarray(source)
        )
        np.testing.assert_allclose(step_t.numpy(), forced[:, t], atol=2e-5)
        np.testing.assert_allclose(np.asarray(step_j), forced[:, t], atol=2e-5)


@pytest.mark.parametrize("framework", SEARCHES)
def test_early_exit_changes_nothing(framework):
    weights, source = toy(30, 24, seed=5, eos_bias=4.0, sources=5)
    early = SEARCHES[framework](weights, source, beam=4, max_len=24)
    full = SEARCHES[framework](weights, source, beam=4, max_len=24, early_exit=False)
    assert early[2] < full[2] == 24, "the toy's sentences end early; so should the search"
    np.testing.assert_array_equal(early[0][:, 0], full[0][:, 0])
    np.testing.assert_allclose(early[1][:, 0], full[1][:, 0], rtol=1e-6)


def never_ending(step, source_row: int, beam: int, xp):
    """`step` with EOS forbidden in the beams of source `source_row` (a padding row that
    would otherwise decode to max_len)."""

    def wrapped(tokens, cache, t, context):
        log_probs, cache = step(tokens, cache, t, context)
        rows = (np.arange(len(tokens)) // beam == source_row)[:, None]
        columns = (np.arange(log_probs.shape[1]) == EOS)[None, :]
        return xp.where(xp.asarray(rows & columns), -xp.inf, log_probs), cache

    return wrapped


def test_padding_rows_do_not_hold_back_the_early_exit():
    weights, source = toy(30, 24, seed=5, eos_bias=4.0, sources=3)
    kept = source[[0, 2]]
    expected = torch_search(weights, kept, beam=4, max_len=24)
    assert expected[2] < 24
    valid = np.asarray([True, False, True])
    rows = 3 * 4

    params_t = dt.toy_params(weights)
    step_t = never_ending(functools.partial(dt.toy_step, params_t), 1, 4, torch)
    context_t = dt.repeat_for_beams(torch.from_numpy(source), 4)
    for given, steps in ((None, 24), (torch.from_numpy(valid), expected[2])):
        out = dt.beam_search(
            step_t, dt.toy_cache(params_t, rows, 24), context_t, batch_size=3, max_len=24,
            valid=given,
        )  # fmt: skip
        assert out.steps == steps
    np.testing.assert_array_equal(out.tokens.numpy()[[0, 2], 0], expected[0][:, 0])

    @jax.jit
    def jax_search_padded(params, context, valid):
        step = never_ending(functools.partial(dj.toy_step, params), 1, 4, jnp)
        return dj.beam_search(
            step, dj.toy_cache(params, rows, 24), dj.repeat_for_beams(context, 4), batch_size=3,
            max_len=24, valid=valid,
        )  # fmt: skip

    out = jax_search_padded(dj.toy_params(weights), jnp.asarray(source), jnp.asarray(valid))
    assert int(out.steps) == expected[2]
    np.testing.assert_array_equal(np.asarray(out.tokens)[[0, 2], 0], expected[0][:, 0])


@pytest.mark.parametrize("framework", SEARCHES)
def test_a_sequence_without_eos_keeps_its_tokens(framework):
    # EOS (and pad) can never be emitted: every candidate runs to max_len.
    weights, source = toy(6, 5, seed=6, banned=(EOS, decode.PAD_ID), sources=2)
    tokens, scores, steps = SEARCHES[framework](weights, source, beam=3, max_len=5)
    assert steps == 5
    best = exhaustive(weights, source[0], 6, 5)[0]
    assert tuple(tokens[0, 0]) == best[0] and len(decode.cut_at_eos(tokens[0, 0])) == 5
    assert scores[0, 0] == pytest.approx(best[1], rel=2e-5)


@pytest.mark.parametrize("seed", range(3))
def test_pytorch_and_jax_find_the_same_sequences(seed):
    weights, source = toy(50, 16, seed=seed, eos_bias=2.5, dim=16, sources=4)
    torch_tokens, torch_scores, torch_steps = torch_search(weights, source, beam=4, max_len=16)
    jax_tokens, jax_scores, jax_steps = jax_search(weights, source, beam=4, max_len=16)
    valid = np.isfinite(torch_scores)
    assert valid[:, 0].all()
    np.testing.assert_array_equal(torch_tokens[valid], jax_tokens[valid])
    np.testing.assert_allclose(torch_scores, jax_scores, rtol=1e-5)
    assert torch_steps == jax_steps


def naive_greedy(weights, source, max_len):
    """Argmax until EOS, rerunning the teacher-forced toy on the prefix at every position."""
    params = dt.toy_params(weights)
    rows = []
    for row_source in source:
        tokens = []
        while len(tokens) < max_len and EOS not in tokens:
            inputs = torch.tensor([[0, *tokens]])
            log_probs = dt.toy_forward(params, inputs, torch.from_numpy(row_source[None]))
            tokens.append(int(log_probs[0, -1].argmax()))
        rows.append(tokens + [0] * (max_len - len(tokens)))
    return np.asarray(rows)


@pytest.mark.parametrize("start", [None, 3])
def test_greedy_search_in_both_frameworks(start):
    weights, source = toy(25, 12, seed=7, eos_bias=2.0, sources=4)
    expected = naive_greedy(weights, source, 12)
    axis, length = (1, start) if start else (None, 12)
    params_t = dt.toy_params(weights)
    found_t = dt.greedy_search(
        functools.partial(dt.toy_step, params_t), dt.toy_cache(params_t, 4, length),
        torch.from_numpy(source), batch_size=4, max_len=12, cache_axis=axis,
    )  # fmt: skip

    @jax.jit
    def jax_greedy(params, context):
        step, cache = functools.partial(dj.toy_step, params), dj.toy_cache(params, 4, length)
        return dj.greedy_search(step, cache, context, batch_size=4, max_len=12, cache_axis=axis)

    found_j = jax_greedy(dj.toy_params(weights), jnp.asarray(source))
    np.testing.assert_array_equal(found_t.numpy(), expected)
    np.testing.assert_array_equal(np.asarray(found_j), expected)


@pytest.mark.slow
def test_compiled_search_equals_eager_and_compiles_once_per_cache_length():
    from torch._dynamo.utils import counters

    weights, source = toy(40, 12, seed=8, eos_bias=0.5, dim=16, sources=3)
    eager = torch_search(weights, source, beam=4, max_len=12, start=4)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch_search(weights, source, beam=4, max_len=12, start=4, compile=True)
    np.testing.assert_array_equal(eager[0], compiled[0])
    np.testing.assert_allclose(eager[1], compiled[1], rtol=1e-5)
    graphs = counters["stats"]["unique_graphs"]
    assert eager[2] == 12 and graphs == 3  # cache lengths 4, 8, 12; fullgraph: one graph each
    # Another batch of the same shape, other sources: no recompilation at any position.
    _, other = toy(40, 12, seed=9, dim=16, sources=3)
    torch_search(weights, other, beam=4, max_len=12, start=4, compile=True)
    assert counters["stats"]["unique_graphs"] == graphs


# BLEU.

REFERENCES = [
    "The cat sat on the mat.",
    "There is a cat on the mat.",
    "Mr. Smith's house, built in 1905, cost $3,000.50!",
    "Short.",
    "a b",
    "Das ist ein Test: „Anführungszeichen“ und Umlaute (äöü).",
    "It rained all day, and the roads were flooded; nobody went out.",
    "No.",
    "One two three four five six seven eight nine ten.",
    "The quick brown fox jumps over the lazy dog.",
]


def corpus(seed: int, size: int = 60) -> tuple[list[str], list[str]]:
    """Hypothesis/reference pairs: exact copies, dropped, shuffled and re-cased words, empty and
    one-word hypotheses (where exp smoothing decides the higher orders)."""
    rng = np.random.default_rng(seed)
    hypotheses, references = [], []
    for _ in range(size):
        reference = REFERENCES[rng.integers(len(REFERENCES))]
        words = reference.split()
        kind = rng.integers(6)
        if kind == 0:
            hypothesis = reference
        elif kind == 1:
            hypothesis = ""
        elif kind == 2:
            hypothesis = words[rng.integers(len(words))]
        elif kind == 3:
            hypothesis = " ".join(w for w in words if rng.random() > 0.3)
        elif kind == 4:
            hypothesis = " ".join(rng.permutation(words))
        else:
            hypothesis = " ".join(w.upper() if rng.random() < 0.3 else w for w in words)
        hypotheses.append(hypothesis)
        references.append(reference)
    return hypotheses, references


def test_bleu_is_sacrebleus_corpus_bleu():
    hypotheses, references = corpus(0)
    expected = sacrebleu.corpus_bleu(
        hypotheses, [references], smooth_method="exp", tokenize="13a", lowercase=False
    ).score
    assert bleu.corpus_bleu(hypotheses, references) == expected
    assert bleu.bleu_from_statistics(bleu.bleu_statistics(hypotheses, references)) == expected
    # Case-sensitive: upper-casing a hypothesis loses its matches.
    assert bleu.corpus_bleu(["THE CAT SAT ON THE MAT."], ["The cat sat on the mat."]) < 10
    # Exp smoothing: a hypothesis with no 3- or 4-gram match still scores.
    assert 0 < bleu.corpus_bleu(["The cat the mat"], ["The cat sat on the mat."]) < 100
    assert bleu.corpus_bleu(["", ""], ["a b", "c"]) == 0.0
    assert bleu.bleu_from_statistics(np.zeros(bleu.NUM_STATISTICS)) == 0.0


@pytest.mark.parametrize("shards", [2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_summed_shard_statistics_give_the_corpus_bleu(shards, seed):
    hypotheses, references = corpus(seed)
    rng = np.random.default_rng(seed)
    # Cut points anywhere, an empty shard allowed.
    cuts = [0, *sorted(rng.integers(0, len(hypotheses) + 1, shards - 1)), len(hypotheses)]
    summed = sum(
        bleu.bleu_statistics(hypotheses[a:b], references[a:b]) for a, b in itertools.pairwise(cuts)
    )
    assert bleu.bleu_from_statistics(summed) == bleu.corpus_bleu(hypotheses, references)


class TwoRanks:
    """A fake group of two ranks seen from rank 0: the other rank's sums and rows are given."""

    def __init__(self, other_sums, other_rows) -> None:
        self.other_sums, self.other_rows = other_sums, other_rows

    def add(self, totals, outputs):
        return dict(outputs) if totals is None else {k: totals[k] + outputs[k] for k in totals}

    def to_numpy(self, outputs):
        return {key: np.asarray(value) for key, value in outputs.items()}

    def sum_over_ranks(self, values):
        return values + self.other_sums

    def gather_over_ranks(self, rows):
        return {key: np.concatenate([rows[key], self.other_rows[key]]) for key in rows}


def test_bleu_metric_through_the_eval_loop():
    """Token ids -> the eval loop's Gathered reduction: padding rows dropped, rows cut at EOS
    (a row without EOS keeps its tokens), statistics of two ranks summed."""
    vocabulary = ["<pad>", "<unk>", "</s>", *sorted({w for r in REFERENCES for w in r.split()})]
    index = {word: i for i, word in enumerate(vocabulary)}

    def detokenize(ids):
        return " ".join(vocabulary[i] for i in ids)

    def encode(texts, length=24, eos=True):
        rows = np.zeros((len(texts), length), np.int64)
        for row, text in zip(rows, texts):
            ids = [index[w] for w in text.split()] + ([EOS] if eos else [])
            row[: len(ids)] = ids
        return rows

    hypotheses, references = corpus(1, size=20)
    hypotheses = [" ".join(w for w in h.split() if w in index) for h in hypotheses]
    metric = bleu.bleu_metric(detokenize)

    def batch(lo, hi, padding):
        # Hypotheses 0-4 have no EOS (they ran to max length); padding rows are garbage.
        predictions = encode(hypotheses[lo:hi], eos=lo >= 5)
        targets = encode(references[lo:hi])
        garbage = np.full((padding, 24), index["cat"])
        valid = np.r_[np.ones(hi - lo), np.zeros(padding)]
        return {
            "predictions": np.concatenate([predictions, garbage]),
            "targets": np.concatenate([targets, garbage]),
            "valid": valid,
            metrics.NUM_EXAMPLES: valid.sum(),
        }

    other = [batch(12, 20, 0)]  # rank 1's rows, as the gather would bring them
    other_rows = metric.decode({key: other[0][key] for key in metric.outputs})
    collectives = TwoRanks(np.asarray([8.0]), other_rows)
    results = metrics.evaluate(
        [batch(0, 5, 3), batch(5, 12, 1)], lambda b: b, (metric,), collectives
    )
    assert results[metrics.NUM_EXAMPLES] == 20
    assert results["bleu"] == bleu.corpus_bleu(hypotheses, references)
