"""Linear warmup then cosine decay to 0, written once for both frameworks.

`warmup_cosine(step, ...)` uses only array ops of the module passed as `xp`: numpy (or plain
floats) for PyTorch's `LambdaLR`, `jax.numpy` for an optax schedule traced inside `jit`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

# Fraction of `workload.step_hint` the schedule spans when a point has no `step_hint_factor`:
# the baselines stop decaying at 3/4 of the hint so the tail of the budget trains at lr ~ 0.
DEFAULT_STEP_HINT_FACTOR = 0.75


def warmup_cosine(
    step: Any,
    *,
    peak_lr: float,
    warmup_steps: int,
    total_steps: int,
    xp: Any = np,
    dtype: Any = np.float64,
) -> Any:
    """The learning rate used by update number `step` (0 for the first update).

    The rate rises linearly from 0 at step 0 to `peak_lr` at step `warmup_steps`, then follows
    a half cosine down to 0 at step `total_steps`, and stays 0 after it.

    Args:
        step: The number of updates already taken (an int, or an integer array under `jit`).
        peak_lr: The rate at the end of warmup.
        warmup_steps: Length of the warmup (0: start at the peak).
        total_steps: Step at which the rate reaches 0 (at least `warmup_steps`).
        xp: `numpy` or `jax.numpy`; must offer `asarray`, `ones_like`, `clip`, `cos`, `where`.
        dtype: The float type of the computation (float32 under JAX without x64).
    """
    decay_steps = max(total_steps - warmup_steps, 1)
    if xp is np and isinstance(step, int):
        # The per-step host path (LambdaLR): plain floats, the same formula, ~10x cheaper.
        if step < warmup_steps:
            return peak_lr * step / warmup_steps
        progress = min(max((step - warmup_steps) / decay_steps, 0.0), 1.0)
        return peak_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    step = xp.asarray(step, dtype=dtype)
    warmup_fraction = step / warmup_steps if warmup_steps > 0 else xp.ones_like(step)
    progress = xp.clip((step - warmup_steps) / decay_steps, 0.0, 1.0)
    cosine_fraction = 0.5 * (1.0 + xp.cos(math.pi * progress))
    return peak_lr * xp.where(step < warmup_steps, warmup_fraction, cosine_fraction)


@dataclasses.dataclass(frozen=True)
class WarmupCosine:
    """The schedule of one trial: `schedule(step)` -> learning rate (a Python float).

    A plain object holding numbers (not a closure), so torch's `LambdaLR.state_dict()` stores its
    fields. `LambdaLR` multiplies the optimizer's base lr by its function: give it
    `schedule.multiplier()`, the same shape with a peak of 1.
    """

    peak_lr: float
    warmup_steps: int
    total_steps: int

    def __call__(self, step: int) -> float:
        return float(
            warmup_cosine(
                step,
                peak_lr=self.peak_lr,
                warmup_steps=self.warmup_steps,
                total_steps=self.total_steps,
            )
        )

    def multiplier(self) -> WarmupCosine:
        """The schedule divided by its peak (a factor for `LambdaLR`)."""
        return dataclasses.replace(self, peak_lr=1.0)

    def jax(self, step):
        """The same schedule on a traced step count (an optax schedule)."""
        import jax.numpy as jnp

        return warmup_cosine(
            step,
            peak_lr=self.peak_lr,
            warmup_steps=self.warmup_steps,
            total_steps=self.total_steps,
            xp=jnp,
            dtype=jnp.float32,
        )


def schedule_for(step_hint: int, hyperparameters: Any) -> WarmupCosine:
    """The warmup+cosine schedule of a trial from `workload.step_hint` and its hyperparameters.

    Reads `learning_rate` and `warmup_factor` (the warmup's fraction of the schedule), and
    `step_hint_factor` when the point has it (else `DEFAULT_STEP_HINT_FACTOR`).
    """
    factor = getattr(hyperparameters, "step_hint_factor", DEFAULT_STEP_HINT_FACTOR)
    total_steps = max(int(step_hint * factor), 1)
    warmup_steps = int(hyperparameters.warmup_factor * total_steps)
    return WarmupCosine(
        peak_lr=float(hyperparameters.learning_rate),
        warmup_steps=warmup_steps,
        total_steps=total_steps,
    )
