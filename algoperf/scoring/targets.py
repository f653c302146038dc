"""What each scored workload must reach, as data: from the registry per version, or a JSON file.

A `TargetSet` says which workloads are scored (base and held-out; docs/rules.md, "Scoring"),
each one's validation metric, target and direction, and each held-out variant's base. Nothing
here names a workload; every fact comes from a `WorkloadCatalog` (the command layer builds it
from the registry) or the user's file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from algoperf import versions
from algoperf.scoring.catalog import WorkloadCatalog
from algoperf.workload_spec import MAXIMIZED_METRICS, MINIMIZED_METRICS, WorkloadSpec

FILE_FORMAT_HELP = """\
A targets FILE is JSON in one of two forms.
  Upstream (scoring/workload_targets.json):
    {"benchmark_version": "0.6", "base_workloads": [...], "held_out_workloads": [...],
     "workloads": {"<name>": {"target_metric_name": "loss", "target_metric_goal": "minimize",
                              "validation_target_value": 0.1237, "max_allowed_runtime_sec": 7703}}}
    Entries listed in neither list are ignored.
  Short: {"<name>": {"metric": "loss", "target": 0.1237}, ...}: every entry is a base workload.
Per entry, the direction comes from "higher_is_better" (bool), else "goal"/"target_metric_goal"
("maximize"/"minimize"), else the metric's known direction. A held-out entry may give "base";
otherwise the registry's base of that name is used."""


class Target(NamedTuple):
    """The validation goal of one workload."""

    metric: str
    """Metric name; the log column is `validation/<metric>`."""
    target: float
    """Validation target value."""
    higher_is_better: bool
    """True: reached when value >= target; False: when value <= target (docs/rules.md,
    "Scoring")."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TargetSet:
    """The scored workloads of one scoring run and their targets."""

    label: str
    """`v0.6`, or the path of the targets file (for messages)."""
    version: str | None
    """Benchmark version (`v0.5`, ...) when known; None for a file that names none."""
    targets: Mapping[str, Target]
    """Every scored workload (base and held-out) -> its target."""
    base_workloads: tuple[str, ...]
    """The base workloads; their number is the fixed n of the performance profile."""
    held_out: Mapping[str, str]
    """Held-out variant -> its base workload (v0.5 only in the registry)."""
    budgets: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """Workload -> max_allowed_runtime_sec of this version, where known (used by speedups)."""

    def __post_init__(self):
        for name in (*self.base_workloads, *self.held_out):
            if name not in self.targets:
                raise ValueError(f"targets {self.label}: no target for scored workload {name!r}")
        for variant, base in self.held_out.items():
            if base not in self.base_workloads:
                raise ValueError(
                    f"targets {self.label}: held-out {variant!r} has base {base!r}, "
                    "which is not a base workload of this target set"
                )
        object.__setattr__(self, "targets", MappingProxyType(dict(self.targets)))
        object.__setattr__(self, "held_out", MappingProxyType(dict(self.held_out)))
        object.__setattr__(self, "budgets", MappingProxyType(dict(self.budgets)))

    @property
    def scored_workloads(self) -> tuple[str, ...]:
        """Base workloads, then held-out variants."""
        return (*self.base_workloads, *self.held_out)

    def target_of(self, workload: str) -> Target:
        """The target of a scored workload.

        Raises:
            ValueError: The workload is not scored by this target set.
        """
        if workload not in self.targets:
            raise ValueError(
                f"workload {workload!r} is unknown to the targets {self.label} (they score: "
                f"{', '.join(self.scored_workloads)}); pass another --targets version or file"
            )
        return self.targets[workload]


def spec_target(spec: WorkloadSpec) -> Target:
    """The validation goal a workload's spec declares."""
    return Target(spec.target_metric_name, float(spec.validation_target), spec.higher_is_better)


def targets_for(version: str, *, catalog: WorkloadCatalog) -> dict[str, Target]:
    """The catalog's targets of one benchmark version: base and held-out workloads.

    Args:
        version: `v0.5`, `v0.6` or `v1.0` (`0.6` also works).
        catalog: The registered workloads (the command layer builds it from the registry).

    Returns:
        Workload name -> `Target(metric, target, higher_is_better)`.
    """
    return dict(target_set_for(version, catalog=catalog).targets)


def target_set_for(version: str, *, catalog: WorkloadCatalog) -> TargetSet:
    """The full `TargetSet` of a benchmark version, from the catalog (docs/rules.md, "Benchmark
    versions")."""
    name = versions.get_version(version).name
    if name not in catalog.scored:
        raise ValueError(f"the workload catalog lists no scored workloads for {name}")
    base = tuple(catalog.scored[name])
    held_out = {variant: catalog.base_name(variant) for variant in catalog.held_out.get(name, ())}
    names = (*base, *held_out)
    budgets = {
        workload: float(catalog.spec(workload).budget(name).max_allowed_runtime_sec)
        for workload in names
    }
    return TargetSet(
        label=name,
        version=name,
        targets={workload: spec_target(catalog.spec(workload)) for workload in names},
        base_workloads=base,
        held_out=held_out,
        budgets=budgets,
    )


