"""AlgoPerf: the training-algorithms benchmark, PyTorch first, JAX behind the same interface.

Importing this package imports neither torch nor jax.
"""

__version__ = "0.1.0"
