"""Check that each trial's logs obey the timing rules, like MLPerf's compliance checker.

A trial is any folder (at any depth) holding `eval_measurements.csv`. Its workload, benchmark
version and ruleset come from `flags_0.json` / `meta_data_0.json`, else from the folder name
`<workload>_<framework>` with the default version. Rules (`rule` in each violation):

- `csv`: the CSV can be read: UTF-8 text, every row with the header's number of fields and a
  number (or `nan`/empty) in each column the rules read. An unreadable row is named by line
  and left out of the other rules.
- `columns`: the CSV has the columns the other rules read.
- `workload`: the workload and version are known to the registry (the `WorkloadCatalog` the
  command layer passes in).
- `score_monotone`: `score` (submission time) never decreases from one eval to the next.
- `global_step`: the step grows from one eval to the next: it never goes backwards and no step
  is logged twice (a resumed trial drops the rows past its checkpoint before logging again).
- `eval_period`: consecutive evals are at least the workload's eval period apart. The runner
  starts an eval once `eval_period` s of wall time have passed since the previous eval *and its
  logging* ended (docs/rules.md, "Eval eligibility"). Between the ends of evals k and k+1 the
  wall clock runs through:
  the logging of row k (Δ accumulated_logging_time, added after row k is written), training,
  prepare_for_eval, and eval k+1 itself (Δ accumulated_eval_time). So
      gap = Δtotal_duration − Δaccumulated_eval_time − Δaccumulated_logging_time >= eval_period
  must hold, up to `tolerance_s` (clock skew between DDP ranks). The first eval (after step 1)
  has no predecessor; the last is exempt when the trial ended by training complete (a forced
  final eval). A trial run with `eval_every_steps` (testing only) is flagged.
- `workload_options`: a trial run with `--workload_options` (testing only: a smaller image, a
  shallower model) is flagged; its workload is not the benchmark's.
- `budget`: every eval's score is below the budget (`max_allowed_runtime_sec`, × the version's
  self-tuning factor for `tuning_ruleset` self): the runner runs no eval once it is spent.
- `time_to_target`: `trial_complete.json`'s time_to_target equals the score of the first eval
  row meeting the target (the runner's strict `<`/`>` test), or is null when no row meets it.
- `hparams`: external tuning: `hparams.json` lies in the search space (--search_space, else the
  flags' tuning_search_space, else `tuning_search_space.json` beside the submission);
  self-tuning: there is no `hparams.json`.

Warnings (reported, but not violations: the exit status stays 0):

- `data`: a `meta_data_<p>.json` records that the trial trained on other data than the
  workload's dataset: `workload.data_source` is not "full" (e.g. MNIST's offline fallback
  sample), or `workload.data_num_train_examples` differs from the workload's
  num_train_examples (docs/data.md, "Data source"). Its times are not comparable.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Any

import pandas as pd

from algoperf import logs, versions
from algoperf.scoring.catalog import WorkloadCatalog
from algoperf.scoring.read import TIME_COLUMNS, WORKLOAD_DIR, numeric_columns, read_table
from algoperf.search_space import SearchSpace, load_search_space, point_in_space
from algoperf.workload_spec import WorkloadSpec

EVAL_PERIOD_TOLERANCE_S = 1.0
"""Slack for the eval-period rule: under DDP the runner agrees times by max across ranks,
while total_duration is rank 0's clock."""
DURATION_COLUMNS = ("total_duration", "accumulated_eval_time", "accumulated_logging_time")


@dataclasses.dataclass(frozen=True)
class Violation:
    """One broken rule in one trial."""

    path: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.rule}: {self.detail}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrialContext:
    """What a trial was run as."""

    workload: str
    spec: WorkloadSpec
    """The workload's spec (targets, budgets), from the catalog."""
    version: str
    self_tuning: bool
    flags: dict[str, Any]
    complete: dict[str, Any] | None
    """The content of trial_complete.json (None if absent)."""
    metas: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    """File name -> content of every meta_data_<p>.json (one per start of the trial)."""


@dataclasses.dataclass(frozen=True)
class TrialReport:
    path: str
    violations: list[Violation]
    hparams_checked: bool
    """False when no search space was found for an external-tuning trial."""
    warnings: list[Violation] = dataclasses.field(default_factory=list)
    """What does not break a timing rule but makes the trial's times incomparable."""


