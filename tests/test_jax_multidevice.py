"""JAX over several devices of one process (`XLA_FLAGS=--xla_force_host_platform_device_count=2`):
the NAdamW reference trains the same params on 2 devices as on 1, input batches are split over the
devices, and `algoperf run --framework jax` works on 2 host devices.

Each case runs in a subprocess (the device count is fixed when jax starts); this file is also the
worker script: `python tests/test_jax_multidevice.py --worker --out FILE`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
GLOBAL_BATCH = 32
STEPS = 3
# No warmup (the reference schedules start at lr 0), so 3 steps move the weights by ~4e-3 each.
HPARAMS = {
    "learning_rate": 0.003,
    "one_minus_beta1": 0.1,
    "beta2": 0.99,
    "weight_decay": 0.05,
    "warmup_factor": 0.0,
    "label_smoothing": 0.0,
    "dropout_rate": 0.0,
}
# float32: the 2-device loss is two per-device partial sums combined by XLA's all-reduce, one
# device sums in one go; rounding differences of ~1e-7 relative in the gradients, which NAdamW's
# division by sqrt(v) can amplify for near-zero gradients. A math error (rows, scaling) would show
# at the size of an update, ~4e-3.
PARAM_ATOL = 1e-5


def subprocess_env(device_count: int) -> dict[str, str]:
    flags = f"--xla_force_host_platform_device_count={device_count}"
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONWARNINGS": "ignore",
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip(),
        "JAX_PLATFORMS": "cpu",
    }


def run_worker(device_count: int, out: pathlib.Path, data_dir: pathlib.Path) -> None:
    command = [sys.executable, __file__, "--worker", "--out", str(out), "--data_dir", str(data_dir)]
    done = subprocess.run(
        command, env=subprocess_env(device_count), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]


def worker(out: str, data_dir: str) -> None:
    """K NAdamW steps on fixed global batches; saves params and what the shardings were."""
    import jax

    from algoperf import workloads
    from algoperf.jax import sharding
    from algoperf.process import configure_process
    from algoperf.search_space import hparams_from_json
    from algoperf.submission import load_submission
    from algoperf.workloads.mnist.input_pipeline import fake_batch

    configure_process("jax", "v1.0")
    workload = workloads.load("mnist", "jax")
    submission = load_submission(ROOT / "submissions" / "nadamw" / "submission_jax.py")
    hyperparameters = hparams_from_json(HPARAMS)
    params, model_state = workload.init_model_fn(jax.random.PRNGKey(0))
    initial = {
        f"initial{jax.tree_util.keystr(path)}": np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    }
    optimizer_state = submission.init_optimizer_state(
        workload, params, model_state, hyperparameters, jax.random.PRNGKey(1)
    )
    for step in range(STEPS):
        batch = sharding.shard_along_batch_dim(fake_batch(GLOBAL_BATCH, layout="NHWC", seed=step))
        optimizer_state, params, model_state = submission.update_params(
            workload, params, workload.model_params_types, model_state, hyperparameters, batch,
            workload.loss_type, optimizer_state, [], step, jax.random.PRNGKey(2 + step),
        )  # fmt: skip
    queue = workload._build_input_queue(jax.random.PRNGKey(3), "train", data_dir, GLOBAL_BATCH)
    queued = next(queue)
    leaves = jax.tree_util.tree_leaves_with_path(params)
    arrays = {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}
    facts = {
        "device_count": jax.device_count(),
        "batch_devices": len(queued["inputs"].sharding.device_set),
        "batch_shard_rows": sorted({s.data.shape[0] for s in queued["inputs"].addressable_shards}),
        "batch_rows": int(queued["inputs"].shape[0]),
        "param_devices": min(len(leaf.sharding.device_set) for _, leaf in leaves),
        "params_replicated": all(leaf.sharding.is_fully_replicated for _, leaf in leaves),
    }
    np.savez(out, facts=json.dumps(facts), **arrays, **initial)


def load(out: pathlib.Path) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(out) as content:
        facts = json.loads(str(content["facts"]))
        return facts, {key: content[key] for key in content.files if key != "facts"}


@pytest.mark.slow
def test_two_devices_train_like_one(tmp_path):
    run_worker(1, tmp_path / "one.npz", tmp_path / "data")
    run_worker(2, tmp_path / "two.npz", tmp_path / "data")
    one_facts, one = load(tmp_path / "one.npz")
    two_facts, two = load(tmp_path / "two.npz")
    assert one_facts["device_count"] == 1 and two_facts["device_count"] == 2
    # The input queue's batch is one global array split over both devices, half the rows each.
    assert two_facts["batch_devices"] == 2 and two_facts["batch_rows"] == GLOBAL_BATCH
    assert two_facts["batch_shard_rows"] == [GLOBAL_BATCH // 2]
    assert two_facts["param_devices"] == 2 and two_facts["params_replicated"]
    assert one.keys() == two.keys() and one
    moved = 0.0
    for key in (k for k in one if not k.startswith("initial")):
        np.testing.assert_allclose(two[key], one[key], rtol=0, atol=PARAM_ATOL, err_msg=key)
        moved = max(moved, np.abs(one[key] - one[f"initial{key}"]).max())
    assert moved > 1e-3  # the comparison is sharp: training moved the weights far past atol


@pytest.mark.slow
def test_algoperf_run_on_two_host_devices(tmp_path):
    args = [
        "--framework", "jax", "--workload", "mnist", "--max_global_steps", "5",
        "--download", "false", "--progress", "false", "--data_dir", str(tmp_path / "data"),
        "--experiment_dir", str(tmp_path / "exp"), "--experiment_name", "two_devices",
    ]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "algoperf", "run", *args],
        cwd=tmp_path,
        env=subprocess_env(2),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    trial = tmp_path / "exp" / "two_devices" / "mnist_jax" / "trial_1"
    meta = json.loads((trial / "meta_data_0.json").read_text())
    assert meta["device_count"] == 2
    with open(trial / "eval_measurements.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[-1]["global_step"] == "5"
    assert rows[-1]["validation/num_examples"] == "500"  # every example once over the devices


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="worker of tests/test_jax_multidevice.py")
    parser.add_argument("--worker", action="store_true", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--data_dir", required=True)
    cli_args = parser.parse_args()
    worker(cli_args.out, cli_args.data_dir)
