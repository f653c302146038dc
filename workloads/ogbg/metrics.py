"""ogbg's eval metrics (docs/workloads.md, "ogbg"): accuracy and loss over the labelled entries,
and OGB's mean average precision over the whole split.

`mean_average_precision` is written here in numpy (one sort per task) and tested equal to
scikit-learn's `average_precision_score` (tests/test_ogbg_data.py); scikit-learn is not needed to
train.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from algoperf.metrics import Gathered, MeanOfSums


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision of one task: Σ over distinct score thresholds (descending) of
    (recall gain) × precision, as scikit-learn's `average_precision_score` defines it (tied
    scores form one threshold). `labels` are 0/1 and hold at least one positive."""
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    true_positives = np.cumsum(labels)
    # The last position of each run of equal scores is one threshold.
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tp = true_positives[last]
    precision = tp / (last + 1)
    recall_gain = np.diff(np.r_[0.0, tp]) / tp[-1]
    return float(np.sum(recall_gain * precision))


def mean_average_precision(logits: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> float:
    """OGB's molpcba metric: for each task with at least one positive and one negative among
    its labelled entries (weight > 0), the average precision of sigmoid(logit) over those
    entries; then the mean over those tasks (NaN if no task qualifies).

    Sigmoid is taken in float64: ordering is all AP depends on, and float32 sigmoid would tie
    logits above ~17 at 1.0.
    """
    probabilities = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))
    targets = np.asarray(targets) > 0.5
    labelled = np.asarray(weights) > 0
    values = []
    for task in range(targets.shape[1]):
        mask = labelled[:, task]
        labels = targets[mask, task]
        positives = int(labels.sum())
        if positives == 0 or positives == len(labels):
            continue
        values.append(average_precision(probabilities[mask, task], labels.astype(np.float64)))
    return float(np.mean(values)) if values else float("nan")


def _finish(rows: Mapping[str, np.ndarray]) -> dict[str, float]:
    return {
        "mean_average_precision": mean_average_precision(
            rows["logits"], rows["targets"], rows["weights"]
        )
    }


METRICS = (
    MeanOfSums(name="accuracy", total="correct", count="num_labels"),
    MeanOfSums(name="loss", total="loss_sum", count="num_labels"),
    Gathered(outputs=("logits", "targets", "weights"), finish=_finish, mask="valid"),
)
"""What every ogbg workload's `eval_outputs` feeds: `correct`, `loss_sum` and `num_labels`
(sums over labelled entries), and per real graph `logits`, `targets`, `weights` with `valid`
marking real graph slots (packs also hold empty and padding slots)."""
