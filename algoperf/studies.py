"""`algoperf tune`: studies x trials of one submission on one or more workloads, resumable.

Layout (what `algoperf score` and upstream's scorer read):
  <experiment_dir>/<experiment_name>/study_<k>/<workload>_<framework>/trial_<n>/
Each study draws its own hyperparameter points (`study_index`; upstream repeats the same points
in every study, a bug we don't copy) from its own seed. Rerunning a sweep skips finished trials
and resumes an interrupted one from its last checkpoint.
"""

from __future__ import annotations

import dataclasses

from algoperf import console, rng, versions
from algoperf.config import RunConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepConfig:
    """Which studies and workloads a sweep covers; each trial is run as a RunConfig."""

    workloads: tuple[str, ...] = ()
    """Workloads to tune (default: the run's --workload)."""
    num_studies: int | None = None
    """Studies per workload. Default: the benchmark version's (3 in v0.6/v1.0, 5 in v0.5)."""
    study_start_index: int | None = None
    """Run only studies [start, end) (a cluster can split a sweep)."""
    study_end_index: int | None = None
    """See study_start_index."""

    def studies(self, version: str) -> range:
        total = self.num_studies or versions.get_version(version).num_studies
        if total < 1:
            raise ValueError("--num_studies must be at least 1.")
        start = self.study_start_index or 0
        end = self.study_end_index or total
        if not 0 <= start < end <= total:
            raise ValueError(
                f"--study_start_index/--study_end_index must satisfy 0 <= start < "
                f"end <= num_studies ({total})."
            )
        return range(start, end)


def sweep_configs(base: RunConfig, sweep: SweepConfig) -> list[RunConfig]:
    """One RunConfig per (study, workload), in the order they run."""
    if base.rng_seed is None:
        raise ValueError(
            "algoperf tune needs --rng_seed so that every study and a rerun of the "
            "sweep draw the same points."
        )
    num_trials = base.num_tuning_trials
    if base.tuning_ruleset == "self":
        num_trials = 1
    name = base.resolved_experiment_name
    configs = []
    for study in sweep.studies(base.benchmark_version):
        for workload in sweep.workloads or (base.resolved_workload,):
            configs.append(
                dataclasses.replace(
                    base,
                    workload=workload,
                    experiment_name=f"{name}/study_{study}",
                    study_index=study,
                    num_tuning_trials=num_trials,
                    rng_seed=rng.study_run_seed(base.rng_seed, study, workload),
                    overwrite=False,
                    resume_last_run=True,
                )
            )
    return configs


def tune(base: RunConfig, sweep: SweepConfig) -> int:
    """Run the sweep; returns the number of trials run (finished trials are skipped)."""
    from algoperf.trial import run

    ran = 0
    configs = sweep_configs(base, sweep)
    for index, config in enumerate(configs):
        console.say(
            f"{index + 1}/{len(configs)}: {config.experiment_name} {config.resolved_workload}",
            tag="algoperf tune",
        )
        ran += len(run(config))
    return ran
