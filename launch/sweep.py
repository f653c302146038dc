"""A sweep definition (submission, ruleset, workloads, studies x trials, resources) and its trials.

A sweep is a frozen dataclass, usually loaded from a small TOML (or JSON) file; relative paths in
the file are relative to the file. Its trials are exactly `algoperf tune`'s: the same layout
<experiment_dir>/<name>/study_<k>/<workload>_<framework>/trial_<n>/, the same seed per study and
the same hyperparameter points, so a sweep started with one can be continued with the other.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import tomllib
import typing

from algoperf import logs, versions
from algoperf.config import RunConfig, field_docs
from algoperf.config_args import Parser, add_config_arguments
from algoperf.studies import SweepConfig, sweep_configs

LAUNCH_DIR = "_launch"
"""Bookkeeping folder inside the sweep's folder (the resolved sweep, job ids, submitit files)."""
SWEEP_FILE = "sweep.json"
# `algoperf run` flags the sweep sets itself; run_args must not set them.
CONTROLLED_FLAGS = frozenset(
    {
        "workload", "framework", "submission_path", "tuning_search_space", "tuning_ruleset",
        "num_tuning_trials", "hparam_start_index", "hparam_end_index", "study_index", "data_dir",
        "experiment_dir", "experiment_name", "rng_seed", "overwrite", "resume_last_run",
        "benchmark_version",
    }
)  # fmt: skip
# Fields that decide which trials exist and what they compute; a sweep folder keeps them.
IDENTITY_FIELDS = (
    "name", "submission_path", "tuning_ruleset", "tuning_search_space", "workloads", "framework",
    "num_studies", "num_tuning_trials", "rng_seed", "benchmark_version", "run_args",
)  # fmt: skip


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sweep:
    """One benchmark sweep: workloads x studies x trials of one submission, and where it runs."""

    name: str
    """Experiment name: trials go to <experiment_dir>/<name>/study_<k>/<workload>_<framework>/."""
    rng_seed: int
    """Seed of the sweep; each study derives its own (a rerun draws the same points)."""
    submission_path: str | None = None
    """The submission .py file. Default: the NAdamW reference for the framework."""
    tuning_ruleset: str = "external"
    """`external` or `self`."""
    tuning_search_space: str | None = None
    """Search-space JSON (external). Default: tuning_search_space.json beside the submission."""
    workloads: tuple[str, ...] = ()
    """Workloads or variants to run (default: mnist)."""
    framework: str = "pytorch"
    """`pytorch` (torchrun, one process per GPU) or `jax` (one process drives the node's GPUs)."""
    num_studies: int | None = None
    """Studies per workload. Default: the benchmark version's (3 in v1.0)."""
    num_tuning_trials: int | None = None
    """Trials per study (external ruleset; self-tuning runs 1). Default: the version's (5)."""
    benchmark_version: str = versions.DEFAULT_VERSION
    """v0.5, v0.6 or v1.0."""
    data_dir: str = "~/data"
    """Dataset root, as seen from the compute nodes."""
    experiment_dir: str = "./experiments"
    """Root of the logs; must be on a filesystem every compute node can write."""
    run_args: tuple[str, ...] = ()
    """Extra `algoperf run` flags for every trial, e.g. ["--torch_compile", "false"]."""
    gpus_per_trial: int = 1
    """GPUs of one node per trial (0: CPU only). PyTorch starts one process per GPU."""
    cpus_per_trial: int | None = None
    """CPU cores per trial (Slurm --cpus-per-task). Default: the cluster's default."""
    mem_gb: float | None = None
    """Memory per trial in GB (Slurm --mem). Default: the cluster's default."""
    time_limit_min: int = 240
    """Slurm time limit of one job; a trial that needs longer is checkpointed and requeued."""
    partition: str | None = None
    """Slurm partition. Default: the cluster's default partition."""
    account: str | None = None
    """Slurm account."""
    qos: str | None = None
    """Slurm quality of service."""
    constraint: str | None = None
    """Slurm node constraint (features), e.g. "a100"."""
    max_parallel: int | None = None
    """At most this many trials run at once (Slurm array throttle). Default: no limit."""
    signal_delay_s: int = 120
    """Seconds between Slurm's warning signal and the time limit (time to checkpoint)."""
    max_timeouts: int = 10
    """How many times one job may hit its time limit and be requeued."""
    setup: tuple[str, ...] = ()
    """Shell lines run in each job before the trial (e.g. "module load cuda")."""

    def __post_init__(self):
        if not self.name or "/" in self.name or self.name in (".", "..", LAUNCH_DIR):
            raise ValueError(f"name {self.name!r}: give a plain folder name (no '/').")
        checks = {
            "gpus_per_trial": (self.gpus_per_trial, 0),
            "time_limit_min": (self.time_limit_min, 1),
            "signal_delay_s": (self.signal_delay_s, 0),
            "max_timeouts": (self.max_timeouts, 0),
            "num_studies": (self.num_studies, 1),
            "num_tuning_trials": (self.num_tuning_trials, 1),
            "cpus_per_trial": (self.cpus_per_trial, 1),
            "max_parallel": (self.max_parallel, 1),
            "rng_seed": (self.rng_seed, 0),
        }
        for key, (value, least) in checks.items():
            if value is not None and value < least:
                raise ValueError(f"{key} must be at least {least}, not {value}.")
        if self.mem_gb is not None and self.mem_gb <= 0:
            raise ValueError(f"mem_gb must be positive, not {self.mem_gb}.")
        from algoperf import workloads

        unknown = [name for name in self.workloads if name not in workloads.names()]
        if unknown:
            raise ValueError(f"unknown workload(s) {unknown}; `algoperf list` shows them all.")
        self.run_fields()  # checks run_args
        self.base_config()  # checks framework, ruleset, submission, version

    @property
    def sweep_dir(self) -> pathlib.Path:
        return pathlib.Path(self.experiment_dir).expanduser().resolve() / self.name

    @property
    def launch_dir(self) -> pathlib.Path:
        return self.sweep_dir / LAUNCH_DIR

    @property
    def processes_per_trial(self) -> int:
        """torchrun processes of a PyTorch trial (one per GPU; one on CPU); JAX: one."""
        return max(1, self.gpus_per_trial) if self.framework == "pytorch" else 1

    def run_fields(self) -> dict[str, typing.Any]:
        """The RunConfig fields that run_args set.

        Raises:
          ValueError: an unknown flag, a bad value, or a flag the sweep sets itself.
        """
        parser = Parser(add_help=False, exit_on_error=False)
        add_config_arguments(parser)
        try:
            parsed, unknown = parser.parse_known_args(list(self.run_args))
        except argparse.ArgumentError as error:
            raise ValueError(f"run_args: {error}") from None
        if unknown:
            raise ValueError(f"run_args: unknown `algoperf run` flag(s) {unknown}.")
        values = vars(parsed)
        controlled = sorted(set(values) & CONTROLLED_FLAGS)
        if controlled:
            raise ValueError(
                f"run_args sets {controlled}: set these as keys of the sweep file instead."
            )
        return values

    def base_config(self) -> RunConfig:
        """The RunConfig every trial starts from (study, seed, trial index are set per trial)."""
        version = versions.get_version(self.benchmark_version)
        return RunConfig(
            submission_path=self.submission_path,
            tuning_search_space=self.tuning_search_space,
            tuning_ruleset=self.tuning_ruleset,
            framework=self.framework,
            num_tuning_trials=self.num_tuning_trials or version.num_trials,
            data_dir=self.data_dir,
            experiment_dir=str(pathlib.Path(self.experiment_dir).expanduser().resolve()),
            experiment_name=self.name,
            rng_seed=self.rng_seed,
            benchmark_version=self.benchmark_version,
            **self.run_fields(),
        )

    def trials(self) -> list[Trial]:
        """Every trial of the sweep, in `algoperf tune`'s order."""
        base = self.base_config()
        sweep = SweepConfig(workloads=self.workloads, num_studies=self.num_studies)
        trials = []
        for config in sweep_configs(base, sweep):
            folder = logs.workload_dir(
                config.experiment_dir,
                config.resolved_experiment_name,
                config.resolved_workload,
                config.framework,
            )
            for index in config.trial_indices:
                one = dataclasses.replace(
                    config, hparam_start_index=index, hparam_end_index=index + 1
                )
                trial_dir = folder / f"trial_{index + 1}"
                trials.append(
                    Trial(
                        key=str(trial_dir.relative_to(self.sweep_dir)),
                        trial_dir=trial_dir,
                        run_args=tuple(config_to_args(one)),
                    )
                )
        return trials

    def to_dict(self) -> dict[str, typing.Any]:
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }

    def differences(self, other: Sweep) -> list[str]:
        """The trial-defining fields in which two sweeps differ, as `field: a -> b`."""
        return [
            f"{key}: {getattr(other, key)!r} -> {getattr(self, key)!r}"
            for key in IDENTITY_FIELDS
            if getattr(self, key) != getattr(other, key)
        ]


