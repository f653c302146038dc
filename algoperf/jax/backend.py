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
    needs_sync = True  # dispatch is asynchronous on every platform, the CPU included

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

    def step_rng_block(self, key, step: int):
        return step, (self.step_rngs(key, step),)  # one step: JAX keys are derived on dispatch

    def sync(self, *trees) -> None:
        jax.block_until_ready(trees)

    def agree_max(self, values: list[float]) -> list[float]:
        if self.world_size == 1:
            return list(values)
        from jax.experimental import multihost_utils

        gathered = multihost_utils.process_allgather(np.asarray(values, np.float64))
        return np.max(gathered, axis=0).tolist()

    def prepare_model(self, workload, params, *, compile_model: bool):
        del workload, compile_model  # XLA compiles under jit; nothing to do here
        return params

    def reset_memory(self) -> None:
        pass

    # --- checkpoints (algoperf/checkpoint.py) ---------------------------------------------
    @staticmethod
    def _tree(variables):
        optimizer = variables.optimizer_state
        # Upstream's JAX convention: (opt_state, opt_update_fn); only opt_state is data.
        opt_state = optimizer[0] if isinstance(optimizer, tuple) else optimizer
        return {
            "params": variables.params,
            "model_state": variables.model_state,
            "opt_state": opt_state,
        }

    def save_state(self, folder, variables) -> None:
        from algoperf.jax import checkpoint

        checkpoint.save_tree(folder, self._tree(variables))

    def load_state(self, folder, variables):
        from algoperf.jax import checkpoint
        from algoperf.jax.sharding import replicate

        restored = replicate(checkpoint.restore_tree(folder, self._tree(variables)))
        variables.params, variables.model_state = restored["params"], restored["model_state"]
        optimizer = variables.optimizer_state
        if isinstance(optimizer, tuple):
            variables.optimizer_state = (restored["opt_state"], *optimizer[1:])
        else:
            variables.optimizer_state = restored["opt_state"]
        return variables

    def barrier(self) -> None:
        if self.world_size > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("algoperf")


def make_backend() -> JaxBackend:
    return JaxBackend()
