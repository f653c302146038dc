"""A new workload on the platform: the dry-run workload (tests/workloads_ext/dryrun) is a
multi-label model on nested batches, scored by mean average precision gathered over a whole split.
It writes its spec, pipeline, metric and two small model files and nothing else; this file checks
that the platform then trains, evaluates and logs it in both frameworks, on 1 and 2 processes, and
counts the lines it had to write."""

from __future__ import annotations

import csv
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from algoperf import metrics

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
FOLDER = HERE / "workloads_ext" / "dryrun"
LAUNCHER = HERE / "workloads_ext" / "run_with_dryrun.py"
sys.path.insert(0, str(LAUNCHER.parent))
import run_with_dryrun  # noqa: E402

LINE_BUDGET = 220


@pytest.fixture
def dryrun():
    """The registry with `dryrun` in it (undone afterwards)."""
    from algoperf import workloads

    saved = workloads.BASE_WORKLOADS
    run_with_dryrun.register()
    yield workloads
    workloads.BASE_WORKLOADS = saved
    workloads._table.cache_clear()
    workloads.get_spec.cache_clear()


def code_lines(path: pathlib.Path) -> int:
    """Non-blank lines that are not comments (docstrings count: they are written too)."""
    lines = path.read_text().splitlines()
    return sum(1 for line in lines if line.strip() and not line.strip().startswith("#"))


def test_a_new_workload_writes_few_lines():
    counts = {path.name: code_lines(path) for path in sorted(FOLDER.glob("*.py"))}
    print("dry-run workload lines:", counts, "total", sum(counts.values()))
    assert set(counts) == {
        "__init__.py", "input_pipeline.py", "metrics.py", "model_torch.py", "model_jax.py",
    }  # fmt: skip
    assert sum(counts.values()) <= LINE_BUDGET


def average_precision_by_pairs(scores: np.ndarray, truth: np.ndarray) -> float:
    """AP from its definition, without sorting tricks: for each positive, the share of positives
    among the examples scored at least as high."""
    positives = np.flatnonzero(truth)
    return float(np.mean([truth[scores >= scores[i]].mean() for i in positives]))


def test_mean_average_precision_against_its_definition(dryrun):
    from algoperf.workloads.dryrun.metrics import mean_average_precision

    rng = np.random.default_rng(0)
    scores = rng.random((97, 4))  # distinct scores: no ties
    labels = (rng.random((97, 4)) < 0.3).astype(np.float64)
    labels[:, 3] = 0  # no positive: left out of the mean
    expected = np.mean([average_precision_by_pairs(scores[:, c], labels[:, c]) for c in range(3)])
    got = mean_average_precision({"scores": scores, "labels": labels})
    assert got["mean_average_precision"] == pytest.approx(expected, rel=1e-12)


class TwoRanks:
    """Collectives of rank 0 of two, the other rank's sums and rows given (a fake group)."""

    def __init__(self, other_sums: np.ndarray, other_rows: dict) -> None:
        self.other_sums, self.other_rows = other_sums, other_rows

    def add(self, totals, outputs):
        return dict(outputs) if totals is None else {k: totals[k] + outputs[k] for k in totals}

    def to_numpy(self, outputs):
        return {key: np.asarray(value) for key, value in outputs.items()}

    def sum_over_ranks(self, values):
        return values + self.other_sums

    def gather_over_ranks(self, rows):
        return {key: np.concatenate([rows[key], self.other_rows[key]]) for key in rows}


def test_gathered_metrics_drop_padding_and_gather_ranks(dryrun):
    from algoperf.workloads.dryrun.metrics import EVAL_METRICS, mean_average_precision

    rng = np.random.default_rng(1)
    scores, labels = rng.random((10, 3)), (rng.random((10, 3)) < 0.5).astype(np.float32)
    valid = np.asarray([1, 1, 1, 1, 1, 1, 0, 0], np.float32)  # 2 padding rows, scored wrongly

    def batch(rows, mask):
        return {
            "scores": rows[0], "labels": rows[1], "valid": mask,
            "loss_sum": np.float64(mask.sum()), "num_examples": np.float64(mask.sum()),
        }  # fmt: skip

    padded_scores = np.concatenate([scores[:6], np.ones((2, 3))])
    padded_labels = np.concatenate([labels[:6], np.zeros((2, 3))])
    batches = [batch((padded_scores, padded_labels), valid)]
    other = {"scores": scores[6:], "labels": labels[6:]}  # rank 1's 4 real rows
    result = metrics.evaluate(
        batches, lambda b: b, EVAL_METRICS, TwoRanks(np.asarray([4.0, 4.0]), other)
    )
    expected = mean_average_precision({"scores": scores, "labels": labels})
    assert result["mean_average_precision"] == pytest.approx(expected["mean_average_precision"])
    assert result["num_examples"] == 10 and result["loss"] == pytest.approx(1.0)


