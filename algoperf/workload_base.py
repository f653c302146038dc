"""The framework-free half of every Workload: constants from the spec, targets, the eval driver.

`algoperf.torch.workload.TorchWorkload` and `algoperf.jax.workload.JaxWorkload` add the model and
data plumbing of their framework on top of this class; workloads add their model.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from algoperf import spec, versions
from algoperf.data import arrays
from algoperf.workload_spec import WorkloadSpec

EVAL_SPLITS = (("eval_train", "train"), ("validation", "validation"), ("test", "test"))


class SpecWorkload(spec.Workload):
    """A `spec.Workload` whose constants come from a `WorkloadSpec` and a benchmark version."""

    framework: str = ""

    def __init__(
        self,
        workload_spec: WorkloadSpec,
        *,
        benchmark_version: str = versions.DEFAULT_VERSION,
        allow_download: bool = False,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """`model_kwargs` (testing only, e.g. a shallower model in a quick end-to-end run)
        overrides the spec's model arguments."""
        super().__init__()
        if model_kwargs:
            merged = {**workload_spec.model_kwargs, **model_kwargs}
            workload_spec = dataclasses.replace(workload_spec, model_kwargs=merged)
        self.spec = workload_spec
        self.benchmark_version = versions.get_version(benchmark_version).name
        self._budget = workload_spec.budget(self.benchmark_version)
        self.allow_download = allow_download
        # Seed of the fixed eval_train subset; set from data_rng when the train queue is built.
        self._eval_train_seed = 0
        self._splits = None

    # --- data ------------------------------------------------------------------------------
    input_pipeline: Any = None
    """The workload's input_pipeline module: `load_splits(data_dir, layout=, allow_download=)`
    and `batches(splits, split, global_batch_size, seed=, shard=, num_eval_train_examples=,
    start_step=)`."""
    data_layout: str = "NCHW"
    """Image layout the model wants (`NCHW` in torch, `NHWC` in JAX)."""

    def numpy_batches(
        self,
        split: str,
        data_dir: str,
        global_batch_size: int,
        seed: int,
        shard,
        start_step: int = 0,
    ):
        """This rank's numpy batches: infinite for `train` (from batch `start_step` on, for an
        exact resume), one padded pass for the eval splits."""
        return self.input_pipeline.batches(
            self._load_splits(data_dir),
            split,
            global_batch_size,
            seed=seed,
            shard=shard,
            num_eval_train_examples=self.num_eval_train_examples,
            start_step=start_step,
        )

    def train_chunk_plans(
        self, data_dir: str, global_batch_size: int, seed: int, shard, start_step=0
    ):
        """The train stream as (split, `algoperf.data.arrays.chunk_plans`), for a framework to
        gather, decode and cut in its own arrays; None unless the input pipeline's train stream is
        the plain chunked one (it defines `plain_train_split(splits)`: no per-step augmentation).
        Gives the same batches as `numpy_batches("train", ...)`."""
        plain_train_split = getattr(self.input_pipeline, "plain_train_split", None)
        if plain_train_split is None:
            return None
        split = plain_train_split(self._load_splits(data_dir))
        plans = arrays.chunk_plans(
            split, global_batch_size, seed=seed, shard=shard, start_step=start_step
        )
        return split, plans

    def _load_splits(self, data_dir: str):
        if self.input_pipeline is None:
            raise NotImplementedError(f"{type(self).__name__} defines no input_pipeline.")
        if self._splits is None:
            self._splits = self.input_pipeline.load_splits(
                data_dir, layout=self.data_layout, allow_download=self.allow_download
            )
        return self._splits

    # --- constants -------------------------------------------------------------------------
    @property
    def workload_name(self) -> str:
        return self.spec.name

    @property
    def target_metric_name(self) -> str:
        return self.spec.target_metric_name

    @property
    def validation_target_value(self) -> float:
        return self.spec.validation_target

    @property
    def test_target_value(self) -> float | None:
        return self.spec.test_target

    @property
    def loss_type(self) -> spec.LossType:
        return self.spec.loss_type

    @property
    def num_train_examples(self) -> int:
        return self.spec.num_train_examples

    @property
    def num_eval_train_examples(self) -> int:
        return self.spec.num_eval_train_examples

    @property
    def num_validation_examples(self) -> int:
        return self.spec.num_validation_examples

    @property
    def num_test_examples(self) -> int | None:
        return self.spec.num_test_examples

    @property
    def eval_batch_size(self) -> int:
        return self.spec.eval_batch_size

    @property
    def train_mean(self):
        if self.spec.train_mean is None:
            raise NotImplementedError
        return self.spec.train_mean

    @property
    def train_stddev(self):
        if self.spec.train_stddev is None:
            raise NotImplementedError
        return self.spec.train_stddev

    @property
    def max_allowed_runtime_sec(self) -> int:
        return self._budget.max_allowed_runtime_sec

    @property
    def eval_period_time_sec(self) -> int:
        return self._budget.eval_period_time_sec

    @property
    def step_hint(self) -> int:
        return self._budget.step_hint

    @property
    def requires_sync_before_eval(self) -> bool:
        return self.spec.requires_sync_before_eval

    # --- targets ----------------------------------------------------------------------------
    def _reached(self, value: float | None, target: float | None) -> bool:
        if target is None:
            return True  # no test split: the test goal counts as reached (as upstream's LM)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        # Strict comparison, as upstream's runner (spec/RULES.md §3).
        return value > target if self.spec.higher_is_better else value < target

    def has_reached_validation_target(self, eval_result: dict[str, float]) -> bool:
        key = f"validation/{self.target_metric_name}"
        return self._reached(eval_result.get(key), self.validation_target_value)

    def has_reached_test_target(self, eval_result: dict[str, float]) -> bool:
        key = f"test/{self.target_metric_name}"
        if self.test_target_value is None:
            return True
        return self._reached(eval_result.get(key), self.test_target_value)

    # --- eval driver ------------------------------------------------------------------------
    def eval_model(
        self,
        global_batch_size: int,
        params: spec.ParameterContainer,
        model_state: spec.ModelAuxiliaryState,
        rng: spec.RandomState,
        data_dir: str,
        imagenet_v2_data_dir: str | None,
        global_step: int,
    ) -> dict[str, float]:
        """Evaluate eval_train, validation and test (skipped when the workload has none)."""
        del imagenet_v2_data_dir  # workloads that need it read it from their constructor
        results: dict[str, Any] = {}
        for split, prefix in EVAL_SPLITS:
            num_examples = {
                "eval_train": self.num_eval_train_examples,
                "validation": self.num_validation_examples,
                "test": self.num_test_examples,
            }[split]
            if num_examples is None:
                continue
            try:
                metrics = self._eval_model_on_split(
                    split,
                    num_examples,
                    global_batch_size,
                    params,
                    model_state,
                    rng,
                    data_dir,
                    global_step,
                )
            except NotImplementedError:
                continue
            if split == "eval_train":
                metrics = {k: v for k, v in metrics.items() if k != "num_examples"}
            for name, value in metrics.items():
                results[f"{prefix}/{name}"] = value
        return results

    def is_output_params(self, param_key: spec.ParameterKey) -> bool:
        key = param_key if isinstance(param_key, str) else "/".join(map(str, param_key))
        return any(key.startswith(prefix) for prefix in self.output_param_prefixes)

    output_param_prefixes: tuple[str, ...] = ()
    """Parameter-name prefixes of the output layer (set by each model file)."""
