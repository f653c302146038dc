"""The PyTorch device probe for algoperf/telemetry.py: device name, matmul precision, memory,
and forward FLOPs counted by `torch.utils.flop_counter.FlopCounterMode`."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from algoperf import spec, telemetry
from algoperf.torch.workload import to_torch, unwrap


class TorchProbe:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._cuda = device.type == "cuda"
        self.device_name = torch.cuda.get_device_name(device) if self._cuda else None
        """The GPU's name (None on a CPU)."""

    def precision(self, params) -> str:
        """The matmul precision the model trains at: its parameters' dtype, fp32 as TF32 where
        the run allows TF32 (benchmark v1.0 on GPUs)."""
        first = next(unwrap(params).parameters(), None)
        if first is not None and first.dtype in (torch.bfloat16, torch.float16):
            return "bf16"
        return "fp32" if torch.get_float32_matmul_precision() == "highest" else "tf32"

    def memory(self) -> dict[str, float]:
        """Peak allocated on the GPU since the trial started (no sync: an allocator counter), or
        the process's RSS on a CPU."""
        if self._cuda:
            return {telemetry.DEVICE_MEMORY: torch.cuda.max_memory_allocated(self.device) / 2**30}
        return {telemetry.HOST_RSS: telemetry.host_rss_gib()}

    def forward_flops_per_example(self, workload, params, model_state, examples: int) -> float:
        """FLOPs of one eval-mode forward pass per example, on a fake batch of `examples`.

        Eval mode under no_grad changes nothing the trial keeps: no dropout draws, no BN
        statistics, no gradients; the module's train/eval mode is put back.
        """
        model = unwrap(params)  # the module itself, not its compile or DDP wrapper
        batch = to_torch(workload.fake_batch(examples), self.device)
        training = model.training
        try:
            with FlopCounterMode(display=False) as counter:
                workload.model_fn(model, batch, model_state, spec.ForwardPassMode.EVAL, None, False)
        finally:
            model.train(training)
        return counter.get_total_flops() / examples


def make_probe(backend) -> TorchProbe:
    return TorchProbe(backend.device)
