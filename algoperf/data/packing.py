"""Greedy packing of variable-size examples into fixed budgets (docs/data.md, "Packing").

Examples (graphs, sequences) of different sizes are packed into packs of fixed capacity, so every
batch has static shapes: that is what lets `torch.compile` and `jax.jit` compile a step once.
Packing is greedy and order-preserving: examples are taken in the given order, and one that does
not fit the current pack's remaining budget starts the next pack (nothing is dropped or
reordered). The packs are a function of the order and the budget alone, never of the number of
ranks or devices that later read them.
"""

from __future__ import annotations

import numpy as np


def greedy_pack(
    sizes: np.ndarray, capacity: tuple[int, ...], max_items: int | None = None
) -> np.ndarray:
    """Cut a sequence of examples into consecutive packs.

    Args:
      sizes: [n, k] non-negative sizes of each example in k dimensions (e.g. nodes, edges).
      capacity: the k budgets of one pack.
      max_items: the most examples in one pack (None: no limit).

    Returns:
      int64 [num_packs + 1] boundaries: pack `p` holds examples `bounds[p]:bounds[p + 1]`.

    Raises:
      ValueError: an example larger than an empty pack's budget (it could never be packed).
    """
    sizes = np.asarray(sizes, np.int64)
    if sizes.ndim != 2 or sizes.shape[1] != len(capacity):
        raise ValueError(f"sizes must be [n, {len(capacity)}], got shape {sizes.shape}.")
    too_big = np.flatnonzero((sizes > np.asarray(capacity)).any(axis=1))
    if too_big.size:
        first = int(too_big[0])
        raise ValueError(
            f"example {first} (sizes {sizes[first].tolist()}) is larger than a pack's budget "
            f"{list(capacity)}; raise the budget."
        )
    limit = max(len(sizes), 1) if max_items is None else max_items
    if limit < 1:
        raise ValueError(f"max_items must be at least 1, got {max_items}.")
    # A plain Python loop over lists (the greedy rule is sequential): ~0.1 s per 350k examples.
    columns = [sizes[:, j].tolist() for j in range(sizes.shape[1])]
    bounds = [0]
    if len(capacity) == 2:  # the common case, unrolled
        (cap_a, cap_b), (col_a, col_b) = capacity, columns
        used_a = used_b = count = 0
        for i in range(len(sizes)):
            a, b = col_a[i], col_b[i]
            if count == limit or used_a + a > cap_a or used_b + b > cap_b:
                bounds.append(i)
                used_a = used_b = count = 0
            used_a += a
            used_b += b
            count += 1
    else:
        used, count = [0] * len(capacity), 0
        for i in range(len(sizes)):
            item = [column[i] for column in columns]
            if count == limit or any(u + s > c for u, s, c in zip(used, item, capacity)):
                bounds.append(i)
                used, count = [0] * len(capacity), 0
            used = [u + s for u, s in zip(used, item)]
            count += 1
    if len(sizes):
        bounds.append(len(sizes))
    return np.asarray(bounds, np.int64)


def ragged_positions(counts: np.ndarray) -> np.ndarray:
    """[0 .. counts[0]), [0 .. counts[1]), ... concatenated: each element's position within its
    own run (the gather/scatter index of ragged rows, without a Python loop)."""
    counts = np.asarray(counts, np.int64)
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts
    return np.arange(total, dtype=np.int64) - np.repeat(starts, counts)


def starts_within_packs(sizes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Each item's offset within its pack, for items listed pack by pack (`counts` items in each
    pack, `sizes` each item's size): where a packed item begins in its pack's row."""
    sizes, counts = np.asarray(sizes, np.int64), np.asarray(counts, np.int64)
    running = np.cumsum(sizes) - sizes
    first_item = np.repeat(np.cumsum(counts) - counts, counts)
    return running - running[first_item] if len(sizes) else running
