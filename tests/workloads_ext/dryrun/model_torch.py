"""The dry-run model in PyTorch: masked features -> Linear(16) -> ReLU -> Linear(3 labels)."""

import torch.nn.functional as F
from torch import nn

from algoperf.torch.workload import TorchWorkload
from algoperf.workloads.dryrun.metrics import EVAL_METRICS


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden, self.out = nn.Linear(8, 16), nn.Linear(16, 3)

    def forward(self, features, mask):
        return self.out(F.relu(self.hidden(features * mask)))


class Workload(TorchWorkload):
    output_param_prefixes = ("out.",)
    eval_metrics = EVAL_METRICS

    def build_model(self, **model_kwargs):
        return Net(**model_kwargs)

    def model_inputs(self, batch):
        return batch["inputs"]["features"], batch["inputs"]["mask"]

    def loss_fn(self, label_batch, logits_batch, mask_batch=None, label_smoothing=0.0):
        targets = label_batch * (1 - label_smoothing) + 0.5 * label_smoothing
        losses = F.binary_cross_entropy_with_logits(logits_batch, targets, reduction="none")
        per_example = losses.mean(-1)
        if mask_batch is not None:
            per_example = per_example * mask_batch
        n_valid = (
            mask_batch.sum() if mask_batch is not None else per_example.new_tensor(len(per_example))
        )
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
            "scores": logits.sigmoid(),
            "labels": batch["targets"],
            "valid": weights,
        }
