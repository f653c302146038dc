"""Compatibility names for JAX submissions written for upstream (`from algoperf import
jax_sharding_utils`): a 1-D mesh over all devices with the batch on dim 0."""

from algoperf.jax.sharding import (  # noqa: F401
    display_shard_info,
    get_batch_dim_sharding,
    get_mesh,
    get_replicate_sharding,
    replicate,
    shard_along_batch_dim,
)
