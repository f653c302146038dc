"""Time to target, performance profiles and the benchmark score (docs/rules.md, "Scoring").

Each step is a small function over pandas tables, in the order `score_logs` applies them:
trial_times (step 1) -> study_times (step 2) -> workload_times (step 3) -> held-out gate
before the cut -> cut_slow (step 4) -> held-out gate after the cut -> ratios (step 5) ->
performance_profiles (step 6) -> benchmark_scores (step 7). `speedups` is step 9. Steps are
those of docs/rules.md, "Scoring"; the gates, its "Held-out workloads (v0.5)".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from algoperf import versions
from algoperf.scoring.catalog import WorkloadCatalog
from algoperf.scoring.read import Logs
from algoperf.scoring.targets import TargetSet, reached

MAX_TAU = 4.0
"""r_max: the upper end of the profile's τ range and the factor of the slow-time cut."""
NUM_TAUS = 100
"""The profile is sampled at `np.linspace(1, MAX_TAU, NUM_TAUS)`; the grid is part of the score."""
STRICT_NUM_STUDIES = 3
"""--strict's study count: hard-coded upstream, whatever the version (step 8)."""
STRICT_NUM_TRIALS = 5
"""--strict's trials per study (external tuning only)."""
SPEEDUP_BUDGET_VERSION = "v0.5"
"""Step 9 replaces ∞ by this version's budget + 1 s, whatever the scored version (upstream)."""


def taus(max_tau: float = MAX_TAU, num: int = NUM_TAUS) -> np.ndarray:
    """The τ grid of the performance profile: `np.linspace(1, max_tau, num)`."""
    return np.linspace(1.0, max_tau, num)


def trial_times(logs: Logs, targets: TargetSet) -> pd.DataFrame:
    """Each readable scored trial's first target hit (step 1).

    Rows are read in file order; the first row whose `validation/<metric>` meets the target
    (`<=` minimised, `>=` maximised; NaN never does) gives the trial's time (its `score`).

    Returns:
        One row per trial: submission, study, workload, trial, eval_index (of the first hit,
        NaN if none) and time (∞ if none).
    """
    evals = logs.evals
    hit = pd.Series(False, index=evals.index)
    for workload, rows in evals.groupby("workload"):
        hit[rows.index] = reached(rows["value"], targets.target_of(workload)).to_numpy()
    first = evals[hit].drop_duplicates("trial", keep="first")[["trial", "eval_index", "score"]]
    trials = logs.trials[logs.trials["scored"]][["submission", "study", "workload", "trial"]]
    table = trials.merge(first, on="trial", how="left").rename(columns={"score": "time"})
    table["eval_index"] = table["eval_index"].astype(float)
    table["time"] = table["time"].astype(float).where(table["eval_index"].notna(), np.inf)
    return table


def study_times(trial_table: pd.DataFrame) -> pd.DataFrame:
    """One trial per study (step 2): the earliest first hit by eval index, ties by smallest time.

    Args:
        trial_table: The output of `trial_times`.

    Returns:
        One row per (submission, workload, study) with readable trials: time (∞ if no trial
        hit), trial (the picked trial, "" if none) and eval_index.
    """
    keys = ["submission", "workload", "study"]
    ordered = trial_table.sort_values(
        [*keys, "eval_index", "time"], na_position="last", kind="stable"
    )
    picked = ordered.drop_duplicates(keys, keep="first").reset_index(drop=True)
    picked["trial"] = picked["trial"].where(picked["eval_index"].notna(), "")
    return picked[[*keys, "time", "trial", "eval_index"]]


def workload_times(
    study_table: pd.DataFrame, submissions: Sequence[str], workloads: Sequence[str]
) -> pd.DataFrame:
    """Per submission and workload: `np.median` over the studies found, ∞ included (step 3).

    With an even number of studies the median is the mean of the middle two, so ∞ if either
    is ∞. A workload without any readable trial stays NaN (missing).

    Returns:
        A table indexed by submission with one column per workload.
    """
    medians = study_table.groupby(["submission", "workload"])["time"].agg(
        lambda times: float(np.median(times.to_numpy(float)))
    )
    table = medians.unstack("workload") if len(medians) else pd.DataFrame()
    table = table.reindex(index=list(submissions), columns=list(workloads)).astype(float)
    table.index.name, table.columns.name = "submission", None
    return table


