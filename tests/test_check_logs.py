"""`algoperf check-logs`: a clean trial passes; tampered copies fail with the right rule."""

from __future__ import annotations

import argparse
import csv
import json
import shutil

import pytest

pytest.importorskip("pandas")  # the `scoring` extra

from algoperf import workloads  # noqa: E402
from algoperf.cli.catalog import workload_catalog  # noqa: E402
from algoperf.cli.scoring import add_commands  # noqa: E402
from algoperf.scoring import check_logs  # noqa: E402

CATALOG = workload_catalog()
VERSION = "v1.0"
WORKLOAD = workloads.SCORED_WORKLOADS[VERSION][0]
SPEC = workloads.get_spec(WORKLOAD)
BUDGET = SPEC.budget(VERSION)
PERIOD = BUDGET.eval_period_time_sec
SPACE = {
    "learning_rate": {"min": 1e-4, "max": 1e-2, "scaling": "log"},
    "beta1": {"feasible_points": [0.9]},
}


def metric_value(reached: bool) -> float:
    """A value strictly past the target (the runner's test) or clearly short of it."""
    target = SPEC.validation_target
    better = 1.1 if SPEC.higher_is_better else 0.9
    return target * better if reached else target / better


def clean_rows(num_evals: int = 4) -> list[dict]:
    """A timeline the runner could log: step 1 ends at 10 s, each eval takes 5 s and its logging
    1 s, the next eval starts exactly one period after the previous eval's logging ended:
      score_k = 10 + k·P, total_duration_k = 15 + k·(P + 6), accumulated_eval_time_k = 5(k + 1),
      accumulated_logging_time_k = k (the logging of row k shows up in row k + 1).
    Gap between evals: (P + 6) − 5 − 1 = P, exactly the period. Eval 3 (k = 2) reaches the target.
    """
    metric = f"validation/{SPEC.target_metric_name}"
    return [
        {
            "accumulated_eval_time": 5.0 * (k + 1),
            "accumulated_logging_time": float(k),
            "accumulated_submission_time": 10.0 + k * PERIOD,
            "global_step": 100 * k + 1,
            "score": 10.0 + k * PERIOD,
            "total_duration": 15.0 + k * (PERIOD + 6),
            metric: metric_value(k >= 2),
        }
        for k in range(num_evals)
    ]


def write_rows(trial_dir, rows):
    with open(trial_dir / "eval_measurements.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, sorted(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def clean_trial(tmp_path):
    space_path = tmp_path / "tuning_search_space.json"
    space_path.write_text(json.dumps(SPACE))
    trial_dir = tmp_path / "logs" / "exp" / f"{WORKLOAD}_pytorch" / "trial_1"
    trial_dir.mkdir(parents=True)
    rows = clean_rows()
    write_rows(trial_dir, rows)
    flags = {
        "workload": WORKLOAD,
        "framework": "pytorch",
        "tuning_ruleset": "external",
        "tuning_search_space": str(space_path),
        "benchmark_version": VERSION,
        "eval_every_steps": None,
        "max_global_steps": None,
    }
    (trial_dir / "flags_0.json").write_text(json.dumps(flags))
    (trial_dir / "meta_data_0.json").write_text(json.dumps({"benchmark_version": VERSION}))
    (trial_dir / "hparams.json").write_text(json.dumps({"learning_rate": 1e-3, "beta1": 0.9}))
    complete = {"stop_reason": "both targets reached", "time_to_target": rows[2]["score"]}
    (trial_dir / "trial_complete.json").write_text(json.dumps(complete))
    return trial_dir


def run_cli(*argv) -> int:
    parser = argparse.ArgumentParser(prog="algoperf")
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["check-logs", *map(str, argv)])
    return args.func(args)


def rules(trial_dir, **kwargs) -> list[str]:
    return [v.rule for v in check_logs.check_trial(trial_dir, catalog=CATALOG, **kwargs).violations]


def test_clean_trial_passes(clean_trial, capsys):
    assert rules(clean_trial) == []
    assert run_cli(clean_trial.parents[2]) == 0
    assert capsys.readouterr().out.strip() == "1 trials checked, no violations"


