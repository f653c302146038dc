"""The eval loop and the metric protocol (docs/metrics.md), framework-free.

A framework base only computes each eval batch's outputs on the device (`eval_outputs`); a
workload declares how those outputs become metrics, as reductions:

- `MeanOfSums`: a sum over the valid rows of every batch and rank, over a count (loss,
  accuracy, error rate, perplexity's log-loss...). The sums stay on the device until the end of
  the split, then one reduction across ranks.
- `Gathered`: per-example arrays of every batch, padding rows dropped, collected across ranks and
  finished in numpy (mean average precision over all predictions of a split, SSIM per example
  of de-normalised images...). An optional `decode` runs per batch on the host first (token ids
  -> text, for BLEU or WER), so only what the finish needs is kept.

Every batch's outputs include `num_examples` (its count of valid rows); `evaluate` reports it.
The backend's `EvalCollectives` supply the device adds and the cross-rank sum and gather.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

NUM_EXAMPLES = "num_examples"


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeanOfSums:
    """`metric = sum of outputs[total] / sum of outputs[count]` over all batches and ranks."""

    name: str
    """The metric's name (the eval row holds `<split>/<name>`)."""
    total: str
    """The per-batch output holding the sum over the batch's valid rows (a scalar)."""
    count: str = NUM_EXAMPLES
    """The per-batch output holding the divisor (default: the batch's count of valid rows)."""
    transform: Callable[[float], float] | None = None
    """Applied to the mean (e.g. `math.exp` for perplexity from a mean log-loss)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Gathered:
    """Per-example outputs of the whole split, finished in numpy.

    `finish` receives, for each key of `outputs` (or of what `decode` returns), the rows of every
    batch of every rank (padding dropped) concatenated along the first axis, and returns
    `{metric name: value}`.
    """

    outputs: tuple[str, ...]
    """Per-batch outputs with one row per example (first axis = the batch's rows)."""
    finish: Callable[[Mapping[str, np.ndarray]], Mapping[str, float]]
    mask: str = "valid"
    """The per-batch output marking real rows (1) and padding (0)."""
    decode: Callable[[Mapping[str, np.ndarray]], Mapping[str, Sequence]] | None = None
    """Run per batch on the host after padding is dropped (e.g. ids -> strings)."""


Metric = MeanOfSums | Gathered


def classification() -> tuple[Metric, ...]:
    """Accuracy and mean cross-entropy, from the sums the classifier pieces output
    (`algoperf.torch.classification`, `algoperf.jax.classification`)."""
    return (
        MeanOfSums(name="accuracy", total="correct"),
        MeanOfSums(name="loss", total="loss_sum"),
    )


class EvalCollectives(Protocol):
    """What a framework supplies to `evaluate` (algoperf/torch/workload.py, algoperf/jax/...)."""

    def add(self, totals: Any, outputs: Mapping[str, Any]) -> Any:
        """`totals + outputs`, key by key, on the device (`totals` is None at the first batch)."""

    def to_numpy(self, outputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Device arrays -> host numpy arrays."""

    def sum_over_ranks(self, values: np.ndarray) -> np.ndarray:
        """Element-wise float64 sum over every process (1 process: `values`)."""

    def gather_over_ranks(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each key's rows of every process, concatenated in rank order (1 process: `rows`)."""


def _check_outputs(outputs: Mapping[str, Any], metrics: Sequence[Metric]) -> None:
    needed = {NUM_EXAMPLES}
    for metric in metrics:
        if isinstance(metric, MeanOfSums):
            needed |= {metric.total, metric.count}
        else:
            needed |= {*metric.outputs, metric.mask}
    missing = sorted(needed - set(outputs))
    if missing:
        raise KeyError(
            f"eval_outputs lacks {missing} that the declared eval_metrics need; it returned "
            f"{sorted(outputs)}."
        )


def evaluate(
    batches: Iterable[Any],
    compute: Callable[[Any], Mapping[str, Any]],
    metrics: Sequence[Metric],
    collectives: EvalCollectives,
) -> dict[str, float]:
    """One pass of `compute` (a batch -> its outputs, on the device) over `batches`, reduced
    into metrics per `metrics`, with `num_examples`.

    Raises:
      ValueError: the split gave no batch on this rank, or no valid example at all.
      KeyError: `compute` lacks an output a metric needs.
    """
    sum_keys = sorted(
        {NUM_EXAMPLES}
        | {k for m in metrics if isinstance(m, MeanOfSums) for k in (m.total, m.count)}
    )
    gathered_metrics = [m for m in metrics if isinstance(m, Gathered)]
    totals, rows, checked = None, [{} for _ in gathered_metrics], False
    for batch in batches:
        outputs = compute(batch)
        if not checked:
            _check_outputs(outputs, metrics)
            checked = True
        totals = collectives.add(totals, {key: outputs[key] for key in sum_keys})
        for metric, kept in zip(gathered_metrics, rows):
            _keep_rows(metric, collectives.to_numpy(outputs), kept)
    if totals is None:
        raise ValueError("the eval split gave this rank no batch; every rank needs at least one.")
    summed = collectives.to_numpy(totals)
    vector = collectives.sum_over_ranks(np.asarray([summed[k] for k in sum_keys], np.float64))
    sums = dict(zip(sum_keys, vector.tolist()))
    count = sums[NUM_EXAMPLES]
    if count <= 0:
        raise ValueError("the eval split holds no valid example (every row was padding).")
    results: dict[str, float] = {}
    for metric in metrics:
        if isinstance(metric, MeanOfSums):
            value = sums[metric.total] / sums[metric.count]
            results[metric.name] = metric.transform(value) if metric.transform else value
    for metric, kept in zip(gathered_metrics, rows):
        local = {key: _concat(parts) for key, parts in kept.items()}
        everything = collectives.gather_over_ranks(local)
        results.update({name: float(v) for name, v in metric.finish(everything).items()})
    results[NUM_EXAMPLES] = int(round(count))
    return results


def _keep_rows(metric: Gathered, outputs: dict[str, np.ndarray], kept: dict[str, list]) -> None:
    valid = np.asarray(outputs[metric.mask]).reshape(-1) > 0
    batch_rows = {key: np.asarray(outputs[key])[valid] for key in metric.outputs}
    if metric.decode is not None:
        batch_rows = metric.decode(batch_rows)
    for key, value in batch_rows.items():
        kept.setdefault(key, []).append(value)


def _concat(parts: list) -> np.ndarray:
    if parts and isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return np.asarray([item for part in parts for item in part], dtype=object)