def gate_held_out_before_cut(times: pd.DataFrame, held_out: Mapping[str, str]) -> pd.DataFrame:
    """A held-out variant's time becomes ∞ where its base time is ∞ or NaN (1st held-out gate)."""
    gated = times.copy()
    for variant, base in held_out.items():
        gated.loc[~np.isfinite(gated[base]), variant] = np.inf
    return gated


def cut_slow(times: pd.DataFrame, factor: float = MAX_TAU) -> pd.DataFrame:
    """In every column, a time > factor × the column's best time (NaN ignored) is ∞ (step 4)."""
    best = times.min(axis=0, skipna=True)
    return times.mask(times.gt(factor * best, axis=1), np.inf)


def gate_base_after_cut(times: pd.DataFrame, held_out: Mapping[str, str]) -> pd.DataFrame:
    """A base time becomes ∞ where its held-out variant's time is ∞ or NaN (2nd held-out gate)."""
    gated = times.copy()
    for variant, base in held_out.items():
        gated.loc[~np.isfinite(gated[variant]), base] = np.inf
    return gated


def scored_times(times: pd.DataFrame, targets: TargetSet, factor: float = MAX_TAU) -> pd.DataFrame:
    """Held-out gates around the slow-time cut, then the base columns only (step 4)."""
    gated = gate_held_out_before_cut(times, targets.held_out)
    gated = cut_slow(gated, factor)
    gated = gate_base_after_cut(gated, targets.held_out)
    return gated[list(targets.base_workloads)]


def ratios(times: pd.DataFrame) -> pd.DataFrame:
    """r = t / (the column's smallest t, NaN ignored) (step 5); an all-∞ column gives NaN."""
    return times.div(times.min(axis=0, skipna=True), axis=1)


def performance_profiles(
    ratio_table: pd.DataFrame, num_workloads: int, tau_grid: np.ndarray | None = None
) -> pd.DataFrame:
    """ρ_s(τ) = |{w : r_{s,w} <= τ}| / n with n fixed (step 6); NaN never counts.

    Args:
        ratio_table: Submissions × workloads ratios.
        num_workloads: n, the number of base workloads (missing ones count as not reached).
        tau_grid: The τ values; default `taus()`.

    Returns:
        Submissions × τ values.
    """
    grid = taus() if tau_grid is None else np.asarray(tau_grid, float)
    values = ratio_table.to_numpy(float)
    with np.errstate(invalid="ignore"):
        counts = (values[:, :, None] <= grid[None, None, :]).sum(axis=1)
    return pd.DataFrame(counts / num_workloads, index=ratio_table.index, columns=grid)


def benchmark_scores(profiles: pd.DataFrame) -> pd.Series:
    """B_s = trapezoid rule of ρ_s over the τ grid / (τ_max − τ_min) (step 7), in [0, 1]."""
    grid = np.asarray(profiles.columns, float)
    areas = np.trapezoid(profiles.to_numpy(float), x=grid, axis=1)
    return pd.Series(areas / (grid[-1] - grid[0]), index=profiles.index, name="score")


@dataclasses.dataclass(frozen=True)
class ScoreResult:
    """Every intermediate table of one scoring run."""

    trial_times: pd.DataFrame
    study_times: pd.DataFrame
    times: pd.DataFrame
    """Median time per submission × scored workload (base and held-out), before gates/cut."""
    scored_times: pd.DataFrame
    """Base workloads only, after the held-out gates and the slow-time cut."""
    ratios: pd.DataFrame
    profiles: pd.DataFrame
    scores: pd.Series


def score_logs(logs: Logs, targets: TargetSet, max_tau: float = MAX_TAU) -> ScoreResult:
    """Scores every submission in `logs` together (steps 1-7)."""
    trial_table = trial_times(logs, targets)
    study_table = study_times(trial_table)
    times = workload_times(study_table, logs.submissions, targets.scored_workloads)
    cut = scored_times(times, targets, max_tau)
    ratio_table = ratios(cut)
    profiles = performance_profiles(
        ratio_table, len(targets.base_workloads), taus(max_tau, NUM_TAUS)
    )
    return ScoreResult(
        trial_times=trial_table,
        study_times=study_table,
        times=times,
        scored_times=cut,
        ratios=ratio_table,
        profiles=profiles,
        scores=benchmark_scores(profiles),
    )


