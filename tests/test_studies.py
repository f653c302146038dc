"""`algoperf tune`: a 2 studies x 2 trials mnist sweep in upstream's layout, different points per
study, and a rerun that runs only what is missing."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from algoperf.config import RunConfig
from algoperf.studies import SweepConfig, sweep_configs

ROOT = pathlib.Path(__file__).resolve().parent.parent


def tune(tmp_path, *extra, submission="adamw"):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "algoperf", "tune", "--submission_path",
         str(ROOT / "submissions" / submission / "submission_torch.py"), "--rng_seed", "4",
         "--num_studies", "2", "--num_tuning_trials", "2", "--max_global_steps", "4",
         "--torch_compile", "false", "--data_dir", str(tmp_path / "data"), "--experiment_dir",
         str(tmp_path / "exp"), "--experiment_name", submission, "--progress", "false",
         "--save_checkpoints", "false", *extra],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_sweep_configs_give_each_study_its_own_seed_and_folder():
    base = RunConfig(workload="mnist", rng_seed=3, num_tuning_trials=5, experiment_name="sub")
    configs = sweep_configs(base, SweepConfig(num_studies=3))
    assert [c.experiment_name for c in configs] == ["sub/study_0", "sub/study_1", "sub/study_2"]
    assert len({c.rng_seed for c in configs}) == 3 and all(c.resume_last_run for c in configs)
    assert [
        c.study_index for c in sweep_configs(base, SweepConfig(num_studies=3, study_start_index=1))
    ] == [1, 2]
    self_tuning = RunConfig(
        workload="mnist", rng_seed=3, tuning_ruleset="self", num_tuning_trials=5
    )
    assert {c.num_tuning_trials for c in sweep_configs(self_tuning, SweepConfig())} == {1}
    with pytest.raises(ValueError, match="--rng_seed"):
        sweep_configs(RunConfig(workload="mnist"), SweepConfig())
    with pytest.raises(ValueError, match="study_start_index"):
        SweepConfig(num_studies=2, study_start_index=2).studies("v1.0")


@pytest.mark.slow
def test_mini_sweep_layout_points_and_rerun(tmp_path):
    result = tune(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 trial(s) run" in result.stderr
    root = tmp_path / "exp" / "adamw"
    trials = sorted(root.glob("study_*/mnist_pytorch/trial_*/eval_measurements.csv"))
    assert [str(p.relative_to(root).parent) for p in trials] == [
        "study_0/mnist_pytorch/trial_1", "study_0/mnist_pytorch/trial_2",
        "study_1/mnist_pytorch/trial_1", "study_1/mnist_pytorch/trial_2"]  # fmt: skip
    points = [json.loads((p.parent / "hparams.json").read_text()) for p in trials]
    assert len({json.dumps(p, sort_keys=True) for p in points}) == 4  # studies differ

    assert "0 trial(s) run" in tune(tmp_path).stderr  # a finished sweep runs nothing
    (root / "study_1" / "mnist_pytorch" / "trial_2" / "trial_complete.json").unlink()
    again = tune(tmp_path)
    assert "1 trial(s) run" in again.stderr
    assert json.loads((trials[3].parent / "hparams.json").read_text()) == points[3]


def cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "algoperf", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_mini_sweep_is_scored_and_its_logs_pass_the_checker(tmp_path):
    import csv
    import shutil

    # The mini sweep: 2 studies x 2 trials of mnist with NAdamW.
    assert tune(tmp_path, submission="nadamw").returncode == 0
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps({"mnist": {"metric": "accuracy", "target": 0.05}}))
    out = tmp_path / "scores"
    scored = cli(
        "score",
        "--submission_directory",
        str(tmp_path / "exp"),
        "--targets",
        str(targets),
        "--output_dir",
        str(out),
    )
    assert scored.returncode == 0, scored.stderr[-2000:]
    with open(out / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["submission"] for r in rows] == ["nadamw"] and float(rows[0]["score"]) == 1.0
    assert (out / "performance_profiles.png").stat().st_size > 0

    checked = cli("check-logs", str(tmp_path / "exp"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tampered = tmp_path / "tampered"
    shutil.copytree(tmp_path / "exp", tampered)
    path = next(tampered.rglob("eval_measurements.csv"))
    with open(path, newline="") as handle:
        table = list(csv.DictReader(handle))
    table[-1]["score"] = str(float(table[0]["score"]) - 1.0)  # submission time going backwards
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    failed = cli("check-logs", str(tampered))
    assert failed.returncode == 1 and "score_monotone" in failed.stdout + failed.stderr
