"""fastmri end to end on its fixture (h5 volumes in the release layout, run through prepare): two
PyTorch processes and two JAX devices evaluate every slice once and give one process's metrics,
and a trial stopped mid-way resumes to the uninterrupted trial's rows, with the slices built in
loader workers or in the main process alike."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from workload_runs import assert_rows_close, env, eval_rows, metric_values

from algoperf.workloads.fastmri import fixture

TINY = "model_kwargs={'num_channels':8,'num_pool_layers':2},image_size=32"
METRICS = ("loss", "ssim", "num_examples")


def rows(tmp_path, name, framework="pytorch") -> list[dict]:
    return eval_rows(tmp_path / "exp", name, "fastmri", framework)


def metrics(row: dict) -> dict[str, float]:
    return metric_values(row, METRICS)


def assert_metrics_close(got: list[dict], expected: list[dict], rtol: float) -> None:
    assert_rows_close(got, expected, METRICS, rtol)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return fixture.write_fixture(tmp_path_factory.mktemp("fastmri"))


def args(data_dir, tmp_path, name, framework="pytorch", steps=4, workers=0, *extra) -> list[str]:
    return [
        "-m", "algoperf", "run", "--workload", "fastmri", "--framework", framework,
        "--data_dir", str(data_dir), "--experiment_dir", str(tmp_path / "exp"),
        "--experiment_name", name, "--rng_seed", "2", "--max_global_steps", str(steps),
        "--eval_every_steps", "2", "--torch_compile", "false", "--download", "false",
        "--progress", "false", "--workload_options", f"{TINY},num_workers={workers}", *extra,
    ]  # fmt: skip


def run(command: list[str], **extra_env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        command, env=env(**extra_env), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_two_processes_and_two_devices_evaluate_every_slice_once(data_dir, tmp_path):
    run([sys.executable, *args(data_dir, tmp_path, "one")])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    run([*torchrun, *args(data_dir, tmp_path, "two")])
    single, double = rows(tmp_path, "one"), rows(tmp_path, "two")
    last = single[-1]
    assert last["validation/num_examples"] == str(fixture.SIZES["validation"])
    assert last["test/num_examples"] == str(fixture.SIZES["test"])
    assert 0 < float(last["validation/ssim"]) < 1
    # Each rank takes half of every batch's slices, every slice's mask is seeded by its index:
    # the same examples per step on 1 or 2 ranks; float32 sums in other orders.
    assert_metrics_close(double, single, rtol=1e-4)

    run([sys.executable, *args(data_dir, tmp_path, "jax1", "jax")])
    two_devices = "--xla_force_host_platform_device_count=2"
    run([sys.executable, *args(data_dir, tmp_path, "jax2", "jax")], XLA_FLAGS=two_devices)
    assert_metrics_close(rows(tmp_path, "jax2", "jax"), rows(tmp_path, "jax1", "jax"), rtol=1e-4)


@pytest.mark.slow
def test_a_stopped_trial_resumes_to_the_same_rows(data_dir, tmp_path):
    deterministic = ("--deterministic",)
    run([sys.executable, *args(data_dir, tmp_path, "straight", "pytorch", 12, 0, *deterministic)])
    # The stopped trial builds its slices in two loader workers: the batches may not depend on
    # who builds them, nor on the stop.
    stopped_args = args(data_dir, tmp_path, "stopped", "pytorch", 12, 2, *deterministic)
    process = subprocess.Popen(
        [sys.executable, *stopped_args], env=env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    trial = tmp_path / "exp" / "stopped" / "fastmri_pytorch" / "trial_1"
    deadline = time.time() + 300
    while time.time() < deadline and not (trial / "checkpoint_3" / "loop.json").exists():
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)  # checkpoint at the next step, then stop
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0 and "checkpoint saved at step" in stderr, stderr[-3000:]
    assert not (trial / "trial_complete.json").exists(), "finished before the stop"
    resumed = run([sys.executable, *stopped_args, "--resume_last_run"])
    assert "resuming" in resumed.stderr, resumed.stderr[-3000:]
    expected, got = rows(tmp_path, "straight"), rows(tmp_path, "stopped")
    assert [r["global_step"] for r in expected][-1] == "12"
    assert np.isfinite(float(expected[-1]["validation/ssim"]))
    assert [metrics(r) for r in got] == [metrics(r) for r in expected]
