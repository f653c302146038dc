"""The JAX device probe for algoperf/telemetry.py: device name, matmul precision, memory, and
forward FLOPs from XLA's cost analysis of the lowered forward pass."""

from __future__ import annotations

import jax
import numpy as np

from algoperf import spec, telemetry


class JaxProbe:
    def __init__(self) -> None:
        device = jax.local_devices()[0]
        self._devices = jax.local_devices()
        self._gpu = device.platform == "gpu"
        self.device_name = device.device_kind if self._gpu else None
        """The GPU's name (None on a CPU)."""

    def precision(self, params) -> str:
        """The parameters' dtype, fp32 as TF32 where the run allows TF32 (benchmark v1.0)."""
        leaves = jax.tree.leaves(params)
        if leaves and leaves[0].dtype in (jax.numpy.bfloat16, jax.numpy.float16):
            return "bf16"
        highest = jax.config.jax_default_matmul_precision in ("highest", "float32")
        return "fp32" if highest else "tf32"

    def memory(self) -> dict[str, float]:
        """Peak bytes in use on the busiest local GPU (since the process started: XLA keeps no
        resettable peak), or the process's RSS on a CPU."""
        if self._gpu:
            peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use", 0) for d in self._devices]
            return {telemetry.DEVICE_MEMORY: max(peaks) / 2**30}
        return {telemetry.HOST_RSS: telemetry.host_rss_gib()}

    def forward_flops_per_example(self, workload, params, model_state, examples: int):
        """FLOPs of one eval-mode forward pass per example, from the cost analysis of the
        lowered (not compiled) computation on a fake batch of `examples`; None if XLA gives
        none."""
        batch = jax.tree.map(np.asarray, workload.fake_batch(examples))
        rng = jax.random.PRNGKey(0)

        def forward(params, model_state, batch):
            logits, _ = workload.model_fn(
                params, batch, model_state, spec.ForwardPassMode.EVAL, rng, False
            )
            return logits

        cost = jax.jit(forward).lower(params, model_state, batch).cost_analysis()
        if isinstance(cost, list | tuple):
            cost = cost[0] if cost else None
        flops = (cost or {}).get("flops")
        return None if flops is None or flops <= 0 else float(flops) / examples


def make_probe(backend) -> JaxProbe:
    del backend
    return JaxProbe()
