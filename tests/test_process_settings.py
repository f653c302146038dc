"""Deterministic mode's process settings: what each framework needs set before its GPU work
starts (checked here on CPU by what they write; the GPU runs themselves need a GPU)."""

from __future__ import annotations

import os

import pytest
import torch


def test_jax_deterministic_adds_the_gpu_flag_once_and_keeps_the_users(monkeypatch):
    from algoperf.jax import setup

    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    setup.configure(tf32=False, deterministic=True)
    setup.configure(tf32=False, deterministic=True)
    assert setup.DETERMINISTIC_XLA_FLAG == "--xla_gpu_deterministic_ops=true"
    flags = os.environ["XLA_FLAGS"].split()
    assert flags == ["--xla_force_host_platform_device_count=2", setup.DETERMINISTIC_XLA_FLAG]


def test_jax_default_mode_leaves_xla_flags_alone(monkeypatch):
    from algoperf.jax import setup

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    setup.configure(tf32=True, deterministic=False)
    assert "XLA_FLAGS" not in os.environ


@pytest.fixture
def restore_torch_settings():
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.get_float32_matmul_precision(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.allow_tf32,
    )
    yield
    torch.use_deterministic_algorithms(saved[0])
    torch.set_float32_matmul_precision(saved[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = saved[2:]


def test_torch_deterministic_sets_cublas_workspace_and_strict_algorithms(
    monkeypatch, restore_torch_settings
):
    from algoperf.torch import setup

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    setup.configure(tf32=True, deterministic=True)
    # cuBLAS raises on a deterministic-mode matmul without a fixed workspace.
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.benchmark
    assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32


def test_torch_default_mode_benchmarks_cudnn_in_full_fp32_before_v1(restore_torch_settings):
    from algoperf.torch import setup

    setup.configure(tf32=False, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.allow_tf32
    assert torch.get_float32_matmul_precision() == "highest"