def load_targets(version_or_path: str | os.PathLike, *, catalog: WorkloadCatalog) -> TargetSet:
    """A benchmark version name (`v0.5`, `v0.6`, `v1.0`) or a targets JSON file (FILE_FORMAT_HELP).

    `catalog` gives a version's targets, and a file's missing budgets and held-out bases.

    Raises:
        FileNotFoundError: Neither a version nor an existing file.
        ValueError: The file is not valid JSON or an entry is malformed.
    """
    text = os.fspath(version_or_path)
    if not os.path.exists(text):
        try:
            return target_set_for(text, catalog=catalog)
        except ValueError:
            raise FileNotFoundError(
                f"--targets {text!r} is neither a benchmark version "
                f"({', '.join(versions.VERSIONS)}) nor an existing targets JSON file"
            ) from None
    try:
        with open(text) as handle:
            content = json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"targets file {text!r} is not valid JSON: {error}") from error
    return parse_targets(content, catalog=catalog, label=text)


def parse_targets(content: Any, *, catalog: WorkloadCatalog, label: str = "<dict>") -> TargetSet:
    """Builds a `TargetSet` from the parsed content of a targets file (FILE_FORMAT_HELP).

    An entry without a budget or (held-out) base takes the catalog's, where it names a
    registered workload.

    Raises:
        ValueError: The content is malformed; the message names the entry.
    """
    if not isinstance(content, Mapping):
        raise ValueError(f"targets file {label}: expected a JSON object. {FILE_FORMAT_HELP}")
    version = _file_version(content.get("benchmark_version"))
    if isinstance(content.get("workloads"), Mapping):
        entries = content["workloads"]
        base = tuple(content.get("base_workloads", tuple(entries)))
        held_out_names = tuple(content.get("held_out_workloads", ()))
    else:
        entries = {
            key: value
            for key, value in content.items()
            if not key.startswith("_") and key != "benchmark_version"
        }
        base = tuple(entries)
        held_out_names = ()
    if not base:
        raise ValueError(f"targets file {label}: no workloads. {FILE_FORMAT_HELP}")
    targets, budgets, held_out = {}, {}, {}
    for name in (*base, *held_out_names):
        if name not in entries:
            raise ValueError(f"targets file {label}: {name!r} is listed but has no entry")
        entry = entries[name]
        targets[name] = _parse_entry(name, entry, label)
        budget = _entry_budget(name, entry, version, catalog)
        if budget is not None:
            budgets[name] = budget
    for name in held_out_names:
        held_out[name] = _entry_base(name, entries[name], label, catalog)
    return TargetSet(
        label=label,
        version=version,
        targets=targets,
        base_workloads=base,
        held_out=held_out,
        budgets=budgets,
    )


def _file_version(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return versions.get_version(str(value)).name
    except ValueError:
        return None


def _parse_entry(name: str, entry: Any, label: str) -> Target:
    where = f"targets file {label}, workload {name!r}"
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: expected an object with metric and target")
    metric = entry.get("metric", entry.get("target_metric_name"))
    target = entry.get("target", entry.get("validation_target_value"))
    if not isinstance(metric, str) or not metric:
        raise ValueError(f"{where}: give the metric as 'metric' or 'target_metric_name'")
    if isinstance(target, bool) or not isinstance(target, int | float) or not math.isfinite(target):
        raise ValueError(f"{where}: give a finite number as 'target' or 'validation_target_value'")
    return Target(metric, float(target), _direction(metric, entry, where))


def _direction(metric: str, entry: Mapping, where: str) -> bool:
    if isinstance(entry.get("higher_is_better"), bool):
        return entry["higher_is_better"]
    goal = entry.get("goal", entry.get("target_metric_goal"))
    if goal is not None:
        if goal not in ("maximize", "minimize"):
            raise ValueError(f"{where}: goal must be 'maximize' or 'minimize', got {goal!r}")
        return goal == "maximize"
    if metric in MAXIMIZED_METRICS:
        return True
    if metric in MINIMIZED_METRICS:
        return False
    raise ValueError(
        f'{where}: unknown direction of metric {metric!r}; add "goal": "maximize" or "minimize"'
    )


def _entry_budget(
    name: str, entry: Mapping, version: str | None, catalog: WorkloadCatalog
) -> float | None:
    if isinstance(entry.get("max_allowed_runtime_sec"), int | float):
        return float(entry["max_allowed_runtime_sec"])
    if version is None or name not in catalog.specs:
        return None
    budget = catalog.spec(name).budgets.get(version)
    return None if budget is None else float(budget.max_allowed_runtime_sec)


def _entry_base(name: str, entry: Mapping, label: str, catalog: WorkloadCatalog) -> str:
    if isinstance(entry.get("base"), str):
        return entry["base"]
    if name in catalog.specs:
        return catalog.base_name(name)
    raise ValueError(
        f"targets file {label}: held-out {name!r} is not a registered variant; "
        'give its base workload as "base"'
    )


def reached(values, target: Target):
    """Whether each value meets the target: `>=` when maximised, `<=` when minimised.

    NaN never meets it (docs/rules.md, "Scoring"). Works on floats and numpy/pandas arrays.
    """
    return values >= target.target if target.higher_is_better else values <= target.target