def find_trials(directory: str | pathlib.Path) -> list[pathlib.Path]:
    """Every folder under `directory` (any depth, itself included) holding eval_measurements.csv.

    Raises:
        FileNotFoundError: `directory` does not exist.
    """
    root = pathlib.Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"log directory {root} does not exist or is not a directory")
    return sorted(path.parent for path in root.rglob(logs.EVAL_FILE) if path.is_file())


def _read_json(path: pathlib.Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path.name} is not valid JSON: {error}") from None
    return content if isinstance(content, dict) else None


def trial_context(
    trial_dir: pathlib.Path, *, catalog: WorkloadCatalog, version: str | None = None
) -> TrialContext:
    """The workload, version and ruleset a trial ran under.

    Raises:
        ValueError: They cannot be told, or the catalog does not know them.
    """
    flags = _read_json(trial_dir / "flags_0.json") or {}
    meta = _read_json(trial_dir / "meta_data_0.json") or {}
    workload = flags.get("workload")
    if not workload:
        match = WORKLOAD_DIR.match(trial_dir.parent.name)
        if match is None:
            raise ValueError(
                "cannot tell the workload: no flags_0.json with 'workload', and the parent "
                f"folder {trial_dir.parent.name!r} is not <workload>_<jax|pytorch>"
            )
        workload = match["workload"]
    version = (
        version
        or flags.get("benchmark_version")
        or meta.get("benchmark_version")
        or versions.DEFAULT_VERSION
    )
    version = versions.get_version(str(version)).name
    spec = catalog.spec(workload)
    spec.budget(version)  # clear error if unknown or not in version
    return TrialContext(
        workload=workload,
        spec=spec,
        version=version,
        self_tuning=flags.get("tuning_ruleset") == "self",
        flags=flags,
        complete=_read_json(trial_dir / logs.COMPLETE_FILE),
        metas={
            path.name: _read_json(path) or {}
            for path in sorted(trial_dir.glob("meta_data_*.json"), key=_preemption)
        },
    )


def _preemption(path: pathlib.Path) -> int:
    suffix = path.stem.rsplit("_", 1)[-1]
    return int(suffix) if suffix.isdigit() else -1


def check_score_monotone(scores: pd.Series) -> list[str]:
    """Submission time never decreases between consecutive evals."""
    values = scores.to_numpy(float)
    return [
        f"eval {k + 2} has score {values[k + 1]:.6g} s, below {values[k]:.6g} s of eval {k + 1}"
        for k in range(len(values) - 1)
        if values[k + 1] < values[k]
    ]


def check_global_step(steps: pd.Series) -> list[str]:
    """The global step grows from eval to eval: never backwards, never logged twice."""
    problems, seen = [], {}
    previous = None  # (eval number, step) of the last readable row
    for number, step in enumerate(steps.to_numpy(float), start=1):
        if math.isnan(step):
            continue
        if previous is not None and step < previous[1]:
            problems.append(
                f"eval {number} has global_step {step:g}, below {previous[1]:g} of eval "
                f"{previous[0]} (the step went backwards)"
            )
        elif step in seen:
            problems.append(
                f"eval {number} logs global_step {step:g} again (eval {seen[step]} logged it)"
            )
        seen.setdefault(step, number)
        previous = (number, step)
    return problems


def check_data(metas: dict[str, dict[str, Any]], spec: WorkloadSpec) -> list[str]:
    """The trial trained on the workload's own dataset (module docstring, `data`)."""
    problems = []
    for name, meta in metas.items():
        source = meta.get("workload.data_source")
        count = meta.get("workload.data_num_train_examples")
        if source not in (None, "full"):
            problems.append(f"{name}: trained on {source}; its times are not comparable")
        elif count is not None and count != spec.num_train_examples:
            problems.append(
                f"{name}: trained on {count} training examples, not the workload's "
                f"{spec.num_train_examples}; its times are not comparable"
            )
    return problems