@dataclasses.dataclass(frozen=True)
class Trial:
    """One trial: where it logs, and the `algoperf run` flags that run (or resume) it."""

    key: str
    """study_<k>/<workload>_<framework>/trial_<n> (its folder, relative to the sweep's)."""
    trial_dir: pathlib.Path
    run_args: tuple[str, ...]


def config_to_args(config: RunConfig) -> list[str]:
    """`algoperf run` flags that rebuild `config` (fields left at their default are omitted)."""
    args = []
    for field in dataclasses.fields(RunConfig):
        value = getattr(config, field.name)
        if value == field.default and field.name != "resume_last_run":
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        args += [f"--{field.name}", str(value)]
    return args


PATH_KEYS = ("submission_path", "tuning_search_space", "data_dir", "experiment_dir")


def from_dict(values: dict[str, typing.Any], base_dir: pathlib.Path, where: str) -> Sweep:
    """A Sweep from plain values (a parsed file); relative paths are taken from `base_dir`.

    Raises:
      ValueError: an unknown or missing key, a value of the wrong type, or an invalid setting;
        the message starts with `where`.
    """
    fields = {field.name: field for field in dataclasses.fields(Sweep)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(fields)}.")
    missing = sorted(
        name
        for name, field in fields.items()
        if field.default is dataclasses.MISSING and name not in values
    )
    if missing:
        docs = field_docs(Sweep)
        raise ValueError(f"{where}: missing {missing[0]!r} ({docs.get(missing[0], '')}).")
    converted = {}
    for name, value in values.items():
        try:
            value = _check_type(value, str(fields[name].type))
        except TypeError as error:
            raise ValueError(f"{where}: {name}: {error}") from None
        if name in PATH_KEYS and value is not None:
            path = pathlib.Path(value).expanduser()
            value = str(path if path.is_absolute() else (base_dir / path).resolve())
        converted[name] = value
    try:
        return Sweep(**converted)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def _check_type(value: typing.Any, annotation: str) -> typing.Any:
    optional = annotation.endswith("| None")
    kind = annotation.removesuffix("| None").strip()
    if value is None and optional:
        return None
    if kind == "tuple[str, ...]":
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise TypeError(f"expected a list of strings, got {value!r}")
        if not all(isinstance(item, str) for item in value):
            raise TypeError(f"expected a list of strings, got {value!r}")
        return tuple(value)
    expected = {"str": str, "int": int, "float": int | float, "bool": bool}[kind]
    if isinstance(value, bool) and kind != "bool" or not isinstance(value, expected):
        raise TypeError(f"expected {kind}, got {value!r}")
    return value