def test_testing_only_workload_options_are_flagged(clean_trial):
    flags = json.loads((clean_trial / "flags_0.json").read_text())
    flags["workload_options"] = "image_size=32,num_workers=0"
    (clean_trial / "flags_0.json").write_text(json.dumps(flags))
    report = check_logs.check_trial(clean_trial, catalog=CATALOG)
    assert [v.rule for v in report.violations] == ["workload_options"]
    assert "image_size=32" in report.violations[0].detail
    flags["workload_options"] = ""  # the default: nothing to flag
    (clean_trial / "flags_0.json").write_text(json.dumps(flags))
    assert rules(clean_trial) == []


def test_evals_too_close(clean_trial):
    rows = clean_rows()
    rows[2]["total_duration"] -= 50  # eval 3 ends 50 s early: gap P − 50 after eval 2
    write_rows(clean_trial, rows)
    report = check_logs.check_trial(clean_trial, catalog=CATALOG)
    assert [v.rule for v in report.violations] == ["eval_period"]
    assert "evals 2 and 3" in report.violations[0].detail
    # Within the tolerance it passes.
    assert rules(clean_trial, tolerance_s=60) == []


def test_score_decreasing(clean_trial, capsys):
    rows = clean_rows()
    rows[3]["score"] = rows[3]["accumulated_submission_time"] = rows[2]["score"] - 1
    write_rows(clean_trial, rows)
    assert rules(clean_trial) == ["score_monotone"]
    assert run_cli(clean_trial.parents[2]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f"{clean_trial}: score_monotone: eval 4 has score")
    assert lines[-1] == "1 trials checked, 1 violations in 1"


def test_row_past_the_budget(clean_trial):
    rows = clean_rows()
    extra = dict(rows[-1])
    extra["score"] = extra["accumulated_submission_time"] = BUDGET.max_allowed_runtime_sec + 1
    extra["total_duration"] += 10 * BUDGET.max_allowed_runtime_sec  # far apart: period is fine
    extra["global_step"] += 100  # a later step (the same step twice is a violation of its own)
    rows.append(extra)
    write_rows(clean_trial, rows)
    assert rules(clean_trial) == ["budget"]
    # Self-tuning has the version's factor (1.5 in v1.0) more time, and takes no hparams.json.
    flags = json.loads((clean_trial / "flags_0.json").read_text())
    flags["tuning_ruleset"] = "self"
    (clean_trial / "flags_0.json").write_text(json.dumps(flags))
    assert rules(clean_trial) == ["hparams"]
    (clean_trial / "hparams.json").unlink()
    assert rules(clean_trial) == []


def test_hparams_outside_the_space(clean_trial, tmp_path, capsys):
    (clean_trial / "hparams.json").write_text(json.dumps({"learning_rate": 0.5, "beta1": 0.9}))
    report = check_logs.check_trial(clean_trial, catalog=CATALOG)
    assert [v.rule for v in report.violations] == ["hparams"]
    assert "learning_rate" in report.violations[0].detail
    # --search_space overrides the flags' space.
    wide = tmp_path / "wide.json"
    wide.write_text(
        json.dumps({**SPACE, "learning_rate": {"min": 1e-4, "max": 1.0, "scaling": "log"}})
    )
    assert run_cli(clean_trial.parents[2], "--search_space", wide) == 0
    capsys.readouterr()


def test_time_to_target_must_match_a_row(clean_trial):
    complete = {"stop_reason": "budget", "time_to_target": 12.5}
    (clean_trial / "trial_complete.json").write_text(json.dumps(complete))
    assert rules(clean_trial) == ["time_to_target"]


def test_folder_name_fallback_and_bad_input(tmp_path, capsys):
    trial_dir = tmp_path / f"{WORKLOAD}_jax" / "trial_1"
    trial_dir.mkdir(parents=True)
    write_rows(trial_dir, clean_rows())
    (trial_dir / "hparams.json").write_text(json.dumps({"learning_rate": 1e-3, "beta1": 0.9}))
    report = check_logs.check_trial(
        trial_dir, catalog=CATALOG
    )  # no flags: workload from the folder, v1.0
    assert report.violations == [] and not report.hparams_checked
    assert run_cli(tmp_path) == 0
    assert "hparams not checked in 1" in capsys.readouterr().out
    (tmp_path / "nope_jax").mkdir()
    shutil.move(trial_dir, tmp_path / "nope_jax" / "trial_1")
    assert rules(tmp_path / "nope_jax" / "trial_1") == ["workload"]
    assert run_cli(tmp_path / "absent") == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli(empty) == 2
    assert "nothing to check" in capsys.readouterr().err


