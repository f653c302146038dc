"""The runner's JAX backend: jax.random keys, block_until_ready sync, multi-host agreement."""

from __future__ import annotations

import functools
import os

import jax
import numpy as np


@functools.partial(jax.jit, static_argnums=())
def _step_rngs(key, step):
    return jax.random.split(jax.random.fold_in(key, step), 4)


class JaxBackend:
    name = "jax"

    def __init__(self) -> None:
        # Multi-host: the launcher (Slurm, submitit, a user) provides the coordinator.
        if os.environ.get("JAX_COORDINATOR_ADDRESS") and jax.process_count() == 1:
            jax.distributed.initialize()
        self.rank = jax.process_index()
        self.world_size = jax.process_count()
        self.device_count = jax.device_count()

    def prng_key(self, seed: int):
        return jax.random.PRNGKey(seed % (2**32))

    def split(self, key, num: int) -> list:
        return list(jax.random.split(key, num))

    def step_rngs(self, key, step: int):
        keys = _step_rngs(key, step)  # one dispatch instead of five
        return keys[0], keys[1], keys[2], keys[3]

    def sync(self, *trees) -> None:
        jax.block_until_ready(trees)

    def agree_max(self, value: float) -> float:
        if self.world_size == 1:
            return value
        from jax.experimental import multihost_utils

        return float(np.max(multihost_utils.process_allgather(np.float64(value))))

    def prepare_model(self, workload, params, *, compile_model: bool):
        del workload, compile_model  # XLA compiles under jit; nothing to do here
        return params

    def reset_memory(self) -> None:
        pass

    def barrier(self) -> None:
        if self.world_size > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("algoperf")


def make_backend() -> JaxBackend:
    return JaxBackend()
