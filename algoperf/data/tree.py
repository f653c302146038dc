"""A minimal pytree map for batches (dicts, lists, tuples, named tuples of arrays), framework-free.

The framework bases use it to move nested batches to tensors or device arrays (JAX has its own
`jax.tree.map`; this one keeps the PyTorch path free of torch's private pytree module).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


def tree_map(fn: Callable[[Any], Any], tree: Any) -> Any:
    """`fn` applied to every leaf (anything but a mapping, list or tuple), structure kept."""
    if isinstance(tree, Mapping):
        return type(tree)((key, tree_map(fn, value)) for key, value in tree.items())
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # a named tuple
        return type(tree)(*(tree_map(fn, value) for value in tree))
    if isinstance(tree, list | tuple):
        return type(tree)(tree_map(fn, value) for value in tree)
    return fn(tree)


def leaves(tree: Any) -> list[Any]:
    """The leaves of `tree` in `tree_map`'s order."""
    found: list[Any] = []
    tree_map(found.append, tree)
    return found
