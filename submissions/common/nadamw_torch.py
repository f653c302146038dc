"""NAdamW for PyTorch: Adam with Nesterov momentum and decoupled weight decay, on foreach ops.

The update (the AlgoPerf NAdamW baseline's form, after Dozat 2016), per step t = 1, 2, ...:

    m_t = b1 m_{t-1} + (1 - b1) g          v_t = b2 v_{t-1} + (1 - b2) g^2
    p  <- p (1 - lr wd)
    p  <- p - lr [(b1 m_t + (1 - b1) g) / (1 - b1^t)] / (sqrt(v_t / (1 - b2^t)) + eps)

`submissions/common/nadamw_jax.py` is the same rule as an optax transformation.
"""

from __future__ import annotations

import math

import torch


class NAdamW(torch.optim.Optimizer):
    """NAdamW over multi-tensor (`torch._foreach_*`) kernels.

    The step count lives in each param group (`group["step"]`, a Python int), so the bias
    corrections are host arithmetic: the step never reads a device value. It is saved with the
    groups by `state_dict()`.

    Args:
        params: Parameters or param-group dicts.
        lr: Learning rate (a scheduler may overwrite `group["lr"]` every step).
        betas: (b1, b2), the decay rates of the first and second moments.
        eps: Added to the root of the second moment.
        weight_decay: Decoupled weight decay; parameters shrink by `lr * weight_decay` per step.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        if lr < 0:
            raise ValueError(f"NAdamW: lr must be >= 0, got {lr}")
        if not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"NAdamW: betas must lie in [0, 1), got {betas}")
        if eps < 0 or weight_decay < 0:
            raise ValueError(
                f"NAdamW: eps and weight_decay must be >= 0, got {eps}, {weight_decay}"
            )
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._update_group(group, params)
        return loss

    def _update_group(self, group: dict, params: list[torch.Tensor]) -> None:
        beta1, beta2 = group["betas"]
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        grads = [p.grad for p in params]
        for p in params:
            if not self.state[p]:
                self.state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                self.state[p]["exp_avg_sq"] = torch.zeros_like(
                    p, memory_format=torch.preserve_format
                )
        exp_avgs = [self.state[p]["exp_avg"] for p in params]
        exp_avg_sqs = [self.state[p]["exp_avg_sq"] for p in params]
        step = group["step"] = group.get("step", 0) + 1

        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
        if weight_decay != 0:
            torch._foreach_mul_(params, 1.0 - lr * weight_decay)
        # Nesterov: the momentum one step ahead, b1 m_t + (1 - b1) g.
        numerators = torch._foreach_mul(exp_avgs, beta1)
        torch._foreach_add_(numerators, grads, alpha=1.0 - beta1)
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denominators, math.sqrt(1.0 - beta2**step))
        torch._foreach_add_(denominators, eps)
        torch._foreach_addcdiv_(params, numerators, denominators, value=-lr / (1.0 - beta1**step))