def check_eval_period(
    rows: pd.DataFrame, period_s: float, *, exempt_last: bool, tolerance_s: float
) -> list[str]:
    """Consecutive evals are at least an eval period of training wall time apart (module doc)."""
    deltas = rows[list(DURATION_COLUMNS)].astype(float).diff()
    gaps = (
        deltas["total_duration"]
        - deltas["accumulated_eval_time"]
        - deltas["accumulated_logging_time"]
    ).to_numpy()
    last = len(gaps) - 1
    problems = []
    for k in range(1, len(gaps)):
        if k == last and exempt_last:
            continue
        if gaps[k] < period_s - tolerance_s:
            problems.append(
                f"evals {k} and {k + 1} are {gaps[k]:.6g} s apart, less than the eval period "
                f"{period_s:g} s (Δtotal_duration − Δaccumulated_eval_time − "
                "Δaccumulated_logging_time)"
            )
    return problems


def check_budget(scores: pd.Series, budget_s: float) -> list[str]:
    """No eval runs once the budget is spent, so every logged score is below it."""
    return [
        f"eval {k + 1} has score {score:.6g} s, not below the budget {budget_s:g} s"
        for k, score in enumerate(scores.to_numpy(float))
        if score >= budget_s
    ]


def check_time_to_target(
    scores: pd.Series, values: pd.Series, target: float, higher_is_better: bool, claimed
) -> list[str]:
    """trial_complete.json's time_to_target is the score of the first eval meeting the target."""
    met = values.to_numpy(float) > target if higher_is_better else values.to_numpy(float) < target
    hits = met.nonzero()[0]
    actual = float(scores.iloc[hits[0]]) if len(hits) else None
    if claimed is None and actual is None:
        return []
    if claimed is not None and actual is not None and math.isclose(claimed, actual, abs_tol=1e-6):
        return []
    where = f"eval {hits[0] + 1} at {actual:.6g} s" if actual is not None else "no eval"
    return [f"trial_complete.json says time_to_target {claimed}, but {where} meets the target"]


def _search_space_path(context: TrialContext) -> pathlib.Path | None:
    declared = context.flags.get("tuning_search_space")
    if declared:
        return pathlib.Path(declared).expanduser()
    submission = context.flags.get("submission_path")
    if submission:
        beside = pathlib.Path(submission).expanduser().parent / "tuning_search_space.json"
        if beside.is_file():
            return beside
    return None


def check_hparams(
    trial_dir: pathlib.Path, context: TrialContext, space: SearchSpace | None
) -> tuple[list[str], bool]:
    """(violations, whether the point was checked against a space)."""
    path = trial_dir / "hparams.json"
    if context.self_tuning:
        found = ["self-tuning trial has hparams.json (it takes no hyperparameters)"]
        return (found if path.exists() else []), True
    if not path.is_file():
        return ["missing hparams.json (external tuning writes it for every trial)"], True
    if space is None:
        space_path = _search_space_path(context)
        if space_path is None:
            return [], False
        try:
            space = load_search_space(space_path)
        except (OSError, ValueError) as error:
            return [f"cannot load the search space {space_path}: {error}"], True
    try:
        point = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        return [f"hparams.json is not valid JSON: {error}"], True
    if not isinstance(point, dict):
        return ["hparams.json is not a JSON object"], True
    return [f"hparams.json {problem}" for problem in point_in_space(space, point)], True