def test_global_step_backwards_or_repeated(clean_trial, capsys):
    rows = clean_rows(5)  # steps 1, 101, 201, 301, 401
    rows[2]["global_step"] = 51  # backwards after 101
    rows[4]["global_step"] = 301  # the step of eval 4 again
    write_rows(clean_trial, rows)
    report = check_logs.check_trial(clean_trial, catalog=CATALOG)
    assert [(v.rule, v.detail) for v in report.violations] == [
        ("global_step", "eval 3 has global_step 51, below 101 of eval 2 (the step went backwards)"),
        ("global_step", "eval 5 logs global_step 301 again (eval 4 logged it)"),
    ]
    assert run_cli(clean_trial.parents[2]) == 1
    assert "global_step: eval 5 logs global_step 301 again" in capsys.readouterr().out


def test_unreadable_csv_is_named_by_line(clean_trial):
    path = clean_trial / "eval_measurements.csv"
    lines = path.read_text().splitlines()
    cells = lines[2].split(",")
    cells[lines[0].split(",").index("score")] = "xx"
    lines[2] = ",".join(cells)
    lines[3] += ",extra"
    path.write_text("\n".join(lines) + "\n")
    report = check_logs.check_trial(clean_trial, catalog=CATALOG)
    csv_details = [v.detail for v in report.violations if v.rule == "csv"]
    assert csv_details == [
        "eval_measurements.csv line 4: 8 fields, the header has 7; row skipped",
        "eval_measurements.csv line 3: score is 'xx', not a number; row skipped",
    ]
    path.write_bytes(b"score,global_step\n1,\xff\n")
    report = check_logs.check_trial(clean_trial, catalog=CATALOG)
    assert [v.rule for v in report.violations][0] == "csv"
    assert "eval_measurements.csv line 2: not UTF-8 text" in report.violations[0].detail


def test_crlf_and_lf_logs_check_alike(clean_trial):
    path = clean_trial / "eval_measurements.csv"
    text = path.read_bytes().replace(b"\r\n", b"\n")
    path.write_bytes(text)
    assert rules(clean_trial) == []
    path.write_bytes(text.replace(b"\n", b"\r\n"))
    assert rules(clean_trial) == []


def test_fallback_data_is_a_warning_naming_the_trial(clean_trial, capsys):
    meta = {
        "benchmark_version": VERSION,
        "workload.data_source": "fallback sample (4000 train images): no dataset in /nope",
        "workload.data_num_train_examples": 4000,
    }
    (clean_trial / "meta_data_0.json").write_text(json.dumps(meta))
    report = check_logs.check_trial(clean_trial, catalog=CATALOG)
    assert report.violations == []
    assert [(w.path, w.rule) for w in report.warnings] == [(str(clean_trial), "data")]
    assert "meta_data_0.json: trained on fallback sample" in report.warnings[0].detail
    assert run_cli(clean_trial.parents[2]) == 0  # a warning, not a timing violation
    out = capsys.readouterr().out
    assert f"warning: {clean_trial}: data: meta_data_0.json: trained on fallback" in out
    assert out.strip().endswith("1 trials checked, no violations, 1 warnings")
    # A full source with another train count (a resumed start on other data) is flagged too.
    meta["workload.data_source"] = "full"
    (clean_trial / "meta_data_1.json").write_text(json.dumps(meta))
    (clean_trial / "meta_data_0.json").write_text(json.dumps({"benchmark_version": VERSION}))
    details = [w.detail for w in check_logs.check_trial(clean_trial, catalog=CATALOG).warnings]
    assert details == [
        f"meta_data_1.json: trained on 4000 training examples, not the workload's "
        f"{SPEC.num_train_examples}; its times are not comparable"
    ]
