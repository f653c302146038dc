"""Write a scoring run's results: CSV tables, PNG plots and a short Markdown summary.

matplotlib is imported only when plotting, and drives the Agg canvas directly (no pyplot, no
global backend switch), so this works on machines without a display.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pandas as pd

from algoperf.scoring.read import Logs
from algoperf.scoring.score import MAX_TAU, ScoreResult
from algoperf.scoring.targets import TargetSet


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def plot_performance_profiles(profiles: pd.DataFrame, path: pathlib.Path) -> None:
    """ρ_s(τ) per submission, with its score in the legend."""
    figure = _figure(8, 5)
    axes = figure.add_subplot()
    grid = np.asarray(profiles.columns, float)
    area = np.trapezoid(profiles.to_numpy(float), x=grid, axis=1) / (grid[-1] - grid[0])
    for (submission, row), score in zip(profiles.iterrows(), area):
        axes.step(grid, row.to_numpy(float), where="post", label=f"{submission} ({score:.4f})")
    axes.set_xlabel("τ: ratio of time to target to the best submission's")
    axes.set_ylabel("fraction of base workloads within τ")
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlim(grid[0], grid[-1])
    axes.grid(alpha=0.3)
    axes.legend(title="submission (score)", fontsize="small")
    figure.tight_layout()
    figure.savefig(path)


def plot_curves(logs: Logs, targets: TargetSet, workload: str, path: pathlib.Path) -> None:
    """Validation metric against submission time for every trial of one workload."""
    target = targets.target_of(workload)
    figure = _figure(8, 5)
    axes = figure.add_subplot()
    rows = logs.evals[logs.evals["workload"] == workload]
    colors = {}
    for (submission, _trial), trial_rows in rows.groupby(["submission", "trial"], sort=True):
        if submission not in colors:
            colors[submission] = f"C{len(colors) % 10}"
            label = submission
        else:
            label = None
        axes.plot(
            trial_rows["score"],
            trial_rows["value"],
            color=colors[submission],
            alpha=0.6,
            marker=".",
            label=label,
        )
    direction = "higher" if target.higher_is_better else "lower"
    axes.axhline(target.target, color="black", linestyle="--", label=f"target {target.target:g}")
    axes.set_title(f"{workload}: validation/{target.metric} ({direction} is better)")
    axes.set_xlabel("submission time (s)")
    axes.set_ylabel(f"validation/{target.metric}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path)


def _seconds(value: float) -> str:
    if math.isnan(value):
        return "—"
    if math.isinf(value):
        return "∞"
    return f"{value:,.0f}"


def summary_markdown(
    result: ScoreResult, targets: TargetSet, *, self_tuning: bool, unreadable_rows: int = 0
) -> str:
    """Scores and per-workload median times to target, as Markdown (and the count of eval rows
    skipped as unreadable, if any)."""
    ruleset = "self-tuning" if self_tuning else "external tuning"
    lines = [
        f"# AlgoPerf scores (targets {targets.label}, {ruleset})",
        "",
        f"{len(result.scores)} submissions scored together; n = {len(targets.base_workloads)} "
        f"base workloads; τ ∈ [1, {MAX_TAU:g}]. Times are medians over studies of the "
        "submission time to the validation target, in seconds (∞: not reached, —: no readable "
        "trial).",
        "",
    ]
    columns = list(result.times.columns)
    lines.append("| submission | score | " + " | ".join(columns) + " |")
    lines.append("|---|---:|" + "---:|" * len(columns))
    for submission in result.scores.sort_values(ascending=False, kind="stable").index:
        times = " | ".join(_seconds(result.times.loc[submission, w]) for w in columns)
        lines.append(f"| {submission} | {result.scores[submission]:.4f} | {times} |")
    if targets.held_out:
        pairs = ", ".join(f"{v} → {b}" for v, b in targets.held_out.items())
        lines += ["", f"Held-out variants gate their base workloads: {pairs}."]
    if unreadable_rows:
        lines += [
            "",
            f"**{unreadable_rows} unreadable eval rows were skipped** (they never reach a "
            "target); `algoperf score` names each file and line, and `--strict` refuses them.",
        ]
    return "\n".join(lines) + "\n"


def write_tables(
    result: ScoreResult, output_dir: pathlib.Path, speedup_table: pd.DataFrame | None
) -> list[pathlib.Path]:
    """scores.csv, time_to_target.csv, study_times.csv, trial_times.csv,
    performance_profiles.csv and (given a table) speedups.csv."""
    scores = result.scores.sort_values(ascending=False, kind="stable").rename_axis("submission")
    tables = {
        "scores.csv": scores.reset_index(),
        "time_to_target.csv": result.times.reset_index(),
        "study_times.csv": result.study_times,
        "trial_times.csv": result.trial_times,
        "performance_profiles.csv": result.profiles.rename(columns=lambda t: f"{t:.6g}")
        .rename_axis("submission")
        .reset_index(),
    }
    if speedup_table is not None:
        tables["speedups.csv"] = speedup_table
    written = []
    for name, table in tables.items():
        path = output_dir / name
        table.to_csv(path, index=False)
        written.append(path)
    return written


def write_report(
    result: ScoreResult,
    logs: Logs,
    targets: TargetSet,
    output_dir: str | pathlib.Path,
    *,
    speedup_table: pd.DataFrame | None = None,
    self_tuning: bool = False,
    plots: bool = True,
) -> list[pathlib.Path]:
    """Writes every output of a scoring run into `output_dir` (created if needed).

    Returns:
        The paths written.
    """
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = write_tables(result, output_dir, speedup_table)
    if plots:
        path = output_dir / "performance_profiles.png"
        plot_performance_profiles(result.profiles, path)
        written.append(path)
        for workload in targets.scored_workloads:
            if (logs.evals["workload"] == workload).any():
                path = output_dir / f"curves_{workload}.png"
                plot_curves(logs, targets, workload, path)
                written.append(path)
    path = output_dir / "summary.md"
    summary = summary_markdown(
        result, targets, self_tuning=self_tuning, unreadable_rows=len(logs.unreadable_rows)
    )
    path.write_text(summary)
    written.append(path)
    return written
