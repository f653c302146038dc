"""wmt's eval metrics (docs/workloads.md, "wmt"): the token loss and accuracy over the real
target tokens of a split, and corpus BLEU of the beam-search translations (workloads/wmt/bleu.py).

Each eval batch's outputs (model_torch.py, model_jax.py) hold, summed on the device over the real
target tokens (weight 1; padding 0): `loss_sum` (cross-entropy without label smoothing),
`correct` (argmax = target) and `token_count`; per row: `predictions` (the best beam's token ids),
`targets` and `valid` (1 for a real sentence, 0 for a padding row); and `num_examples`.
"""

from __future__ import annotations

from collections.abc import Callable

from algoperf.metrics import MeanOfSums, Metric

PACKING_KEYS = (
    "inputs_position",
    "targets_position",
    "inputs_segmentation",
    "targets_segmentation",
)
"""The packed train rows' extra batch keys, in the order the models take them (after `inputs`
and `targets`); eval rows lack them (padded, one sentence per row)."""

TOKEN_METRICS: tuple[Metric, ...] = (
    MeanOfSums(name="loss", total="loss_sum", count="token_count"),
    MeanOfSums(name="accuracy", total="correct", count="token_count"),
)
"""Both over the split's real target tokens, as upstream's (the mean per token, not per
sentence)."""


def metrics(detokenize: Callable[[list[int]], str] | None) -> tuple[Metric, ...]:
    """The eval metrics: loss and accuracy, and `bleu` when a detokenizer (the SentencePiece
    model's `decode`) is given."""
    if detokenize is None:
        return TOKEN_METRICS
    from algoperf.workloads.wmt import bleu

    return (*TOKEN_METRICS, bleu.bleu_metric(detokenize))


class BleuEval:
    """The eval side both model files share (put before the framework base): each split's
    metrics with `bleu`, detokenised by the SentencePiece model of the data being evaluated."""

    _detokenize: Callable[[list[int]], str] | None = None

    @property
    def eval_metrics(self) -> tuple[Metric, ...]:
        return metrics(self._detokenize)

    def _eval_model_on_split(self, split, num_examples, global_batch_size, params, model_state,
                             rng, data_dir, global_step=0):  # fmt: skip
        self._detokenize = self.dataset(data_dir).tokenizer.decode
        return super()._eval_model_on_split(
            split, num_examples, global_batch_size, params, model_state, rng, data_dir,
            global_step,
        )  # fmt: skip
