"""Process-wide JAX settings (called once by algoperf.process.configure_process)."""

from __future__ import annotations

import os

import jax

DETERMINISTIC_XLA_FLAG = "--xla_gpu_deterministic_ops=true"


def configure(*, tf32: bool, deterministic: bool) -> None:
    if deterministic and DETERMINISTIC_XLA_FLAG not in os.environ.get("XLA_FLAGS", ""):
        # XLA on CPU is deterministic for fixed shapes; on GPUs, scatter-adds and some reductions
        # use atomics unless told otherwise. XLA reads XLA_FLAGS when its first backend starts,
        # which happens after this (configure_process runs before any array is made).
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} {DETERMINISTIC_XLA_FLAG}".strip()
    jax.config.update("jax_default_prng_impl", "threefry2x32")
    jax.config.update("jax_threefry_partitionable", True)
    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if tf32 else "highest")
