"""The dry-run metrics, framework-free: mean average precision over every prediction of a split."""

import numpy as np

from algoperf import metrics


def mean_average_precision(rows):
    """Mean over labels with a positive and a negative of the average precision (the mean of
    the precision at each positive, ranked by score)."""
    scores, labels = rows["scores"], rows["labels"].astype(np.float64)
    precisions = []
    for column in range(labels.shape[1]):
        truth = labels[np.argsort(-scores[:, column], kind="stable"), column]
        if 0 < truth.sum() < len(truth):
            hits = np.cumsum(truth)
            precisions.append(np.sum(truth * hits / np.arange(1, len(truth) + 1)) / truth.sum())
    return {"mean_average_precision": float(np.mean(precisions))}


EVAL_METRICS = (
    metrics.MeanOfSums(name="loss", total="loss_sum"),
    metrics.Gathered(outputs=("scores", "labels"), finish=mean_average_precision),
)