def load_sweep(path: str | pathlib.Path) -> Sweep:
    """Read a sweep from a .toml or .json file.

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file does not parse or does not describe a valid sweep.
    """
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"sweep file {path}: no such file.")
    try:
        if path.suffix == ".toml":
            values = tomllib.loads(path.read_text())
        elif path.suffix == ".json":
            values = json.loads(path.read_text())
        else:
            raise ValueError(f"sweep file {path}: use a .toml or .json file.")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"sweep file {path} does not parse: {error}") from None
    if not isinstance(values, dict):
        raise ValueError(f"sweep file {path}: expected a table of keys at the top level.")
    return from_dict(values, path.resolve().parent, f"sweep file {path}")


def saved_sweep(sweep_dir: pathlib.Path) -> Sweep | None:
    """The sweep a folder was launched with (its _launch/sweep.json), if any."""
    path = pathlib.Path(sweep_dir) / LAUNCH_DIR / SWEEP_FILE
    if not path.is_file():
        return None
    return from_dict(json.loads(path.read_text()), path.parent, str(path))


def resolve(target: str | pathlib.Path) -> Sweep:
    """A sweep from a sweep file or from a launched sweep's folder.

    Raises:
      FileNotFoundError: neither a sweep file nor a folder launched by `algoperf launch`.
    """
    path = pathlib.Path(target).expanduser()
    if path.is_dir():
        sweep = saved_sweep(path)
        if sweep is None:
            raise FileNotFoundError(
                f"{path} was not launched with `algoperf launch` (no {LAUNCH_DIR}/{SWEEP_FILE}); "
                "give the sweep folder <experiment_dir>/<name> or the sweep file."
            )
        return sweep
    return load_sweep(path)


def record_sweep(sweep: Sweep, *, write: bool = True) -> None:
    """Keep the sweep in its folder (`write`); refuse a folder launched with different trials.

    Raises:
      ValueError: the folder holds a sweep whose trials differ from this one's.
    """
    previous = saved_sweep(sweep.sweep_dir)
    if previous is not None:
        changed = sweep.differences(previous)
        if changed:
            raise ValueError(
                f"{sweep.sweep_dir} was launched with a different sweep ({'; '.join(changed)}); "
                "use another name or experiment_dir, or restore the old settings."
            )
    if write:
        logs.write_json(sweep.launch_dir / SWEEP_FILE, sweep.to_dict())