def _row_rules(rows: pd.DataFrame, context: TrialContext, tolerance_s: float) -> list[tuple]:
    """(rule, detail) pairs of the CSV-based rules."""
    spec = context.spec
    budget = spec.budget(context.version)
    metric = f"validation/{spec.target_metric_name}"
    time_column = next((c for c in TIME_COLUMNS if c in rows.columns), None)
    needed = [*DURATION_COLUMNS, metric] if context.complete is not None else [*DURATION_COLUMNS]
    missing = [c for c in needed if c not in rows.columns]
    if time_column is None:
        missing.insert(0, "score")
    found: list[tuple] = [("columns", f"missing {', '.join(missing)}")] if missing else []
    if time_column is not None:
        scores = pd.to_numeric(rows[time_column], errors="coerce")
        factor = versions.get_version(context.version).self_tuning_budget_factor
        budget_s = budget.max_allowed_runtime_sec * (factor if context.self_tuning else 1.0)
        found += [("score_monotone", d) for d in check_score_monotone(scores)]
        if "global_step" in rows.columns:
            found += [("global_step", d) for d in check_global_step(rows["global_step"])]
        found += [("budget", d) for d in check_budget(scores, budget_s)]
        if context.complete is not None and metric in rows.columns:
            values = pd.to_numeric(rows[metric], errors="coerce")
            claimed = context.complete.get("time_to_target")
            found += [
                ("time_to_target", d)
                for d in check_time_to_target(
                    scores, values, spec.validation_target, spec.higher_is_better, claimed
                )
            ]
    if context.flags.get("workload_options"):
        found.append(
            (
                "workload_options",
                f"flags set workload_options={context.flags['workload_options']!r} (testing "
                "only): the workload was not the benchmark's",
            )
        )
    if context.flags.get("eval_every_steps"):
        found.append(
            (
                "eval_period",
                f"flags set eval_every_steps={context.flags['eval_every_steps']} (testing only); "
                "evals were not spaced by wall time",
            )
        )
    elif all(c in rows.columns for c in DURATION_COLUMNS):
        stop = (context.complete or {}).get("stop_reason")
        exempt = stop == "training complete" or bool(context.flags.get("max_global_steps"))
        found += [
            ("eval_period", d)
            for d in check_eval_period(
                rows, budget.eval_period_time_sec, exempt_last=exempt, tolerance_s=tolerance_s
            )
        ]
    return found


def check_trial(
    trial_dir: str | pathlib.Path,
    *,
    catalog: WorkloadCatalog,
    search_space: SearchSpace | None = None,
    version: str | None = None,
    tolerance_s: float = EVAL_PERIOD_TOLERANCE_S,
) -> TrialReport:
    """Every rule of the module docstring on one trial folder."""
    trial_dir = pathlib.Path(trial_dir)
    where = str(trial_dir)
    try:
        context = trial_context(trial_dir, catalog=catalog, version=version)
    except ValueError as error:
        return TrialReport(where, [Violation(where, "workload", str(error))], True)
    rows, unreadable = read_rows(trial_dir, context)
    found = [("csv", d) for d in unreadable] + _row_rules(rows, context, tolerance_s)
    hparams_problems, checked = check_hparams(trial_dir, context, search_space)
    found += [("hparams", d) for d in hparams_problems]
    warnings = [Violation(where, "data", d) for d in check_data(context.metas, context.spec)]
    return TrialReport(where, [Violation(where, rule, d) for rule, d in found], checked, warnings)


def read_rows(trial_dir: pathlib.Path, context: TrialContext) -> tuple[pd.DataFrame, list[str]]:
    """The eval rows, the columns the rules read as numbers, and what could not be read (an
    unreadable file gives no rows; an unreadable row is NaN)."""
    try:
        table, problems = read_table(trial_dir / logs.EVAL_FILE, label=logs.EVAL_FILE)
    except ValueError as error:
        return pd.DataFrame(), [str(error)]
    metric = f"validation/{context.spec.target_metric_name}"
    wanted = [*TIME_COLUMNS, *DURATION_COLUMNS, "global_step", metric]
    numbers, unreadable = numeric_columns(
        table, [c for c in wanted if c in table.columns], logs.EVAL_FILE
    )
    return numbers.reset_index(drop=True), problems + unreadable


def check_logs(
    directory: str | pathlib.Path,
    *,
    catalog: WorkloadCatalog,
    search_space: SearchSpace | None = None,
    version: str | None = None,
    tolerance_s: float = EVAL_PERIOD_TOLERANCE_S,
) -> list[TrialReport]:
    """Checks every trial under `directory` against the workloads of `catalog`.

    Raises:
        FileNotFoundError: `directory` does not exist.
        ValueError: No trial (no eval_measurements.csv) under it.
    """
    trial_dirs = find_trials(directory)
    if not trial_dirs:
        raise ValueError(f"no {logs.EVAL_FILE} under {directory}; nothing to check")
    return [
        check_trial(
            path,
            catalog=catalog,
            search_space=search_space,
            version=version,
            tolerance_s=tolerance_s,
        )
        for path in trial_dirs
    ]
