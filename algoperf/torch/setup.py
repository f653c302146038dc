"""Process-wide PyTorch settings (called once by algoperf.process.configure_process)."""

from __future__ import annotations

import os

import torch


def configure(*, tf32: bool, deterministic: bool) -> None:
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