def test_missing_eval_output_is_a_clear_error(dryrun):
    from algoperf.workloads.dryrun.metrics import EVAL_METRICS

    batches = [{"loss_sum": 1.0, "num_examples": 1.0, "scores": np.zeros((1, 3))}]
    with pytest.raises(KeyError, match=r"lacks \['labels', 'valid'\]"):
        metrics.evaluate(batches, lambda b: b, EVAL_METRICS, TwoRanks(np.zeros(2), {}))


def test_registered_workload_loads_with_nested_fake_batches_in_both_frameworks(dryrun):
    torch_workload = dryrun.load("dryrun", "pytorch")
    jax_workload = dryrun.load("dryrun", "jax")
    for workload in (torch_workload, jax_workload):
        batch = workload.fake_batch(4)
        assert batch["inputs"]["features"].shape == (4, 8) and batch["targets"].shape == (4, 3)
    assert "dryrun" in dryrun.available("pytorch") and "dryrun" in dryrun.available("jax")


def _run(command: list[str], tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def _rows(tmp_path: pathlib.Path, name: str) -> list[dict]:
    path = next((tmp_path / "exp" / name).rglob("eval_measurements.csv"))
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _args(tmp_path, framework, name):
    from algoperf.workloads.dryrun.input_pipeline import write_fixture

    write_fixture(tmp_path / "data")
    # The AdamW reference with a batch size for the new workload (the only line it needs).
    module = "submission_torch" if framework == "pytorch" else "submission_jax"
    submission = tmp_path / f"adamw_{framework}.py"
    submission.write_text(
        f"from algoperf.submissions.adamw.{module} import *  # noqa: F403\n\n"
        "def get_batch_size(workload_name):\n    return 16\n"
    )
    return [
        "run", "--workload", "dryrun", "--framework", framework, "--data_dir",
        str(tmp_path / "data"), "--experiment_dir", str(tmp_path / "exp"), "--experiment_name",
        name, "--submission_path", str(submission), "--tuning_search_space",
        str(ROOT / "submissions" / "adamw" / "tuning_search_space.json"),
        "--max_global_steps", "40", "--eval_every_steps", "20", "--rng_seed", "3",
        "--torch_compile", "false", "--progress", "false", "--deterministic", "true",
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["pytorch", "jax"])
def test_algoperf_run_trains_and_logs_the_new_workload(tmp_path, framework, dryrun):
    _run([sys.executable, str(LAUNCHER), *_args(tmp_path, framework, "one")], tmp_path)
    rows = _rows(tmp_path, "one")
    assert [int(r["global_step"]) for r in rows] == [1, 21, 40]
    last = rows[-1]
    assert int(float(last["validation/num_examples"])) == 50
    assert int(float(last["test/num_examples"])) == 30
    for prefix in ("train", "validation", "test"):
        assert 0 < float(last[f"{prefix}/mean_average_precision"]) <= 1
        assert float(last[f"{prefix}/loss"]) > 0
    first_map = float(rows[0]["validation/mean_average_precision"])
    assert float(last["validation/mean_average_precision"]) > first_map  # it learns


@pytest.mark.slow
def test_two_processes_gather_the_whole_split(tmp_path, dryrun):
    """DDP on 2 ranks: every validation example counted once, the gathered mAP equal to one
    process's (same global batch, same seed)."""
    _run([sys.executable, str(LAUNCHER), *_args(tmp_path, "pytorch", "one")], tmp_path)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    _run([*torchrun, str(LAUNCHER), *_args(tmp_path, "pytorch", "two")], tmp_path)
    one, two = _rows(tmp_path, "one"), _rows(tmp_path, "two")
    for a, b in zip(one, two, strict=True):
        assert int(float(b["validation/num_examples"])) == 50
        for key in ("validation/mean_average_precision", "validation/loss", "test/loss"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-4), key


def test_jax_multi_host_gather_packs_any_rows():
    """What JAX's cross-host gather sends: rows pickled into a padded uint8 array and back."""
    from algoperf.jax.workload import pack, unpack

    rows = {"scores": np.arange(6.0).reshape(3, 2), "text": np.asarray(["a", "bc"], dtype=object)}
    payload = pack(rows)
    padded = np.concatenate([payload, np.zeros(7, np.uint8)])  # as process_allgather pads it
    back = unpack(padded, len(payload))
    np.testing.assert_array_equal(back["scores"], rows["scores"])
    assert back["text"].tolist() == ["a", "bc"]
