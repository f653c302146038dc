"""The fixed hyperparameters of the self-tuning NAdamW (the runner passes `None` for them)."""

from __future__ import annotations

from typing import NamedTuple


class Hyperparameters(NamedTuple):
    learning_rate: float = 0.002
    one_minus_beta1: float = 0.1
    beta2: float = 0.995
    weight_decay: float = 0.08
    warmup_factor: float = 0.05
    label_smoothing: float = 0.1
    dropout_rate: float = 0.0
    # Self-tuning runs get 1.5x the external budget, so the schedule may span the whole
    # step_hint (about 2/3 of that budget) instead of the external default 0.75 of it.
    step_hint_factor: float = 1.0


HYPERPARAMETERS = Hyperparameters()
