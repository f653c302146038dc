"""Process-wide JAX settings (called once by algoperf.process.configure_process)."""

from __future__ import annotations

import jax


def configure(*, tf32: bool, deterministic: bool) -> None:
    del deterministic  # XLA CPU/GPU reductions used here are deterministic for fixed shapes
    jax.config.update("jax_default_prng_impl", "threefry2x32")
    jax.config.update("jax_threefry_partitionable", True)
    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if tf32 else "highest")
