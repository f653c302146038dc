"""Process-wide settings, made once by the entry point (importing a module changes nothing)."""

from __future__ import annotations

import importlib
import logging
import os

from algoperf import versions

_SETUP_MODULES = {"pytorch": "algoperf.torch.setup", "jax": "algoperf.jax.setup"}


def configure_process(
    framework: str, benchmark_version: str, *, deterministic: bool = False
) -> None:
    """Environment, precision and RNG settings for a run in `framework`.

    TF32: benchmark v1.0 makes TF32 matmuls the default on GPUs (docs/rules.md, "Benchmark
    versions"); earlier versions ran plain fp32. On CPUs neither setting changes anything.
    """
    version = versions.get_version(benchmark_version)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # A PyTorch run may import jax (e.g. a submission helper): keep it off the GPUs' memory.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    setup = importlib.import_module(_SETUP_MODULES[framework])
    setup.configure(tf32=version.tf32, deterministic=deterministic)
    logging.getLogger("absl").setLevel(logging.WARNING)
