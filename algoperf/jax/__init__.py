"""JAX plumbing: the 1-D batch mesh and shardings, the JAX Workload base, the runner backend.

The only place in `algoperf/` that imports jax or flax.
"""
