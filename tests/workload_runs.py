"""Shared pieces of the end-to-end workload tests (test_ogbg_workload.py, test_fastmri_workload.py):
a trial's eval rows, their metric columns as floats, and their comparison step by step."""

from __future__ import annotations

import csv
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPLITS = ("train", "validation", "test")


def env(**extra: str) -> dict[str, str]:
    """A subprocess environment that imports this checkout, warnings off."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore", **extra}


def eval_rows(experiment_dir: pathlib.Path, name: str, workload: str, framework: str) -> list[dict]:
    """Trial 1's eval_measurements.csv rows of experiment `name`."""
    path = experiment_dir / name / f"{workload}_{framework}" / "trial_1" / "eval_measurements.csv"
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def metric_values(row: dict, metrics: tuple[str, ...]) -> dict[str, float]:
    """`<split>/<metric>` -> value for every split the row has."""
    return {
        f"{split}/{name}": float(row[f"{split}/{name}"])
        for split in SPLITS
        for name in metrics
        if f"{split}/{name}" in row
    }


def assert_rows_close(got: list[dict], expected: list[dict], metrics, rtol: float) -> None:
    """The same eval steps, and every metric within `rtol` (abs 1e-7 near zero)."""
    assert [r["global_step"] for r in got] == [r["global_step"] for r in expected]
    for a, b in zip(got, expected):
        for key, value in metric_values(b, metrics).items():
            assert metric_values(a, metrics)[key] == pytest.approx(value, rel=rtol, abs=1e-7), key
