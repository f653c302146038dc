"""The benchmark clock syncs the device before every reading, and only when there is a device."""

from __future__ import annotations

import numpy as np

from algoperf.clock import Clock


class FakeTime:
    def __init__(self, events):
        self.events = events

    def __call__(self):
        self.events.append("time")
        return 123.0


def test_every_reading_syncs_the_values_first():
    events = []
    clock = Clock(sync=lambda *values: events.append(("sync", values)), time_fn=FakeTime(events))
    assert clock.now("params") == 123.0
    assert clock.now() == 123.0
    assert events == [("sync", ("params",)), "time", ("sync", ()), "time"]


def test_no_sync_reads_the_time_only():
    events = []
    assert Clock(time_fn=FakeTime(events)).now("params") == 123.0
    assert events == ["time"]


class FakeBackend:
    def __init__(self, needs_sync):
        self.needs_sync = needs_sync
        self.synced = []

    def sync(self, *values):
        self.synced.append(values)


def test_clock_of_a_backend_syncs_only_when_work_is_queued():
    queued, cpu = FakeBackend(True), FakeBackend(False)
    Clock.of(queued).now("params")
    Clock.of(cpu).now("params")
    assert queued.synced == [("params",)]
    assert cpu.synced == []


def test_torch_cpu_needs_no_sync_and_cuda_does(monkeypatch):
    import torch

    from algoperf.torch.backend import TorchBackend

    backend = TorchBackend()
    assert backend.device.type == "cpu" and backend.needs_sync is False
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    backend._cuda = True  # what a CUDA device sets: now every reading waits for the kernels
    assert backend.needs_sync
    Clock.of(backend).now(object())
    assert calls == [backend.device]


def test_jax_clock_blocks_on_the_values(monkeypatch):
    import jax
    import jax.numpy as jnp

    from algoperf.jax.backend import JaxBackend

    blocked = []
    real = jax.block_until_ready
    monkeypatch.setattr(jax, "block_until_ready", lambda tree: blocked.append(tree) or real(tree))
    backend = JaxBackend()
    assert backend.needs_sync
    value = jnp.ones(3) * 2
    Clock.of(backend).now(value)
    assert len(blocked) == 1
    np.testing.assert_array_equal(np.asarray(blocked[0][0]), np.full(3, 2.0))
