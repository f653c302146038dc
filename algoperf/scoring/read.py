"""Read a ruleset's log tree into two tables: readable trials and their eval rows
(docs/rules.md, "Scoring", step 0).

Layout: `<DIR>/<submission>/<study>/<workload>_<jax|pytorch>/trial_<k>/eval_measurements.csv`.
A `<submission>-YYYY-MM-DD-HH-MM-SS` folder is merged into `<submission>` (same-named studies
pooled). Files, stray folders and folders of workloads the targets do not score are ignored; a
trial folder without `eval_measurements.csv` (a crashed run) is skipped, not counted as ∞.
A row that cannot be read (a cell that is not a number, the wrong number of fields) is skipped
with a warning naming the file and line (`Logs.unreadable_rows`; `--strict` refuses them); a file
that is not UTF-8 text is refused, by name.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import pathlib
import re

import pandas as pd

from algoperf import logs
from algoperf.scoring.catalog import WorkloadCatalog
from algoperf.scoring.targets import Target, TargetSet

WORKLOAD_DIR = re.compile(r"^(?P<workload>.+)_(?P<framework>jax|pytorch)$")
TRIAL_DIR = re.compile(r"^trial_\d+")
TIMESTAMP_SUFFIX = re.compile(r"^(?P<name>.+)-\d{4}(?:-\d{2}){5}$")
TIME_COLUMNS = ("score", "accumulated_submission_time")
"""The submission time of an eval row: `score`, else `accumulated_submission_time` (equal)."""
TRIAL_COLUMNS = ["submission", "study", "workload", "framework", "trial", "path", "scored"]
EVAL_COLUMNS = ["submission", "study", "workload", "trial", "eval_index", "score", "value"]
LAYOUT = "<DIR>/<submission>/<study>/<workload>_<jax|pytorch>/trial_<k>/eval_measurements.csv"
MISSING_CELLS = frozenset({"", "nan", "-nan", "na", "n/a", "null", "none"})
"""Cells that hold no number (the logger writes `nan` and empty cells): NaN, no warning."""


@dataclasses.dataclass(frozen=True)
class Logs:
    """The readable trials of every submission, and the eval rows of the scored ones."""

    trials: pd.DataFrame
    """One row per readable trial (TRIAL_COLUMNS). `trial` is its folder relative to DIR
    (unique); `scored` is False for registered workloads the targets do not score (they only
    count in --strict's workload count)."""
    evals: pd.DataFrame
    """One row per eval of a scored trial (EVAL_COLUMNS), in file order; `eval_index` is the
    0-based row number, `value` the validation metric (NaN where missing)."""
    notes: tuple[str, ...] = ()
    """What was ignored, one line each (the CLI prints them as warnings)."""
    unreadable_rows: tuple[str, ...] = ()
    """Eval rows skipped because they cannot be read, one line each naming the file and line
    (a skipped row never reaches the target). Warnings; --strict refuses them."""

    @property
    def submissions(self) -> list[str]:
        """Submissions with at least one readable scored trial, sorted."""
        scored = self.trials[self.trials["scored"]]
        return sorted(scored["submission"].unique())


def submission_folders(directory: str | pathlib.Path) -> dict[str, list[pathlib.Path]]:
    """Submission name -> its folders: the plain one first, then timestamped copies (sorted).

    Raises:
        FileNotFoundError: The directory does not exist.
        ValueError: It is not a directory or holds no sub-directory.
    """
    root = pathlib.Path(directory)
    if not root.exists():
        raise FileNotFoundError(f"submission directory {root} does not exist; expected {LAYOUT}")
    if not root.is_dir():
        raise ValueError(f"submission directory {root} is not a directory; expected {LAYOUT}")
    grouped: dict[str, list[pathlib.Path]] = {}
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        match = TIMESTAMP_SUFFIX.match(path.name)
        name = match["name"] if match else path.name
        grouped.setdefault(name, []).append(path)
    if not grouped:
        raise ValueError(f"submission directory {root} is empty; expected {LAYOUT}")
    # The plain folder first (a suffixed one sorts after it anyway; keep it explicit).
    return {
        name: sorted(paths, key=lambda p: (p.name != name, p.name))
        for name, paths in sorted(grouped.items())
    }


def read_table(
    path: str | pathlib.Path, *, label: str | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """A CSV's cells as strings, indexed by their line in the file, and its unreadable rows.

    Lines may end in `\\n` or `\\r\\n`; blank lines are skipped. A row with another number of
    fields than the header keeps its place with empty cells, and is reported. Messages name the
    file as `label` (default: its path).

    Raises:
        ValueError: The file is empty, not UTF-8 text, or not CSV; the message names it.
    """
    data = pathlib.Path(path).read_bytes()
    path = label or path
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ValueError(
            f"{path} line {line}: not UTF-8 text ({error.reason} at byte {error.start}); is it "
            "an eval_measurements.csv? repair or delete the file"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    rows, lines, problems = [], [], []
    try:
        header = next((fields for fields in reader if fields), None)
        if header is None:
            raise ValueError(f"{path}: empty file with no header; delete or rerun this trial")
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(header):
                problems.append(
                    f"{path} line {reader.line_num}: {len(fields)} fields, the header has "
                    f"{len(header)}; row skipped"
                )
                fields = [""] * len(header)
            rows.append(fields)
            lines.append(reader.line_num)
    except csv.Error as error:
        raise ValueError(f"{path} line {reader.line_num}: not CSV ({error})") from None
    return pd.DataFrame(rows, columns=header, index=lines, dtype=object), problems


def numeric_columns(
    table: pd.DataFrame, columns: list[str], path: str | pathlib.Path
) -> tuple[pd.DataFrame, list[str]]:
    """`columns` of a `read_table` table as floats, and the rows with a cell that is not a
    number (`MISSING_CELLS` are NaN, silently). Such a row becomes NaN in every column, so it
    is skipped (it never meets a target), and is reported by line."""
    numbers, bad = {}, {}
    for column in columns:
        cells = table[column].astype(str).str.strip()
        values = pd.to_numeric(cells.where(~cells.str.lower().isin(MISSING_CELLS)), errors="coerce")
        unreadable = values.isna() & ~cells.str.lower().isin(MISSING_CELLS)
        for line, cell in cells[unreadable].items():
            bad.setdefault(line, []).append(f"{column} is {cell!r}")
        numbers[column] = values.astype(float)
    frame = pd.DataFrame(numbers, index=table.index, columns=columns)
    frame.loc[list(bad)] = float("nan")
    problems = [
        f"{path} line {line}: {', '.join(cells)}, not a number; row skipped"
        for line, cells in sorted(bad.items())
    ]
    return frame, problems


def read_eval_csv(path: str | pathlib.Path, target: Target) -> tuple[pd.DataFrame, list[str]]:
    """The eval rows of one trial: `eval_index`, `score` and `value` (the validation metric),
    and the rows skipped as unreadable (one line each, naming the file and line).

    Raises:
        ValueError: The file is empty, not UTF-8 CSV, or lacks a time or
            `validation/<metric>` column.
    """
    path = pathlib.Path(path)
    table, problems = read_table(path)
    time_column = next((c for c in TIME_COLUMNS if c in table.columns), None)
    metric_column = f"validation/{target.metric}"
    if time_column is None:
        raise ValueError(
            f"{path}: no 'score' or 'accumulated_submission_time' column; is it an AlgoPerf "
            "eval_measurements.csv?"
        )
    if metric_column not in table.columns:
        raise ValueError(
            f"{path}: no {metric_column!r} column; the targets expect metric {target.metric!r} "
            "for this workload (wrong --targets?)"
        )
    numbers, unreadable = numeric_columns(table, [time_column, metric_column], path)
    frame = pd.DataFrame(
        {
            "eval_index": range(len(numbers)),
            "score": numbers[time_column].to_numpy(float),
            "value": numbers[metric_column].to_numpy(float),
        }
    )
    return frame, problems + unreadable


def _trial_folders(workload_dir: pathlib.Path) -> list[pathlib.Path]:
    return sorted(
        path
        for path in workload_dir.iterdir()
        if path.is_dir() and TRIAL_DIR.match(path.name) and (path / logs.EVAL_FILE).is_file()
    )


def _scan(
    root: pathlib.Path, folders, targets: TargetSet, catalog: WorkloadCatalog
) -> tuple[list[dict], dict[str, str]]:
    """Every readable trial (scored or registered-but-unscored), and the ignored workload
    folders that hold readable trials (path -> workload)."""
    known = set(catalog.names())
    records, ignored = [], {}
    for name, paths in folders.items():
        for submission_dir in paths:
            for study_dir in sorted(p for p in submission_dir.iterdir() if p.is_dir()):
                for workload_dir in sorted(p for p in study_dir.iterdir() if p.is_dir()):
                    match = WORKLOAD_DIR.match(workload_dir.name)
                    if match is None:
                        continue  # stray folder (e.g. loose trial_* dirs)
                    workload = match["workload"]
                    scored = workload in targets.targets
                    trials = _trial_folders(workload_dir)
                    if not scored and trials:
                        ignored[str(workload_dir.relative_to(root))] = workload
                    if not scored and workload not in known:
                        continue
                    for trial_dir in trials:
                        records.append(
                            {
                                "submission": name,
                                "study": study_dir.name,
                                "workload": workload,
                                "framework": match["framework"],
                                "trial": str(trial_dir.relative_to(root)),
                                "path": str(trial_dir / logs.EVAL_FILE),
                                "scored": scored,
                            }
                        )
    return records, ignored


def _check_one_framework(trials: pd.DataFrame) -> None:
    frameworks = trials.groupby(["submission", "workload"])["framework"].nunique()
    both = frameworks[frameworks > 1]
    if len(both):
        submission, workload = both.index[0]
        raise ValueError(
            f"submission {submission!r} has readable {workload!r} trials under both _jax and "
            "_pytorch; keep one framework per workload (as upstream's scorer requires)"
        )


def read_logs(
    directory: str | pathlib.Path, targets: TargetSet, *, catalog: WorkloadCatalog
) -> Logs:
    """Reads every submission under `directory` for the workloads `targets` scores.

    Trials of registered workloads (`catalog`) that `targets` does not score are listed too,
    unscored: --strict counts them.

    Raises:
        FileNotFoundError: `directory` does not exist.
        ValueError: It is empty, no trial of a scored workload is readable (the message lists
            the workloads found), a CSV is not UTF-8 CSV or lacks a needed column, or a
            workload has trials in both frameworks.
    """
    root = pathlib.Path(directory)
    folders = submission_folders(root)
    records, ignored = _scan(root, folders, targets, catalog)
    notes = [
        f"ignored {path}: {workload!r} is not scored by the targets {targets.label}"
        for path, workload in ignored.items()
    ]
    trials = pd.DataFrame.from_records(records, columns=TRIAL_COLUMNS)
    trials["scored"] = trials["scored"].astype(bool)
    scored = trials[trials["scored"]]
    if scored.empty:
        found = sorted(set(ignored.values()))
        hint = f" (found only {', '.join(found)})" if found else ""
        raise ValueError(
            f"no readable trial of a workload scored by the targets {targets.label} under "
            f"{root}{hint}; expected {LAYOUT}, or pass other --targets"
        )
    _check_one_framework(scored)
    frames, unreadable = [], []
    for row in scored.itertuples(index=False):
        rows, problems = read_eval_csv(row.path, targets.target_of(row.workload))
        unreadable += problems
        frames.append(
            rows.assign(
                submission=row.submission, study=row.study, workload=row.workload, trial=row.trial
            )
        )
    evals = pd.concat(frames, ignore_index=True)[EVAL_COLUMNS]
    unscored = sorted(set(folders) - set(scored["submission"]))
    notes += [f"submission {name!r} has no readable scored trial; not scored" for name in unscored]
    return Logs(
        trials=trials.reset_index(drop=True),
        evals=evals,
        notes=tuple(notes),
        unreadable_rows=tuple(unreadable),
    )
