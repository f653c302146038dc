"""The classification piece for PyTorch workloads: softmax cross-entropy and accuracy.

`TorchClassifier` is what the classifiers (mnist, cifar, imagenet_resnet, imagenet_vit) build on;
other workloads bring their own loss and eval outputs (docs/metrics.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from algoperf import metrics, spec
from algoperf.torch.workload import TorchWorkload


def softmax_cross_entropy(
    label_batch: torch.Tensor,
    logits_batch: torch.Tensor,
    mask_batch: torch.Tensor | None = None,
    label_smoothing: float | torch.Tensor = 0.0,
) -> dict[str, torch.Tensor]:
    """Upstream's loss contract: `summed`, `n_valid_examples`, `per_example`; integer labels or
    soft label rows (one-hot, mixup); `label_smoothing` a float or a 0-d tensor."""
    soft = label_batch.dtype.is_floating_point and label_batch.ndim == logits_batch.ndim
    if soft or isinstance(label_smoothing, torch.Tensor):
        num_classes = logits_batch.shape[-1]
        if not soft:
            label_batch = F.one_hot(label_batch.long(), num_classes).to(logits_batch.dtype)
        smoothed = label_batch * (1.0 - label_smoothing) + label_smoothing / num_classes
        per_example = -(smoothed * F.log_softmax(logits_batch, dim=-1)).sum(dim=-1)
    else:
        per_example = F.cross_entropy(
            logits_batch, label_batch.long(), reduction="none", label_smoothing=label_smoothing
        )
    if mask_batch is not None:
        per_example = per_example * mask_batch
        n_valid = mask_batch.sum()
    else:
        n_valid = per_example.new_full((), float(per_example.shape[0]))  # no host copy
    return {"summed": per_example.sum(), "n_valid_examples": n_valid, "per_example": per_example}


def classification_outputs(logits: torch.Tensor, batch, loss_fn) -> dict[str, torch.Tensor]:
    """Sums over the valid rows of one eval batch (`metrics.classification()` reads them)."""
    weights = batch["weights"]
    targets = batch["targets"]
    labels = targets.argmax(-1) if targets.ndim == logits.ndim else targets
    correct = (logits.argmax(-1) == labels).to(weights.dtype)
    losses = loss_fn(targets, logits, weights)["per_example"]
    return {
        "correct": (correct * weights).sum(),
        "loss_sum": losses.sum(),
        metrics.NUM_EXAMPLES: weights.sum(),
    }


class TorchClassifier(TorchWorkload):
    """A PyTorch classifier: softmax cross-entropy loss, accuracy and loss as eval metrics."""

    eval_metrics = metrics.classification()

    def loss_fn(
        self,
        label_batch: spec.Tensor,
        logits_batch: spec.Tensor,
        mask_batch: spec.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, spec.Tensor]:
        return softmax_cross_entropy(label_batch, logits_batch, mask_batch, label_smoothing)

    def eval_outputs(self, logits, batch) -> dict[str, torch.Tensor]:
        return classification_outputs(logits, batch, self.loss_fn)
