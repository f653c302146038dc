"""Seed derivation without a framework: the key tree of upstream's PyTorch path, made cheap.

Upstream emulates JAX's key API with numpy `RandomState` objects (two per step). We keep the same
tree (seed -> key -> 4-way split -> per step fold_in + 4-way split) with keys that are int pairs
in [0, 2**31 - 1), but derive them with a splitmix64 hash, the same values on every platform.
The runner's per-step keys come from `StepKeys`, which derives them for a block of steps at once
in numpy (identical values to `split(fold_in(key, step), 4)`; under a microsecond per step,
where the scalar path costs ~30 us in Python). JAX runs use `jax.random` through the JAX backend.
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


def _splitmix64_array(x: np.ndarray) -> np.ndarray:
    """`_splitmix64` over a uint64 array (numpy's uint64 arithmetic wraps modulo 2**64)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _ints_array(h: np.ndarray) -> np.ndarray:
    """`_ints` over a uint64 array: [..., 2] int64 pairs."""
    mod = np.uint64(_MOD31)
    return np.stack([h % mod, (h >> np.uint64(33)) % mod], axis=-1).astype(np.int64)


def step_keys(key: np.ndarray, start: int, count: int, num: int = 4) -> np.ndarray:
    """`split(fold_in(key, step), num)` for steps start..start+count-1: shape [count, num, 2]."""
    if start < 0:
        raise ValueError(f"step_keys: start must be >= 0, got {start}")
    steps = np.arange(start, start + count, dtype=np.uint64)
    # fold_in: the hash of (0xF01D, k0, k1) is shared by every step; only the last round varies.
    prefix = np.uint64(_hash(0xF01D, int(key[0]), int(key[1])))
    folded = _ints_array(_splitmix64_array(prefix ^ steps)).astype(np.uint64)  # [count, 2]
    # split: _hash(0x5917, f0, f1, i) for i < num.
    state = np.uint64(_hash(0x5917))
    state = _splitmix64_array(state ^ folded[:, 0])
    state = _splitmix64_array(state ^ folded[:, 1])
    index = np.arange(num, dtype=np.uint64)
    return _ints_array(_splitmix64_array(state[:, None] ^ index[None, :]))


class StepKeys:
    """The runner's per-step keys (`split(fold_in(key, step), 4)`), derived a block at a time.

    `for_step(step)` returns 4 int64 pairs; consecutive steps are served from one precomputed
    block of `block` steps, so the per-step cost is a list lookup.
    """

    def __init__(self, key, *, num: int = 4, block: int = 1024) -> None:
        self.key = key
        self._values = (int(key[0]), int(key[1]))
        self._num = num
        self._block = block
        self.start = 0
        """The first step of the current block; `rows[step - start]` are that step's keys."""
        self.rows: list = []

    def matches(self, key) -> bool:
        """Whether `key` has this key's values (then it becomes the key checked by identity)."""
        if key is self.key:
            return True
        if (int(key[0]), int(key[1])) != self._values:
            return False
        self.key = key
        return True

    def for_step(self, step: int) -> tuple[np.ndarray, ...]:
        offset = step - self.start
        if not 0 <= offset < len(self.rows):
            self.start, offset = step, 0
            keys = step_keys(self.key, step, self._block, self._num)
            self.rows = [tuple(row) for row in keys]
        return self.rows[offset]


def trial_seed(rng_seed: int, trial_index: int) -> int:
    """A distinct 31-bit seed per trial from one user seed (upstream reuses one seed: a bug)."""
    return _hash(0x7121A1, rng_seed, trial_index) % _MOD31


def halton_seed(seed: int, study_index: int) -> int:
    """The scrambling seed of one study's Halton sampler, stable across processes and Pythons.

    Args:
        seed: The tuning seed (non-negative).
        study_index: The study number (non-negative).
    """
    return int(np.random.SeedSequence([seed, study_index]).generate_state(1)[0])


def study_run_seed(sweep_seed: int, study: int, workload: str) -> int:
    """The run seed of one (study, workload) of a sweep, from its seed (no salted hash())."""
    name_code = int.from_bytes(workload.encode()[:16].ljust(16, b"\0"), "big")
    return trial_seed(trial_seed(sweep_seed, study), name_code % (2**61))


def seed_from_key(key) -> int:
    """An integer seed from a key of either framework (numpy pair or raw JAX key data)."""
    data = np.asarray(key).astype(np.uint64).ravel()
    return int(_hash(*[int(v) for v in data]) % _MOD31)
