"""The dry-run model in JAX: masked features -> Dense(16) -> ReLU -> Dense(3 labels)."""

import jax.numpy as jnp
import optax
from flax import linen as nn

from algoperf.jax.workload import JaxWorkload
from algoperf.workloads.dryrun.metrics import EVAL_METRICS


class Net(nn.Module):
    @nn.compact
    def __call__(self, features, mask, train=False):
        hidden = nn.relu(nn.Dense(16, name="hidden")(features * mask))
        return nn.Dense(3, name="out")(hidden)


class Workload(JaxWorkload):
    output_param_prefixes = ("out",)
    eval_metrics = EVAL_METRICS
    data_layout = "NHWC"

    def build_model(self, **model_kwargs):
        return Net(**model_kwargs)

    def init_inputs(self):
        return jnp.zeros((1, 8)), jnp.ones((1, 8))

    def model_inputs(self, batch):
        return batch["inputs"]["features"], batch["inputs"]["mask"]

    def loss_fn(self, label_batch, logits_batch, mask_batch=None, label_smoothing=0.0):
        targets = label_batch * (1 - label_smoothing) + 0.5 * label_smoothing
        per_example = optax.sigmoid_binary_cross_entropy(logits_batch, targets).mean(-1)
        if mask_batch is not None:
            per_example = per_example * mask_batch
        n_valid = mask_batch.sum() if mask_batch is not None else jnp.float32(len(per_example))
        return {
            "summed": per_example.sum(),
            "n_valid_examples": n_valid,
            "per_example": per_example,
        }

    def eval_outputs(self, logits, batch):
        weights = batch["weights"]
        losses = self.loss_fn(batch["targets"], logits, weights)["per_example"]
        return {
            "loss_sum": losses.sum(),
            "num_examples": weights.sum(),
            "scores": nn.sigmoid(logits),
            "labels": batch["targets"],
            "valid": weights,
        }
