"""Scoring (docs/rules.md, "Scoring") on small hand-built log trees; every expected number is
worked out by hand in the comments. Workloads come from the registry, never by name."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import shutil

import numpy as np
import pytest

pd = pytest.importorskip("pandas")  # the `scoring` extra

from algoperf import workloads  # noqa: E402
from algoperf.cli.catalog import workload_catalog  # noqa: E402
from algoperf.cli.scoring import add_commands  # noqa: E402
from algoperf.scoring import read, score, targets  # noqa: E402
from algoperf.scoring.catalog import WorkloadCatalog  # noqa: E402

CATALOG = workload_catalog()
V06 = workloads.SCORED_WORKLOADS["v0.6"]
# LOW: a minimised metric; HIGH: a maximised one; THIRD: any other v0.6 base workload.
LOW = next(w for w in V06 if not workloads.get_spec(w).higher_is_better)
HIGH = next(w for w in V06 if workloads.get_spec(w).higher_is_better)
THIRD = next(w for w in V06 if w not in (LOW, HIGH))
H = 3 / 99  # spacing of the τ grid linspace(1, 4, 100)


def good(workload: str) -> float:
    """Exactly the target: `<=` / `>=` count it as reached."""
    return workloads.get_spec(workload).validation_target


def bad(workload: str) -> float:
    spec = workloads.get_spec(workload)
    return spec.validation_target / 2 if spec.higher_is_better else spec.validation_target * 2


def write_trial(root, submission, study, workload, trial, rows, framework="pytorch"):
    """rows: (score, value) per eval; value None writes 'nan'."""
    folder = root / submission / study / f"{workload}_{framework}" / trial
    folder.mkdir(parents=True)
    metric = f"validation/{workloads.get_spec(workload).target_metric_name}"
    with open(folder / "eval_measurements.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["accumulated_submission_time", "global_step", "score", metric])
        for step, (seconds, value) in enumerate(rows, start=1):
            writer.writerow([seconds, step, seconds, "nan" if value is None else value])
    return folder


def build_v06_tree(root):
    """Three submissions on LOW, HIGH, THIRD (G = at target, B = not reached):

    alpha LOW   study_0: trial_1 [B@100, G@200, G@300] -> eval 1, 200 s
                         trial_2 [B@50, G@150]         -> eval 1, 150 s (tie on eval 1: 150 wins)
                         trial_3 [B@10, B@20, G@120]   -> eval 2, 120 s (faster, later eval: loses)
                study_1: trial_1 [B@300, G@400] -> 400;  study_2: trial_1 [B, B] -> ∞
                median(150, 400, ∞) = 400
          HIGH  study_0 [G@1000], study_1 [G@1200]: even count, median = 1100
          THIRD no folder at all: missing (NaN)
    beta  LOW   500, 900, 700 -> median 700
          HIGH  study_0 [G@2000]; study_1 [nan@100, B@200] -> ∞; median(2000, ∞) = ∞
          THIRD 300, 300, 300 -> 300
    gamma LOW   gamma/study_0 [B@1000, G@2000] -> eval 1, 2000 s, pooled with the timestamped
                copy's study_0 [G@1600] -> eval 0, 1600 s: the study picks 1600;
                copy's study_1 [G@1700] -> 1700; median(1600, 1700) = 1650
          HIGH  [B, G@4400] -> 4400, [G@5000], [G@3000]: median 4400
          THIRD study_0 [G@1300]; study_1 trial_1 crashed (no CSV): skipped, median 1300
    Stray files and folders and an unscored variant folder are ignored.
    """
    g, b = good, bad
    write_trial(
        root, "alpha", "study_0", LOW, "trial_1", [(100, b(LOW)), (200, g(LOW)), (300, g(LOW))]
    )
    write_trial(root, "alpha", "study_0", LOW, "trial_2", [(50, b(LOW)), (150, g(LOW))])
    write_trial(
        root, "alpha", "study_0", LOW, "trial_3", [(10, b(LOW)), (20, b(LOW)), (120, g(LOW))]
    )
    write_trial(root, "alpha", "study_1", LOW, "trial_1", [(300, b(LOW)), (400, g(LOW))])
    write_trial(root, "alpha", "study_2", LOW, "trial_1", [(100, b(LOW)), (200, b(LOW))])
    write_trial(root, "alpha", "study_0", HIGH, "trial_1", [(1000, g(HIGH))])
    write_trial(root, "alpha", "study_1", HIGH, "trial_1", [(1200, g(HIGH))])
    for study, seconds in (("study_0", 500), ("study_1", 900), ("study_2", 700)):
        write_trial(root, "beta", study, LOW, "trial_1", [(seconds, g(LOW))])
        write_trial(root, "beta", study, THIRD, "trial_1", [(300, g(THIRD))])
    write_trial(root, "beta", "study_0", HIGH, "trial_1", [(2000, g(HIGH))])
    write_trial(root, "beta", "study_1", HIGH, "trial_1", [(100, None), (200, b(HIGH))])
    write_trial(root, "gamma", "study_0", LOW, "trial_1", [(1000, b(LOW)), (2000, g(LOW))])
    copy = "gamma-2024-05-01-12-00-00"
    write_trial(root, copy, "study_0", LOW, "trial_1", [(1600, g(LOW))])
    write_trial(root, copy, "study_1", LOW, "trial_1", [(1700, g(LOW))])
    write_trial(root, "gamma", "study_0", HIGH, "trial_1", [(10, b(HIGH)), (4400, g(HIGH))])
    write_trial(root, "gamma", "study_1", HIGH, "trial_1", [(5000, g(HIGH))])
    write_trial(root, "gamma", "study_2", HIGH, "trial_1", [(3000, g(HIGH))])
    write_trial(root, "gamma", "study_0", THIRD, "trial_1", [(1300, g(THIRD))])
    (root / "gamma" / "study_1" / f"{THIRD}_pytorch" / "trial_1").mkdir(parents=True)
    # Ignored: files, a loose trial folder, an unscored variant, a trial folder without digits.
    (root / "README.txt").write_text("not a submission")
    (root / "alpha" / "study_0" / "run.log").write_text("log")
    loose = root / "alpha" / "study_0" / "trial_9"
    loose.mkdir()
    (loose / "eval_measurements.csv").write_text("score\n1\n")
    variant = workloads.get_spec(LOW).variants[0]
    write_trial(root, "alpha", "study_0", variant, "trial_1", [(1, g(LOW))])
    write_trial(root, "beta", "study_0", LOW, "trial_x", [(1, g(LOW))])


@pytest.fixture(scope="module")
def v06(tmp_path_factory):
    root = tmp_path_factory.mktemp("v06")
    build_v06_tree(root)
    target_set = targets.load_targets("v0.6", catalog=CATALOG)
    logs = read.read_logs(root, target_set, catalog=CATALOG)
    return root, target_set, logs, score.score_logs(logs, target_set)


def test_targets_come_from_the_registry():
    v10 = targets.targets_for("v1.0", catalog=CATALOG)
    assert len(v10) == 9 and len(targets.targets_for("v0.6", catalog=CATALOG)) == 8
    assert len(targets.targets_for("v0.5", catalog=CATALOG)) == 14
    spec = workloads.get_spec(LOW)
    assert targets.targets_for("0.6", catalog=CATALOG)[LOW] == (
        spec.target_metric_name,
        spec.validation_target,
        False,
    )
    assert ("ppl", 22.2995, False) in v10.values()
    target_set = targets.target_set_for("v0.5", catalog=CATALOG)
    assert set(target_set.held_out) == set(workloads.HELD_OUT_WORKLOADS["v0.5"])
    assert all(workloads.base_name(v) == b for v, b in target_set.held_out.items())


def test_scoring_takes_its_workload_facts_from_the_catalog_passed_in():
    toy = dataclasses.replace(
        workloads.get_spec(LOW), name="toy", base="toy", validation_target=0.5
    )
    variant = dataclasses.replace(toy, name="toy_variant", validation_target=0.25)
    catalog = WorkloadCatalog(
        specs={"toy": toy, "toy_variant": variant},
        scored={"v0.5": ("toy",)},
        held_out={"v0.5": ("toy_variant",)},
    )
    target_set = targets.target_set_for("v0.5", catalog=catalog)
    assert target_set.base_workloads == ("toy",) and dict(target_set.held_out) == {
        "toy_variant": "toy"
    }
    assert target_set.target_of("toy_variant").target == 0.25
    assert target_set.budgets["toy"] == toy.budgets["v0.5"].max_allowed_runtime_sec
    with pytest.raises(ValueError, match="no scored workloads for v1.0"):
        targets.target_set_for("v1.0", catalog=catalog)
    with pytest.raises(ValueError, match="lists unknown workloads"):
        WorkloadCatalog(specs={}, scored={"v0.5": ("toy",)}, held_out={})
    with pytest.raises(ValueError, match="unknown workload 'nope'"):
        catalog.spec("nope")


def test_read_merges_copies_and_ignores_strays(v06):
    _, _, logs, _ = v06
    assert logs.submissions == ["alpha", "beta", "gamma"]
    scored = logs.trials[logs.trials["scored"]]
    gamma_low = scored[(scored["submission"] == "gamma") & (scored["workload"] == LOW)]
    assert sorted(gamma_low["study"]) == ["study_0", "study_0", "study_1"]
    assert set(scored["workload"]) == {LOW, HIGH, THIRD}
    assert not scored["trial"].str.contains("trial_x").any()
    assert any("is not scored" in note for note in logs.notes)


def test_trial_and_study_times(v06):
    _, _, _, result = v06
    trials = result.trial_times.set_index("trial")
    first = trials.loc[f"alpha/study_0/{LOW}_pytorch/trial_1"]
    assert (first["eval_index"], first["time"]) == (1, 200)
    assert trials.loc[f"alpha/study_0/{LOW}_pytorch/trial_3", "time"] == 120
    assert trials.loc[f"alpha/study_2/{LOW}_pytorch/trial_1", "time"] == math.inf
    assert trials.loc[f"beta/study_1/{HIGH}_pytorch/trial_1", "time"] == math.inf  # NaN row
    studies = result.study_times.set_index(["submission", "workload", "study"])
    # Tie on eval index 1 (200 s vs 150 s): the smaller time; trial_3 (120 s at eval 2) loses.
    assert studies.loc[("alpha", LOW, "study_0"), "trial"].endswith("trial_2")
    assert studies.loc[("alpha", LOW, "study_0"), "time"] == 150
    assert studies.loc[("alpha", LOW, "study_2"), "time"] == math.inf
    assert studies.loc[("alpha", LOW, "study_2"), "trial"] == ""
    # Timestamped copy pooled into gamma's study_0: eval 0 at 1600 s beats eval 1 at 2000 s.
    assert studies.loc[("gamma", LOW, "study_0"), "time"] == 1600
    assert ("gamma", THIRD, "study_1") not in studies.index  # crashed trial: no study


def test_workload_medians_cut_and_ratios(v06):
    _, _, _, result = v06
    times = result.times
    assert times.loc["alpha", LOW] == 400  # median(150, 400, ∞)
    assert times.loc["alpha", HIGH] == 1100  # median of 2 = mean(1000, 1200)
    assert math.isnan(times.loc["alpha", THIRD])  # missing
    assert times.loc["beta", HIGH] == math.inf  # mean(2000, ∞)
    assert times.loc["gamma", LOW] == 1650 and times.loc["gamma", THIRD] == 1300
    assert times.shape == (3, 8)
    cut = result.scored_times
    # LOW: 1650 > 4 × 400; HIGH: 4400 = 4 × 1100 is kept (strict >); THIRD: 1300 > 4 × 300.
    assert cut.loc["gamma", LOW] == math.inf and cut.loc["gamma", THIRD] == math.inf
    assert cut.loc["gamma", HIGH] == 4400
    ratios = result.ratios
    assert ratios.loc["beta", LOW] == 1.75 and ratios.loc["gamma", HIGH] == 4.0
    assert ratios.loc["alpha", LOW] == 1.0 and ratios.loc["beta", THIRD] == 1.0
    assert math.isnan(ratios.loc["alpha", THIRD])
    other = [w for w in V06 if w not in (LOW, HIGH, THIRD)]
    assert ratios[other].isna().all().all()  # no data: NaN


def test_profiles_and_scores(v06):
    _, _, _, result = v06
    profiles = result.profiles.to_numpy()
    taus = result.profiles.columns.to_numpy()
    assert np.allclose(taus, np.linspace(1, 4, 100))
    # alpha: r = 1 on LOW and HIGH; THIRD missing; n = 8 fixed -> ρ = 2/8 everywhere.
    assert np.all(profiles[0] == 0.25)
    # beta: r = 1 (THIRD), 1.75 (LOW): ρ = 1/8 up to τ_24 = 1.7273, 2/8 from τ_25 = 1.7576.
    assert profiles[1][0] == profiles[1][24] == 0.125 and profiles[1][25] == 0.25
    # gamma: r = 4 (HIGH) only: ρ = 0 before τ_99 = 4, 1/8 at it.
    assert profiles[2][98] == 0 and profiles[2][99] == 0.125
    scores = result.scores
    assert scores["alpha"] == pytest.approx(0.25)
    # beta: trapezoid = h·(Σρ − (ρ_0 + ρ_99)/2) = h·(25/8 + 150/8 − 3/16) = (347/16)·(1/33);
    # divided by 3: 347/1584.
    assert scores["beta"] == pytest.approx(347 / 1584)
    # gamma: h·(1/8)/2 = 1/528; divided by 3: 1/1584.
    assert scores["gamma"] == pytest.approx(1 / 1584)


def test_speedups_against_the_first_submission(v06):
    _, target_set, _, result = v06
    stand_ins = score.infinity_stand_ins(target_set, catalog=CATALOG, self_tuning=False)
    budget = workloads.get_spec(HIGH).budgets["v0.5"].max_allowed_runtime_sec
    assert stand_ins[HIGH] == budget + 1
    assert (
        score.infinity_stand_ins(target_set, catalog=CATALOG, self_tuning=True)[HIGH]
        == 3 * budget + 1
    )
    table = score.speedups(result.times, "alpha", stand_ins).set_index("submission")
    # beta vs alpha: LOW 700/400; HIGH ∞ -> stand-in over 1100; THIRD 300 over alpha's stand-in.
    expected = [700 / 400, stand_ins[HIGH] / 1100, 300 / stand_ins[THIRD]]
    assert table.loc["beta", "num_workloads"] == 3
    assert table.loc["beta", "time_ratio"] == pytest.approx(np.exp(np.mean(np.log(expected))))
    assert table.loc["beta", f"ratio_{LOW}"] == pytest.approx(1.75)
    with pytest.raises(ValueError, match="base submission"):
        score.speedups(result.times, "nobody", stand_ins)


def test_median_of_an_even_count_with_infinity():
    table = pd.DataFrame(
        {
            "submission": ["s"] * 4 + ["t"] * 2,
            "workload": ["w"] * 6,
            "study": ["a", "b", "c", "d", "a", "b"],
            "time": [10.0, 20.0, 30.0, math.inf, 5.0, math.inf],
        }
    )
    times = score.workload_times(table, ["s", "t", "u"], ["w", "x"])
    assert times.loc["s", "w"] == 25  # mean of the middle two, 20 and 30
    assert times.loc["t", "w"] == math.inf  # mean(5, ∞)
    assert math.isnan(times.loc["u", "w"]) and math.isnan(times.loc["s", "x"])


def test_v05_held_out_gates(tmp_path):
    """Two submissions on three v0.5 base workloads and their held-out variants (one study):

    base B1: p 100, q 150 | variant V1: p 1000, q 5000 > 4 × 1000 -> cut to ∞ -> q's B1 = ∞
    base B2: p ∞,   q 200 | variant V2: p 50, but p's base is ∞ -> ∞ before the cut; the best V2
             is then q's 300, so q keeps V2 (cutting first, 300 > 4 × 50 would wipe q's B2)
    base B3: p 400, q 100 | variant V3: p 400, q missing (NaN) -> q's B3 = ∞ after the cut
    After the gates: B1 p 100 / q ∞, B2 p ∞ / q 200, B3 p 400 / q ∞; ratios p: B1 1, B3 1;
    q: B2 1. n = 8: p = 2/8, q = 1/8. Without gates q would also have B1 (1.5) and B3 (1).
    """
    held_out = workloads.HELD_OUT_WORKLOADS["v0.5"][:3]
    (v1, v2, v3) = held_out
    b1, b2, b3 = (workloads.base_name(v) for v in held_out)
    g, b = good, bad
    cells = {
        ("p", b1): [(100, g(b1))],
        ("q", b1): [(150, g(b1))],
        ("p", v1): [(1000, g(v1))],
        ("q", v1): [(5000, g(v1))],
        ("p", b2): [(100, b(b2))],
        ("q", b2): [(200, g(b2))],
        ("p", v2): [(50, g(v2))],
        ("q", v2): [(300, g(v2))],
        ("p", b3): [(400, g(b3))],
        ("q", b3): [(100, g(b3))],
        ("p", v3): [(400, g(v3))],
    }
    for (submission, workload), rows in cells.items():
        write_trial(tmp_path, submission, "study_0", workload, "trial_1", rows)
    target_set = targets.load_targets("v0.5", catalog=CATALOG)
    result = score.score_logs(read.read_logs(tmp_path, target_set, catalog=CATALOG), target_set)
    assert result.times.loc["q", v2] == 300 and result.times.loc["p", v2] == 50
    assert list(result.scored_times.columns) == list(workloads.SCORED_WORKLOADS["v0.5"])
    cut = result.scored_times
    assert cut.loc["q", b1] == math.inf  # the slow variant wiped out its base
    assert cut.loc["q", b2] == 200 and cut.loc["p", b2] == math.inf
    assert cut.loc["q", b3] == math.inf  # missing variant
    assert result.scores["p"] == pytest.approx(0.25)
    assert result.scores["q"] == pytest.approx(0.125)


def test_gates_are_pure_functions():
    times = pd.DataFrame(
        {"b": [1.0, math.inf, np.nan], "v": [9.0, 2.0, 3.0]}, index=["x", "y", "z"]
    )
    gated = score.gate_held_out_before_cut(times, {"v": "b"})
    assert gated["v"].tolist() == [9.0, math.inf, math.inf]
    after = score.gate_base_after_cut(score.cut_slow(gated), {"v": "b"})
    assert after["b"].tolist() == [1.0, math.inf, np.inf]
    assert times["v"].tolist() == [9.0, 2.0, 3.0]  # inputs untouched


def test_strict_checks(tmp_path, capsys):
    """A complete tree for a two-workload targets file: 3 studies × 5 trials each; then one
    study and one trial removed."""
    for workload in (LOW, HIGH):
        for study in range(3):
            for trial in range(1, 6):
                write_trial(
                    tmp_path, "only", f"study_{study}", workload, f"trial_{trial}", [(1, 0)]
                )
    targets_file = tmp_path / "targets.json"
    entries = {
        w: {"metric": workloads.get_spec(w).target_metric_name, "target": 1.0} for w in (LOW, HIGH)
    }
    targets_file.write_text(json.dumps(entries))
    target_set = targets.load_targets(targets_file, catalog=CATALOG)
    logs = read.read_logs(tmp_path, target_set, catalog=CATALOG)
    assert score.strict_problems(logs, target_set, self_tuning=False) == []
    v06 = targets.load_targets("v0.6", catalog=CATALOG)
    assert score.strict_problems(
        read.read_logs(tmp_path, v06, catalog=CATALOG), v06, self_tuning=True
    ) == ["expected 8 workloads but found 2 for submission 'only'"]
    shutil.rmtree(tmp_path / "only" / "study_2" / f"{HIGH}_pytorch")
    shutil.rmtree(tmp_path / "only" / "study_1" / f"{LOW}_pytorch" / "trial_5")
    logs = read.read_logs(tmp_path, target_set, catalog=CATALOG)
    problems = score.strict_problems(logs, target_set, self_tuning=False)
    assert len(problems) == 2
    assert "expected 3 studies" in problems[0] or "expected 3 studies" in problems[1]
    assert score.strict_problems(logs, target_set, self_tuning=True) == [
        f"expected 3 studies for workload {HIGH!r} but found 2 for submission 'only'"
    ]
    parser = make_parser()
    args = ["score", "--submission_directory", str(tmp_path), "--targets", str(targets_file)]
    strict = parser.parse_args(
        [*args, "--strict", "--self_tuning_ruleset", "--output_dir", str(tmp_path / "o")]
    )
    assert strict.func(strict) == 2
    assert "--strict: expected 3 studies" in capsys.readouterr().err
    loose = parser.parse_args([*args, "--plots", "false", "--output-dir", str(tmp_path / "o")])
    assert loose.func(loose) == 0


def make_parser():
    parser = argparse.ArgumentParser(prog="algoperf")
    add_commands(parser.add_subparsers(dest="command"))
    return parser


def test_cli_writes_every_output(v06, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    root, _, _, _ = v06
    out = tmp_path / "out"
    args = make_parser().parse_args(
        [
            "score",
            "--submission-directory",
            str(root),
            "--targets",
            "v0.6",
            "--output_dir",
            str(out),
        ]
    )
    assert args.func(args) == 0
    scores = pd.read_csv(out / "scores.csv")
    assert list(scores.columns) == ["submission", "score"]
    assert scores["submission"].tolist() == ["alpha", "beta", "gamma"]
    assert scores["score"].tolist() == pytest.approx([0.25, 347 / 1584, 1 / 1584])
    medians = pd.read_csv(out / "time_to_target.csv").set_index("submission")
    assert medians.loc["beta", HIGH] == math.inf and math.isnan(medians.loc["alpha", THIRD])
    studies = pd.read_csv(out / "study_times.csv")
    assert len(studies) == 5 + 8 + 6  # (submission, workload, study) groups with trials
    speedups = pd.read_csv(out / "speedups.csv")
    assert speedups["base_submission"].unique().tolist() == ["alpha"]
    for name in ("performance_profiles.png", f"curves_{LOW}.png", f"curves_{THIRD}.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    summary = (out / "summary.md").read_text()
    assert "| alpha | 0.2500 |" in summary and "∞" in summary
    assert "alpha" in capsys.readouterr().out


def write_unknown_workload(root):
    folder = root / "s" / "st" / "nope_jax" / "trial_1"
    folder.mkdir(parents=True)
    (folder / "eval_measurements.csv").write_text("score,validation/loss\n1,1\n")


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda root: None, "is empty"),
        (lambda root: root.joinpath("x").write_text(""), "is empty"),
        (lambda root: write_unknown_workload(root), "no readable.*found only nope"),
    ],
)
def test_bad_input_errors(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(ValueError, match=message):
        read.read_logs(tmp_path, targets.load_targets("v0.6", catalog=CATALOG), catalog=CATALOG)


def test_missing_directory_and_bad_csv(tmp_path, capsys):
    target_set = targets.load_targets("v0.6", catalog=CATALOG)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read.read_logs(tmp_path / "absent", target_set, catalog=CATALOG)
    folder = write_trial(tmp_path, "s", "st", LOW, "trial_1", [(1, 1)])
    (folder / "eval_measurements.csv").write_text("global_step,validation/other\n1,2\n")
    with pytest.raises(ValueError, match="no 'score' or 'accumulated_submission_time'"):
        read.read_logs(tmp_path, target_set, catalog=CATALOG)
    (folder / "eval_measurements.csv").write_text("score,global_step\n1,2\n")
    with pytest.raises(ValueError, match="validation/"):
        read.read_logs(tmp_path, target_set, catalog=CATALOG)
    with pytest.raises(ValueError, match="unknown to the targets"):
        target_set.target_of("not_a_workload")
    parser = make_parser()
    args = parser.parse_args(
        ["score", "--submission_directory", str(tmp_path), "--output_dir", str(tmp_path)]
    )
    assert args.func(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("algoperf score: error:") and "\n" not in err


def test_both_frameworks_is_an_error(tmp_path):
    write_trial(tmp_path, "s", "st", LOW, "trial_1", [(1, 1)], framework="jax")
    write_trial(tmp_path, "s", "st", LOW, "trial_1", [(1, 1)], framework="pytorch")
    with pytest.raises(ValueError, match="both _jax and _pytorch"):
        read.read_logs(tmp_path, targets.load_targets("v0.6", catalog=CATALOG), catalog=CATALOG)


def test_targets_files(tmp_path):
    spec = workloads.get_spec(LOW)
    upstream = {
        "benchmark_version": "0.6",
        "base_workloads": [LOW, HIGH],
        "held_out_workloads": [spec.variants[0]],
        "workloads": {
            name: {
                "target_metric_name": workloads.get_spec(name).target_metric_name,
                "target_metric_goal": "maximize"
                if workloads.get_spec(name).higher_is_better
                else "minimize",
                "validation_target_value": workloads.get_spec(name).validation_target,
            }
            for name in (LOW, HIGH, spec.variants[0], THIRD)
        },
    }
    path = tmp_path / "upstream.json"
    path.write_text(json.dumps(upstream))
    loaded = targets.load_targets(path, catalog=CATALOG)
    assert loaded.base_workloads == (LOW, HIGH) and loaded.version == "v0.6"
    assert dict(loaded.held_out) == {spec.variants[0]: LOW}
    assert loaded.targets[LOW] == (spec.target_metric_name, spec.validation_target, False)
    short = tmp_path / "short.json"
    short.write_text(json.dumps({"custom": {"metric": "accuracy", "target": 0.5}}))
    assert targets.load_targets(short, catalog=CATALOG).targets["custom"] == ("accuracy", 0.5, True)
    short.write_text(json.dumps({"custom": {"metric": "mystery", "target": 0.5}}))
    with pytest.raises(ValueError, match="goal"):
        targets.load_targets(short, catalog=CATALOG)
    with pytest.raises(FileNotFoundError, match="neither a benchmark version"):
        targets.load_targets(tmp_path / "nope.json", catalog=CATALOG)


def write_csv_text(folder, text: str) -> None:
    (folder / "eval_measurements.csv").write_bytes(text.encode())


def test_unreadable_rows_are_named_counted_and_strict_refuses_them(tmp_path, capsys):
    """A row whose value is `xx` was silently NaN; one whose score is `xx` met the target at
    time NaN; a row with an extra field made pandas fail without naming the file."""
    metric = f"validation/{workloads.get_spec(LOW).target_metric_name}"
    g, b = good(LOW), bad(LOW)
    folder = write_trial(tmp_path, "s", "st", LOW, "trial_1", [(1, 1)])
    header = f"accumulated_submission_time,global_step,score,{metric}\n"
    write_csv_text(
        folder, header + f"10,1,10,{b}\n20,2,xx,{g}\n30,3,30,xx\n40,4,40,{g},9\n50,5,50,{g}\n"
    )
    target_set = targets.load_targets("v0.6", catalog=CATALOG)
    logs = read.read_logs(tmp_path, target_set, catalog=CATALOG)
    path = folder / "eval_measurements.csv"
    assert logs.unreadable_rows == (
        f"{path} line 5: 5 fields, the header has 4; row skipped",
        f"{path} line 3: score is 'xx', not a number; row skipped",
        f"{path} line 4: {metric} is 'xx', not a number; row skipped",
    )
    times = score.trial_times(logs, target_set)
    assert times["time"].tolist() == [50.0] and times["eval_index"].tolist() == [4]
    parser = make_parser()
    args = ["score", "--submission_directory", str(tmp_path), "--targets", "v0.6"]
    out = tmp_path / "out"
    loose = parser.parse_args([*args, "--plots", "false", "--output_dir", str(out)])
    assert loose.func(loose) == 0
    captured = capsys.readouterr()
    assert f"algoperf score: warning: {path} line 3: score is 'xx'" in captured.err
    assert "3 unreadable eval rows skipped" in captured.out
    assert "3 unreadable eval rows were skipped" in (out / "summary.md").read_text()
    strict = parser.parse_args([*args, "--strict", "--output_dir", str(out)])
    assert strict.func(strict) == 2
    assert f"--strict: {path} line 5: 5 fields" in capsys.readouterr().err


def test_a_file_that_is_not_text_is_refused_by_name(tmp_path, capsys):
    metric = f"validation/{workloads.get_spec(LOW).target_metric_name}"
    folder = write_trial(tmp_path, "s", "st", LOW, "trial_1", [(1, 1)])
    path = folder / "eval_measurements.csv"
    path.write_bytes(f"score,{metric}\n1,0.5\n2,\xff\n".encode("latin-1"))
    target_set = targets.load_targets("v0.6", catalog=CATALOG)
    with pytest.raises(ValueError, match=rf"{path} line 3: not UTF-8 text"):
        read.read_logs(tmp_path, target_set, catalog=CATALOG)
    args = make_parser().parse_args(
        ["score", "--submission_directory", str(tmp_path), "--output_dir", str(tmp_path / "o")]
    )
    assert args.func(args) == 2
    assert str(path) in capsys.readouterr().err


def test_crlf_and_lf_files_read_alike(tmp_path):
    metric = f"validation/{workloads.get_spec(LOW).target_metric_name}"
    text = f"score,global_step,{metric}\n1.5,1,0.5\n2.5,2,nan\n3.5,3,\n"
    lf, crlf = tmp_path / "lf.csv", tmp_path / "crlf.csv"
    lf.write_bytes(text.encode())
    crlf.write_bytes(text.replace("\n", "\r\n").encode())
    target = targets.load_targets("v0.6", catalog=CATALOG).target_of(LOW)
    (ours, problems), (theirs, _) = read.read_eval_csv(lf, target), read.read_eval_csv(crlf, target)
    assert problems == [] and ours["score"].tolist() == [1.5, 2.5, 3.5]
    pd.testing.assert_frame_equal(ours, theirs)
    pd.testing.assert_frame_equal(pd.read_csv(lf), pd.read_csv(crlf))  # upstream-style readers
