"""ogbg end to end on its fixture (a release in OGB's format, run through prepare): two PyTorch
processes and two JAX devices evaluate every graph once and give one process's metrics, and a
trial stopped mid-way resumes to the uninterrupted trial's rows."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from workload_runs import assert_rows_close, env, eval_rows, metric_values

from algoperf.workloads.ogbg import fixture

TINY = "model_kwargs={'latent_dim':8,'hidden_dims':[16],'num_message_passing_steps':2}"
METRICS = ("accuracy", "loss", "mean_average_precision", "num_examples")


def rows(tmp_path, name, framework="pytorch") -> list[dict]:
    return eval_rows(tmp_path / "exp", name, "ogbg", framework)


def metrics(row: dict) -> dict[str, float]:
    return metric_values(row, METRICS)


def assert_metrics_close(got: list[dict], expected: list[dict], rtol: float) -> None:
    assert_rows_close(got, expected, METRICS, rtol)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return fixture.write_fixture(tmp_path_factory.mktemp("ogbg"))


def args(data_dir, tmp_path, name, framework="pytorch", steps=4, *extra) -> list[str]:
    return [
        "-m", "algoperf", "run", "--workload", "ogbg", "--framework", framework,
        "--data_dir", str(data_dir), "--experiment_dir", str(tmp_path / "exp"),
        "--experiment_name", name, "--rng_seed", "2", "--max_global_steps", str(steps),
        "--eval_every_steps", "2", "--torch_compile", "false", "--download", "false",
        "--progress", "false", "--workload_options", TINY, *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_two_processes_and_two_devices_evaluate_every_graph_once(data_dir, tmp_path):
    one = subprocess.run(
        [sys.executable, *args(data_dir, tmp_path, "one")], env=env(), capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    two = subprocess.run(
        [*torchrun, *args(data_dir, tmp_path, "two")], env=env(), capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    single, double = rows(tmp_path, "one"), rows(tmp_path, "two")
    last = single[-1]
    assert last["validation/num_examples"] == str(fixture.SIZES["validation"])
    assert last["test/num_examples"] == str(fixture.SIZES["test"])
    assert np.isfinite(float(last["validation/mean_average_precision"]))
    # The same graphs per step on 1 or 2 ranks (packs of 16 of a 32-graph batch); float32
    # reductions in other orders: metrics agree to ~1e-6.
    assert_metrics_close(double, single, rtol=1e-4)

    jax_args = args(data_dir, tmp_path, "jax1", "jax")
    jax_one = subprocess.run([sys.executable, *jax_args], env=env(), capture_output=True,
                             text=True, timeout=600)  # fmt: skip
    assert jax_one.returncode == 0, jax_one.stderr[-3000:]
    jax_args = args(data_dir, tmp_path, "jax2", "jax")
    jax_two = subprocess.run(
        [sys.executable, *jax_args], capture_output=True, text=True, timeout=600,
        env=env(XLA_FLAGS="--xla_force_host_platform_device_count=2"),
    )  # fmt: skip
    assert jax_two.returncode == 0, jax_two.stderr[-3000:]
    assert_metrics_close(rows(tmp_path, "jax2", "jax"), rows(tmp_path, "jax1", "jax"), rtol=1e-4)


@pytest.mark.slow
def test_a_stopped_trial_resumes_to_the_same_rows(data_dir, tmp_path):
    deterministic = ("--deterministic",)
    straight = subprocess.run(
        [sys.executable, *args(data_dir, tmp_path, "straight", "pytorch", 40, *deterministic)],
        env=env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert straight.returncode == 0, straight.stderr[-3000:]
    stopped_args = args(data_dir, tmp_path, "stopped", "pytorch", 40, *deterministic)
    process = subprocess.Popen(
        [sys.executable, *stopped_args], env=env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    trial = tmp_path / "exp" / "stopped" / "ogbg_pytorch" / "trial_1"
    deadline = time.time() + 300
    while time.time() < deadline and not (trial / "checkpoint_3" / "loop.json").exists():
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)  # checkpoint at the next step, then stop
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0 and "checkpoint saved at step" in stderr, stderr[-3000:]
    assert not (trial / "trial_complete.json").exists(), "finished before the stop"
    resumed = subprocess.run(
        [sys.executable, *stopped_args, "--resume_last_run"], env=env(), capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0 and "resuming" in resumed.stderr, resumed.stderr[-3000:]
    expected, got = rows(tmp_path, "straight"), rows(tmp_path, "stopped")
    assert [r["global_step"] for r in expected][-1] == "40"
    assert [metrics(r) for r in got] == [metrics(r) for r in expected]
