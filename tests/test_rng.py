"""The framework-free key derivation (algoperf/rng.py): block derivation equals the scalar path."""

from __future__ import annotations

import numpy as np
import pytest

from algoperf import rng


def scalar_step_keys(key, step, num=4):
    return rng.split(rng.fold_in(key, step), num)


@pytest.mark.parametrize("seed", [0, 1, 2**31 - 2, 123456789])
@pytest.mark.parametrize("start", [0, 7, 1023, 10**9])
def test_step_keys_block_equals_split_of_fold_in(seed, start):
    key = rng.prng_key(seed)
    block = rng.step_keys(key, start, 40)
    assert block.shape == (40, 4, 2) and block.dtype == np.int64
    for offset in range(40):
        np.testing.assert_array_equal(block[offset], scalar_step_keys(key, start + offset))
    assert ((block >= 0) & (block < 2**31 - 1)).all()


def test_step_keys_serves_any_step_order_and_key_change():
    key, other = rng.prng_key(3), rng.prng_key(4)
    keys = rng.StepKeys(key, block=16)
    for step in [0, 1, 15, 16, 17, 5, 100, 99, 0]:
        got = keys.for_step(step)
        assert len(got) == 4
        np.testing.assert_array_equal(np.stack(got), scalar_step_keys(key, step))
    assert keys.matches(key) and not keys.matches(other)
    copy = key.copy()
    assert keys.matches(copy) and keys.key is copy  # later steps compare by identity


def test_torch_backend_step_rngs_follow_the_key_passed():
    from algoperf.torch.backend import TorchBackend

    backend = TorchBackend()
    first, second = rng.prng_key(5), rng.prng_key(6)
    for key in (first, second, first):
        for step in (0, 1, 2000, 3):
            np.testing.assert_array_equal(
                np.stack(backend.step_rngs(key, step)), scalar_step_keys(key, step)
            )


def test_step_keys_is_distinct_across_steps_and_splits():
    block = rng.step_keys(rng.prng_key(0), 0, 2000)
    pairs = {tuple(pair) for pair in block.reshape(-1, 2)}
    assert len(pairs) == 2000 * 4


def test_torch_backend_step_rng_block_holds_the_step():
    from algoperf.torch.backend import TorchBackend

    backend = TorchBackend()
    key = rng.prng_key(7)
    for step in (0, 5, 1023, 1024, 3000, 2):
        start, rows = backend.step_rng_block(key, step)
        assert 0 <= step - start < len(rows)
        for offset in (step - start, 0, len(rows) - 1):
            np.testing.assert_array_equal(
                np.stack(rows[offset]), scalar_step_keys(key, start + offset)
            )
