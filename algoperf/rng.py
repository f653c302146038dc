"""Seed derivation without a framework: the key tree of upstream's PyTorch path, made cheap.

Upstream emulates JAX's key API with numpy `RandomState` objects (two per step). We keep the same
tree (seed -> key -> 4-way split -> per step fold_in + 4-way split) with keys that are int pairs
in [0, 2**31 - 1), but derive them with a splitmix64 hash: about a microsecond per step, and the
same values on every platform. JAX runs use `jax.random` through the JAX backend instead.
"""

from __future__ import annotations

import numpy as np

_MASK64 = (1 << 64) - 1
_MOD31 = (1 << 31) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _hash(*values: int) -> int:
    state = 0x243F6A8885A308D3
    for value in values:
        state = _splitmix64(state ^ (int(value) & _MASK64))
    return state


def _ints(h: int) -> tuple[int, int]:
    return (h & _MASK64) % _MOD31, (h >> 33) % _MOD31


def _pair(h: int) -> np.ndarray:
    return np.array(_ints(h), dtype=np.int64)


def prng_key(seed: int) -> np.ndarray:
    """A key (an int64 pair) from an integer seed; any Python int is accepted."""
    return _pair(_hash(0x5EED, seed))


def split(key: np.ndarray, num: int = 2) -> np.ndarray:
    """`num` independent keys from one key, as an array of shape (num, 2)."""
    k0, k1 = int(key[0]), int(key[1])
    # One array from Python ints (not a stack of small arrays): this runs every step.
    return np.array([_ints(_hash(0x5917, k0, k1, i)) for i in range(num)], dtype=np.int64)


def fold_in(key: np.ndarray, data: int) -> np.ndarray:
    """A key derived from `key` and an integer (the step number)."""
    return _pair(_hash(0xF01D, int(key[0]), int(key[1]), data))


def trial_seed(rng_seed: int, trial_index: int) -> int:
    """A distinct 31-bit seed per trial from one user seed (upstream reuses one seed: a bug)."""
    return _hash(0x7121A1, rng_seed, trial_index) % _MOD31


def seed_from_key(key) -> int:
    """An integer seed from a key of either framework (numpy pair or raw JAX key data)."""
    data = np.asarray(key).astype(np.uint64).ravel()
    return int(_hash(*[int(v) for v in data]) % _MOD31)
