"""JAX sharding: one process drives all local devices over a 1-D batch mesh; params replicated."""

from __future__ import annotations

import functools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


@functools.cache
def get_mesh() -> Mesh:
    """A 1-D mesh over every device (all hosts), axis name `batch`."""
    return Mesh(np.array(jax.devices()), ("batch",))


def get_replicate_sharding() -> NamedSharding:
    return NamedSharding(get_mesh(), P())


def get_batch_dim_sharding() -> NamedSharding:
    return NamedSharding(get_mesh(), P("batch"))


def replicate(tree):
    """Place every leaf of `tree` on all devices."""
    return jax.device_put(tree, get_replicate_sharding())


def shard_along_batch_dim(tree):
    """Place a global batch (leading dim divisible by the device count) split over the mesh."""
    return jax.device_put(tree, get_batch_dim_sharding())


def shard_local_batch(tree):
    """A global array from this host's part of a batch (multi-host); same as above on one host."""
    if jax.process_count() == 1:
        return shard_along_batch_dim(tree)
    sharding = get_batch_dim_sharding()
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree
    )


def display_shard_info(x) -> None:
    """Print how an array is laid out over the devices."""
    jax.debug.visualize_array_sharding(x)