def strict_problems(logs: Logs, targets: TargetSet, *, self_tuning: bool) -> list[str]:
    """What `--strict` rejects (warnings otherwise), one message each (step 8).

    Checks per submission: the workload count (registered but unscored variant folders count
    too) equals base + held-out; per workload, STRICT_NUM_STUDIES studies; per study,
    STRICT_NUM_TRIALS trials (not checked for self-tuning).
    """
    problems = []
    expected = len(targets.base_workloads) + len(targets.held_out)
    for submission, trials in logs.trials.groupby("submission"):
        found = trials["workload"].nunique()
        if found != expected:
            problems.append(
                f"expected {expected} workloads but found {found} for submission {submission!r}"
            )
        for workload, rows in trials[trials["scored"]].groupby("workload"):
            studies = rows["study"].nunique()
            if studies != STRICT_NUM_STUDIES:
                problems.append(
                    f"expected {STRICT_NUM_STUDIES} studies for workload {workload!r} but "
                    f"found {studies} for submission {submission!r}"
                )
            if self_tuning:
                continue
            for study, count in rows.groupby("study").size().items():
                if count != STRICT_NUM_TRIALS:
                    problems.append(
                        f"expected {STRICT_NUM_TRIALS} trials in study {study!r} of workload "
                        f"{workload!r} but found {count} for submission {submission!r}"
                    )
    return problems


def infinity_stand_ins(
    targets: TargetSet, *, catalog: WorkloadCatalog, self_tuning: bool
) -> dict[str, float]:
    """Step 9's stand-in for ∞ per base workload: factor × the v0.5 budget + 1 s.

    factor is v0.5's self-tuning budget factor (3) under --self_tuning_ruleset, else 1. A
    workload without a v0.5 budget in `catalog` (newer than v0.5, or unregistered) uses the
    scored version's budget and self-tuning factor instead; one without any known budget is
    left out.
    """
    old = versions.get_version(SPEEDUP_BUDGET_VERSION)
    current_factor = 1.0
    if targets.version is not None:
        current_factor = versions.get_version(targets.version).self_tuning_budget_factor
    stand_ins = {}
    for workload in targets.base_workloads:
        budget = None
        if workload in catalog.specs:
            budget = catalog.spec(workload).budgets.get(old.name)
        if budget is not None:
            factor = old.self_tuning_budget_factor if self_tuning else 1.0
            stand_ins[workload] = factor * budget.max_allowed_runtime_sec + 1.0
        elif workload in targets.budgets:
            factor = current_factor if self_tuning else 1.0
            stand_ins[workload] = factor * targets.budgets[workload] + 1.0
    return stand_ins


def speedups(
    times: pd.DataFrame, base_submission: str, stand_ins: Mapping[str, float]
) -> pd.DataFrame:
    """Geometric-mean time ratio of each submission against a base submission (step 9).

    Uses the medians of steps 1-3 (no held-out gate, no cut) on the workloads of `stand_ins`
    that either submission of a pair has trials for. ∞ becomes the stand-in; so does a workload
    missing (NaN) for one of the two (upstream's geometric mean would be NaN).

    Returns:
        One row per other submission: base_submission, time_ratio (geometric mean of
        t / t_base), time_saving (1 − time_ratio), speedup (1 / time_ratio), num_workloads,
        and `ratio_<workload>` per workload.
    """
    if base_submission not in times.index:
        raise ValueError(
            f"base submission {base_submission!r} is not among the scored submissions: "
            f"{', '.join(times.index)}"
        )
    columns = [w for w in stand_ins if w in times.columns]
    filled = times[columns].copy()
    for workload in columns:
        finite = np.isfinite(filled[workload])
        filled[workload] = filled[workload].where(finite, stand_ins[workload])
    per_workload = filled.div(filled.loc[base_submission], axis=1)
    rows = []
    for submission in times.index.drop(base_submission):
        present = times.loc[[submission, base_submission], columns].notna().any(axis=0)
        workload_ratios = per_workload.loc[submission, present[present].index]
        time_ratio = float(np.exp(np.log(workload_ratios.to_numpy(float)).mean()))
        rows.append(
            {
                "submission": submission,
                "base_submission": base_submission,
                "time_ratio": time_ratio,
                "time_saving": 1.0 - time_ratio,
                "speedup": 1.0 / time_ratio,
                "num_workloads": len(workload_ratios),
                **{f"ratio_{w}": float(r) for w, r in workload_ratios.items()},
            }
        )
    return pd.DataFrame(rows)
