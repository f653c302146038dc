"""A workload's facts as frozen data: targets, budgets per benchmark version, sizes, compile policy.

A variant is an override of its base's spec (`Variant`), not a subclass. Nothing here imports a
model framework.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from algoperf.spec import LossType

MAXIMIZED_METRICS = frozenset({"mean_average_precision", "ssim", "accuracy", "bleu"})
MINIMIZED_METRICS = frozenset(
    {"loss", "error_rate", "ctc_loss", "wer", "l1_loss", "ce_loss", "ppl"}
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Budget:
    """The time budget of one workload in one benchmark version (external-tuning ruleset)."""

    max_allowed_runtime_sec: float
    """Seconds of submission time before the trial stops (self-tuning multiplies it)."""
    eval_period_time_sec: float
    """Wall-clock seconds between the end of one eval and the next eligible point."""
    step_hint: int
    """Roughly how many steps the baseline fits in the budget; a hint for schedules only."""

    def __post_init__(self):
        if self.max_allowed_runtime_sec <= 0 or self.eval_period_time_sec <= 0:
            raise ValueError("Budget: runtime and eval period must be positive seconds.")
        if self.step_hint <= 0:
            raise ValueError("Budget: step_hint must be a positive number of steps.")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Variant:
    """A variant overrides only model flags and targets (and rarely the eval batch size)."""

    model_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Keyword arguments passed to the model constructor, on top of the base's."""
    validation_target: float
    """The variant's own validation target."""
    test_target: float | None
    """The variant's own test target (None: the workload has no test split)."""
    eval_batch_size: int | None = None
    """Only where upstream changes it (deepspeech_norm_and_spec_aug: 128)."""
    description: str = ""
    """One line: what the variant changes."""
    num_params: Mapping[str, tuple[int, int]] | None = None
    """The variant's own parameter counts where its model differs in size (None: the base's);
    see `WorkloadSpec.num_params`."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkloadSpec:
    """Everything the runner and the scorer need to know about a workload, as data."""

    name: str
    """Registry name, exactly as upstream spells it (e.g. `imagenet_resnet_silu`)."""
    base: str
    """The base workload's name (equal to `name` for a base workload)."""
    dataset: str
    """The folder under `workloads/` whose `input_pipeline.py` feeds this workload: its own
    (`mnist`) or one that several workloads share (`imagenet`: imagenet_resnet and
    imagenet_vit). The registry finds the pipeline through it (docs/data.md)."""
    target_metric_name: str
    """Metric compared with the targets; eval dicts use `validation/<name>`."""
    validation_target: float
    test_target: float | None
    """None when the workload has no test split (its test goal then counts as reached)."""
    loss_type: LossType
    num_train_examples: int
    num_eval_train_examples: int
    num_validation_examples: int
    num_test_examples: int | None
    eval_batch_size: int
    """Global eval batch size."""
    budgets: Mapping[str, Budget]
    """Per benchmark version (`v0.5`, `v0.6`, `v1.0`); a version missing here does not include
    the workload."""
    default_dropout_rate: float | None = None
    """Dropout applied when the submission passes none (None: the model has no dropout)."""
    compile_model: bool = True
    """Whether `--torch_compile` compiles the model (upstream skips some workloads)."""
    compile_loss: bool = False
    """Whether `loss_fn` is compiled too."""
    model_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Keyword arguments for the model constructor (variants add to these)."""
    eval_batch_size_jax: int | None = None
    """Only where upstream's JAX eval batch differs (criteo1tb)."""
    train_mean: Any = None
    train_stddev: Any = None
    requires_sync_before_eval: bool = False
    """Average model state across ranks before each eval (per-rank BN statistics)."""
    tokens_per_example: int | None = None
    """A sequence workload's tokens per example: the sequence positions the model computes on,
    padding included (counting real tokens would read every batch on the host). Throughput is
    then also reported in tokens/s; None for a workload that is not a sequence workload."""
    num_params: Mapping[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    """Trainable parameters of the full-size model per framework: framework -> (elements,
    tensors), as upstream's models have them (where upstream's frameworks differ, ours differ
    the same way: docs/workloads.md). tests/test_workload_registry.py checks every model against
    these; empty for a workload with no model yet."""
    description: str = ""
    variants: tuple[str, ...] = ()
    """Names of the registered variants of this base (filled by the registry)."""

    def __post_init__(self):
        if self.target_metric_name not in MAXIMIZED_METRICS | MINIMIZED_METRICS:
            raise ValueError(
                f"WorkloadSpec {self.name}: unknown metric {self.target_metric_name!r}; add it to "
                "MAXIMIZED_METRICS or MINIMIZED_METRICS in algoperf/workload_spec.py."
            )
        if self.eval_batch_size <= 0 or self.num_train_examples <= 0:
            raise ValueError(f"WorkloadSpec {self.name}: sizes must be positive.")
        if self.tokens_per_example is not None and self.tokens_per_example <= 0:
            raise ValueError(f"WorkloadSpec {self.name}: tokens_per_example must be positive.")
        object.__setattr__(self, "budgets", MappingProxyType(dict(self.budgets)))
        object.__setattr__(self, "model_kwargs", MappingProxyType(dict(self.model_kwargs)))
        for framework, counts in self.num_params.items():
            if len(counts) != 2 or not all(isinstance(n, int) and n > 0 for n in counts):
                raise ValueError(
                    f"WorkloadSpec {self.name}: num_params[{framework!r}] must be (elements, "
                    f"tensors), two positive integers; got {counts!r}."
                )
        object.__setattr__(self, "num_params", MappingProxyType(dict(self.num_params)))

    @property
    def higher_is_better(self) -> bool:
        return self.target_metric_name in MAXIMIZED_METRICS

    def budget(self, benchmark_version: str) -> Budget:
        """The budget of this workload in a benchmark version; clear error if it is not part."""
        try:
            return self.budgets[benchmark_version]
        except KeyError:
            versions = ", ".join(sorted(self.budgets)) or "none"
            raise ValueError(
                f"workload {self.name} is not part of benchmark {benchmark_version}; it has "
                f"budgets for: {versions}. Pass --benchmark_version with one of these."
            ) from None

    def with_variant(self, name: str, variant: Variant) -> WorkloadSpec:
        """The spec of a variant: the base's facts with the variant's overrides."""
        return dataclasses.replace(
            self,
            name=name,
            model_kwargs={**self.model_kwargs, **variant.model_kwargs},
            validation_target=variant.validation_target,
            test_target=variant.test_target,
            eval_batch_size=variant.eval_batch_size or self.eval_batch_size,
            description=variant.description or self.description,
            num_params=self.num_params if variant.num_params is None else variant.num_params,
            variants=(),
        )
