"""wmt's `bleu` metric (docs/workloads.md, wmt; docs/metrics.md, Gathered): sacrebleu's corpus
BLEU (13a tokenisation, case-sensitive, exp smoothing, n-grams up to 4, one reference) on
detokenised text, computed by the sacrebleu package itself.

Corpus BLEU is a function of sums over sentences (the sufficient statistics: hypothesis and
reference lengths, matching and total n-grams per order), so each batch is reduced to those ten
integers on the host, the integers of every batch and rank are added, and BLEU is computed once
from the totals: the same value as sacrebleu's `corpus_score` on the whole split at once
(tests/test_wmt_decode.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import sacrebleu

from algoperf.metrics import Gathered
from algoperf.workloads.wmt.decode import EOS_ID, detokenize_rows

MAX_NGRAM_ORDER = 4  # sacrebleu's default, as upstream's
# [hypothesis length, reference length, matches of order 1..4, n-grams of order 1..4].
NUM_STATISTICS = 2 + 2 * MAX_NGRAM_ORDER
STATISTICS = "bleu_statistics"


@functools.cache
def _scorer() -> sacrebleu.BLEU:
    # force=True only silences sacrebleu's warning about hypotheses that look tokenised.
    return sacrebleu.BLEU(
        tokenize="13a",
        smooth_method="exp",
        lowercase=False,
        force=True,
    )


def bleu_statistics(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """The sufficient statistics (int64 [NUM_STATISTICS]) of `hypotheses` against one reference
    each, summed over the sentences; all zeros for no sentence."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references.")
    if not hypotheses:
        return np.zeros(NUM_STATISTICS, np.int64)
    score = _scorer().corpus_score(list(hypotheses), [list(references)])
    return np.asarray([score.sys_len, score.ref_len, *score.counts, *score.totals], np.int64)


def bleu_from_statistics(statistics: np.ndarray) -> float:
    """BLEU (0-100) from summed sufficient statistics, by sacrebleu's `compute_bleu`."""
    values = [int(v) for v in np.asarray(statistics).reshape(NUM_STATISTICS)]
    scorer = _scorer()
    return float(
        sacrebleu.BLEU.compute_bleu(
            correct=values[2 : 2 + MAX_NGRAM_ORDER],
            total=values[2 + MAX_NGRAM_ORDER :],
            sys_len=values[0],
            ref_len=values[1],
            smooth_method=scorer.smooth_method,
            smooth_value=scorer.smooth_value,
            effective_order=scorer.effective_order,
        ).score
    )


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu's corpus BLEU of `hypotheses` against one reference each, in one call."""
    return float(_scorer().corpus_score(list(hypotheses), [list(references)]).score)


def bleu_metric(
    detokenize: Callable[[list[int]], str],
    *,
    predictions: str = "predictions",
    targets: str = "targets",
    mask: str = "valid",
    eos_id: int = EOS_ID,
) -> Gathered:
    """The `bleu` metric as a `Gathered` reduction over the eval outputs `predictions` (the best
    beam's token ids, [rows, length]) and `targets` (the reference ids, [rows, length]): per
    batch, on the host, both are cut at their first EOS and detokenised (`detokenize` is the
    SentencePiece model's `decode`), and reduced to one row of sufficient statistics; after the
    gather across ranks the rows are summed and BLEU computed from the totals."""

    def to_statistics(rows: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        hypotheses = detokenize_rows(rows[predictions], detokenize, eos_id)
        references = detokenize_rows(rows[targets], detokenize, eos_id)
        return {STATISTICS: bleu_statistics(hypotheses, references)[None, :]}

    def finish(rows: Mapping[str, np.ndarray]) -> dict[str, float]:
        summed = np.asarray(rows[STATISTICS], np.int64).reshape(-1, NUM_STATISTICS).sum(axis=0)
        return {"bleu": bleu_from_statistics(summed)}

    return Gathered(outputs=(predictions, targets), mask=mask, decode=to_statistics, finish=finish)
