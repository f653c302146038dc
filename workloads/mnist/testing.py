"""MNIST's declarations for the registry suite (tests/test_workload_registry.py): the MLP is tiny
already; fixture = the four idx files of random digits; the torch MLP nests its layers in `net`."""

from __future__ import annotations

import functools
import pathlib

from algoperf.workloads import parity
from algoperf.workloads.mnist import input_pipeline

NUM_TRAIN, NUM_TEST = 48, 12  # -> 40 train / 8 validation (5:1) / 12 test


def write_fixture(folder: pathlib.Path) -> pathlib.Path:
    """The four idx files (random pixels and labels) under `folder`; returns the --data_dir."""
    input_pipeline.write_random_files(folder, num_train=NUM_TRAIN, num_test=NUM_TEST)
    return folder


TESTS = parity.ModelTests(
    batch_size=8,
    output_shape=(10,),
    slow_jax=False,  # two dense layers: XLA compiles them in a second
    torch_to_flax=functools.partial(parity.torch_to_flax, strip_prefix="net."),
    # Two dense layers, |logits| ~ 1: summation order alone differs by a few 1e-7 (measured on a
    # 2-core x86 CPU: 2.5e-7 of max |logit| 1.6); a mapping error (an untransposed kernel) is
    # O(1), so 1e-4 leaves room for any CPU. One SGD step moves params by lr * grad ~ 1e-2;
    # their rounding is ~1e-8 (measured 1.5e-8).
    logits_rtol=1e-4,
    step_atol=1e-5,
    write_fixture=write_fixture,
    fixture_sizes={"validation": NUM_TRAIN - NUM_TRAIN * 5 // 6, "test": NUM_TEST},
    cli_options="",
    cli_metrics=("accuracy", "loss"),
)
