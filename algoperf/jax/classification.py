"""The classification piece for JAX workloads: softmax cross-entropy and accuracy.

Every argument may be traced: submissions jit their whole train step with `loss_fn` inside and
pass `label_smoothing` as a traced value, so nothing here branches on it in Python.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from algoperf import metrics, spec
from algoperf.jax.workload import JaxWorkload


def softmax_cross_entropy(label_batch, logits_batch, mask_batch=None, label_smoothing=0.0):
    """Upstream's loss contract: `summed`, `n_valid_examples`, `per_example`; integer labels or
    soft label rows (one-hot, mixup)."""
    num_classes = logits_batch.shape[-1]
    if label_batch.ndim == logits_batch.ndim:  # a shape, static under jit
        one_hot = label_batch.astype(logits_batch.dtype)
    else:
        one_hot = jax.nn.one_hot(label_batch, num_classes, dtype=logits_batch.dtype)
    # The smoothing formula itself, always applied (0 leaves the labels as they are), so a
    # traced label_smoothing works: `if label_smoothing:` would not.
    smoothed = one_hot * (1.0 - label_smoothing) + label_smoothing / num_classes
    per_example = optax.softmax_cross_entropy(logits_batch, smoothed)
    if mask_batch is not None:
        per_example = per_example * mask_batch
        n_valid = mask_batch.sum()
    else:
        n_valid = jnp.asarray(per_example.shape[0], dtype=per_example.dtype)
    return {"summed": per_example.sum(), "n_valid_examples": n_valid, "per_example": per_example}


def classification_outputs(logits, batch, loss_fn) -> dict[str, jnp.ndarray]:
    """Sums over the valid rows of one eval batch (`metrics.classification()` reads them)."""
    weights = batch["weights"]
    targets = batch["targets"]
    labels = targets.argmax(-1) if targets.ndim == logits.ndim else targets
    correct = (logits.argmax(-1) == labels).astype(weights.dtype)
    losses = loss_fn(targets, logits, weights)["per_example"]
    return {
        "correct": (correct * weights).sum(),
        "loss_sum": losses.sum(),
        metrics.NUM_EXAMPLES: weights.sum(),
    }


class JaxClassifier(JaxWorkload):
    """A JAX classifier: softmax cross-entropy loss, accuracy and loss as eval metrics."""

    eval_metrics = metrics.classification()

    def loss_fn(
        self,
        label_batch: spec.Tensor,
        logits_batch: spec.Tensor,
        mask_batch: spec.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, spec.Tensor]:
        return softmax_cross_entropy(label_batch, logits_batch, mask_batch, label_smoothing)

    def eval_outputs(self, logits, batch) -> dict[str, jnp.ndarray]:
        return classification_outputs(logits, batch, self.loss_fn)
