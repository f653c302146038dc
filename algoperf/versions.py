"""Benchmark versions as data: protocol per version (studies, trials, self-tuning factor, hardware).

Per-workload facts per version (budgets, which workloads are base or held-out) live with the
workloads (`workloads/__init__.py` and each `SPEC.budgets`), because this package never names a
workload.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchmarkVersion:
    """The protocol of one benchmark version (docs/rules.md, "Benchmark versions")."""

    name: str
    """`v0.5`, `v0.6` or `v1.0`."""
    num_studies: int
    """Studies per workload (both rulesets)."""
    num_trials: int
    """Trials per study in the external-tuning ruleset (self-tuning: 1)."""
    self_tuning_budget_factor: float
    """Self-tuning budget = this × max_allowed_runtime_sec."""
    hardware: str
    """The scoring hardware the budgets were set for."""
    tf32: bool
    """Whether float32 matmuls run in TF32 on GPUs (v1.0 makes TF32 the default)."""
    max_tau: float = 4.0
    """Upper end of the performance-profile τ range (the 4× cut)."""


VERSIONS: dict[str, BenchmarkVersion] = {
    "v0.5": BenchmarkVersion(
        name="v0.5",
        num_studies=5,
        num_trials=5,
        self_tuning_budget_factor=3.0,
        hardware="8x NVIDIA V100 16GB",
        tf32=False,
    ),
    "v0.6": BenchmarkVersion(
        name="v0.6",
        num_studies=3,
        num_trials=5,
        self_tuning_budget_factor=1.5,
        hardware="8x NVIDIA V100 16GB",
        tf32=False,
    ),
    "v1.0": BenchmarkVersion(
        name="v1.0",
        num_studies=3,
        num_trials=5,
        self_tuning_budget_factor=1.5,
        hardware="4x NVIDIA A100 40GB",
        tf32=True,
    ),
}

DEFAULT_VERSION = "v1.0"


def get_version(name: str) -> BenchmarkVersion:
    """The version called `name` (`v1.0`, also accepted as `1.0`)."""
    key = name if name.startswith("v") else f"v{name}"
    if key not in VERSIONS:
        raise ValueError(
            f"unknown benchmark version {name!r}; choose one of {', '.join(VERSIONS)}."
        )
    return VERSIONS[key]
