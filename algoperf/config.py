"""The configuration of one `algoperf run`: a frozen, validated dataclass; the CLI is built from it.

Flag names are upstream's (`--submission_path`, `--tuning_ruleset`, ...) so users' scripts carry
over; the CLI also accepts the dashed spellings.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
import inspect
import os
import pathlib

from algoperf import versions

PACKAGE_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_SUBMISSION = "nadamw"
_SUBMISSION_FILES = {"pytorch": "submission_torch.py", "jax": "submission_jax.py"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Settings of one run: one workload, one submission, one or more tuning trials."""

    workload: str | None = None
    """Workload or variant name (see `algoperf list`). Default: the registry's default (mnist)."""
    framework: str = "pytorch"
    """`pytorch` or `jax`."""
    submission_path: str | None = None
    """Path to the submission .py file. Default: the NAdamW reference for the framework."""
    tuning_search_space: str | None = None
    """Search-space JSON (external ruleset). Default: tuning_search_space.json beside the
    submission."""
    tuning_ruleset: str = "external"
    """`external` (hyperparameters from the search space) or `self` (none; 1.5x budget)."""
    num_tuning_trials: int = 1
    """Hyperparameter points to draw and run, one trial each (external ruleset)."""
    hparam_start_index: int | None = None
    """Run only trials [start, end) of the drawn points (their directories keep the global
    index)."""
    hparam_end_index: int | None = None
    """See hparam_start_index."""
    study_index: int = 0
    """Which study these trials belong to; studies draw different points."""
    data_dir: str = "~/data"
    """Dataset root; a workload looks in its own sub-folder (e.g. ~/data/mnist) or here."""
    imagenet_v2_data_dir: str | None = None
    """ImageNet-v2 folder (test split of the ImageNet workloads)."""
    experiment_dir: str = "./experiments"
    """Root of the logs; trials go to <experiment_dir>/<experiment_name>/<workload>_<framework>/."""
    experiment_name: str | None = None
    """Sub-folder of experiment_dir. Default: the submission's folder name and the ruleset."""
    rng_seed: int | None = None
    """Seed of the run; each trial derives its own. Default: drawn from os.urandom and logged."""
    max_global_steps: int | None = None
    """Stop (with a final eval) after this many steps."""
    torch_compile: bool | None = None
    """Compile the model with torch.compile where the workload's compile policy allows it.
    Default: on for CUDA devices, off on CPUs, where the compiled step measured slower than
    eager (docs/workloads.md, "Compile policy"); the run prints its choice."""
    overwrite: bool = False
    """Delete an existing <workload>_<framework> log folder of this experiment first."""
    resume_last_run: bool = False
    """Reuse an existing log folder (continue its trials)."""
    save_checkpoints: bool = True
    """Checkpoint at every eval, at the end, and on SIGTERM/SIGUSR1 (for --resume_last_run)."""
    eval_every_steps: int | None = None
    """Testing only: eval every N steps instead of every eval period of wall time. This breaks
    the timing rules; logs made with it are not comparable."""
    workload_options: str = ""
    """Testing only: comma-separated KEY=VALUE settings for the workload's constructor, e.g.
    image_size=32,num_workers=0 (ImageNet) or model_kwargs={'stage_sizes':[1,1,1,1]} (any
    workload: overrides of its model's arguments); logs made with them are not comparable."""
    benchmark_version: str = versions.DEFAULT_VERSION
    """Benchmark version whose budgets and eval periods apply: v0.5, v0.6 or v1.0."""
    download: bool = True
    """Let development workloads (mnist, cifar) download their data when it is missing."""
    deterministic: bool = False
    """Deterministic kernels and single-threaded reductions (slower; for reproducibility
    checks)."""
    progress: bool = True
    """Show a progress line (step, submission time, budget left, throughput, memory, last
    eval)."""
    tensorboard: bool = True
    """Write TensorBoard event files into each trial folder (eval metrics, the submission's
    logged scalars, step time, throughput, memory, MFU); `--tensorboard false` turns them off."""
    use_wandb: bool = False
    """Also log those scalars to Weights & Biases (needs `pip install algoperf[wandb]`;
    WANDB_MODE=offline keeps the run on disk)."""

    def __post_init__(self):
        if self.framework not in _SUBMISSION_FILES:
            raise ValueError(f"--framework must be pytorch or jax, not {self.framework!r}.")
        if self.tuning_ruleset not in ("external", "self"):
            raise ValueError(
                f"--tuning_ruleset must be external or self, not {self.tuning_ruleset!r}."
            )
        if self.tuning_ruleset == "self" and self.tuning_search_space is not None:
            raise ValueError(
                "the self-tuning ruleset takes no search space; drop --tuning_search_space."
            )
        if self.num_tuning_trials < 1:
            raise ValueError("--num_tuning_trials must be at least 1.")
        if self.max_global_steps is not None and self.max_global_steps < 1:
            raise ValueError("--max_global_steps must be a positive number of steps.")
        if self.eval_every_steps is not None and self.eval_every_steps < 1:
            raise ValueError("--eval_every_steps must be a positive number of steps.")
        if self.overwrite and self.resume_last_run:
            raise ValueError("choose one of --overwrite and --resume_last_run, not both.")
        if self.rng_seed is not None and self.rng_seed < 0:
            raise ValueError("--rng_seed must be a non-negative integer.")
        start, end = self.hparam_start_index, self.hparam_end_index
        if start is not None and not 0 <= start < self.num_tuning_trials:
            raise ValueError("--hparam_start_index must lie in [0, num_tuning_trials).")
        if end is not None and not (start or 0) < end <= self.num_tuning_trials:
            raise ValueError("--hparam_end_index must lie in (start, num_tuning_trials].")
        versions.get_version(self.benchmark_version)
        if self.use_wandb and importlib.util.find_spec("wandb") is None:
            raise ValueError("--use_wandb needs the wandb package: pip install algoperf[wandb]")
        self.workload_option_values  # noqa: B018 (raises on a malformed --workload_options)
        if self.submission_path is not None and not os.path.isfile(self.submission_path):
            raise ValueError(f"--submission_path {self.submission_path}: no such file.")

    @property
    def resolved_workload(self) -> str:
        if self.workload is not None:
            return self.workload
        from algoperf import (
            workloads,  # the registry lookup by name (the one dependency on workloads/)
        )

        return workloads.DEFAULT_WORKLOAD

    @property
    def workload_option_values(self) -> dict[str, object]:
        """--workload_options as keyword arguments (values parsed as Python literals where they
        are one: numbers, booleans, lists, dicts; other text stays a string)."""
        values: dict[str, object] = {}
        for item in _split_top_level(self.workload_options):
            key, equals, text = (part.strip() for part in item.partition("="))
            if not equals or not key.isidentifier():
                raise ValueError(
                    f"--workload_options: {item!r} is not KEY=VALUE (e.g. image_size=32)."
                )
            try:
                values[key] = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                values[key] = text
        return values

    @property
    def resolved_submission_path(self) -> pathlib.Path:
        if self.submission_path is not None:
            return pathlib.Path(self.submission_path).resolve()
        folder = DEFAULT_SUBMISSION + ("_self_tuning" if self.tuning_ruleset == "self" else "")
        return PACKAGE_ROOT / "submissions" / folder / _SUBMISSION_FILES[self.framework]

    @property
    def resolved_search_space(self) -> pathlib.Path | None:
        if self.tuning_ruleset == "self":
            return None
        if self.tuning_search_space is not None:
            return pathlib.Path(self.tuning_search_space)
        beside = self.resolved_submission_path.parent / "tuning_search_space.json"
        if not beside.exists():
            raise ValueError(
                f"external tuning needs a search space: pass --tuning_search_space, or put "
                f"tuning_search_space.json beside {self.resolved_submission_path}."
            )
        return beside

    @property
    def resolved_experiment_name(self) -> str:
        if self.experiment_name:
            return self.experiment_name
        return f"{self.resolved_submission_path.parent.name}_{self.tuning_ruleset}"

    @property
    def trial_indices(self) -> range:
        """The 0-based trials to run: [hparam_start_index, hparam_end_index) of
        num_tuning_trials, cut at the last point of a list-form search space (it holds no more
        trials; `search_space.sample_points` warns about the cut)."""
        start = self.hparam_start_index or 0
        end = min(self.hparam_end_index or self.num_tuning_trials, self.num_trials)
        if start >= end:
            raise ValueError(
                f"--hparam_start_index {start} is past the last of the {self.num_trials} points "
                "of the list-form search space; pick a smaller index."
            )
        return range(start, end)

    @property
    def num_trials(self) -> int:
        """num_tuning_trials, or the number of points of a list-form search space if fewer."""
        if self.tuning_ruleset == "self":
            return self.num_tuning_trials
        from algoperf import search_space  # numpy: loaded only when trials are planned

        space = search_space.load_search_space(self.resolved_search_space)
        if space.is_list_form:
            return min(self.num_tuning_trials, len(space.points))
        return self.num_tuning_trials


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets: `a=1,b=[1,2]` -> [`a=1`, `b=[1,2]`]."""
    parts, depth, current = [], 0, []
    for char in text:
        depth += (char in "([{") - (char in ")]}")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


@functools.cache
def field_docs(cls=RunConfig) -> dict[str, str]:
    """The docstring under each field of a dataclass (read from its source with ast)."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for node, following in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs
