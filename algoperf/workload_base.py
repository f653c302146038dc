"""The framework-free half of every Workload: constants from the spec, targets, data, the eval.

`algoperf.torch.workload.TorchWorkload` and `algoperf.jax.workload.JaxWorkload` add the model and
the device side of their framework; a workload adds its model, its loss and its per-batch eval
outputs. Data comes from the workload's `InputPipeline` (the data protocol, docs/data.md); eval
is the core loop of `algoperf.metrics` over the declared `eval_metrics` (docs/metrics.md).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from algoperf import metrics, spec, versions
from algoperf.data.arrays import ArraySplit
from algoperf.data.pipeline import InputPipeline
from algoperf.data.sharding import Shard
from algoperf.workload_spec import WorkloadSpec

EVAL_SPLITS = (("eval_train", "train"), ("validation", "validation"), ("test", "test"))


class SpecWorkload(spec.Workload):
    """A `spec.Workload` whose constants come from a `WorkloadSpec` and a benchmark version."""

    framework: ClassVar[str] = ""
    data_layout: ClassVar[str] = "NCHW"
    """Image layout the model wants (`NCHW` in torch, `NHWC` in JAX), handed to the pipeline."""
    pipeline_defaults: ClassVar[Mapping[str, Any]] = {}
    """Pipeline options this workload sets (e.g. imagenet_vit's augmentation); users may
    override them with --workload_options."""
    eval_metrics: ClassVar[tuple[metrics.Metric, ...]] = ()
    """How `eval_outputs` become metrics (`algoperf.metrics`); the classifier pieces set these."""
    output_param_prefixes: ClassVar[tuple[str, ...]] = ()
    """Parameter-name prefixes of the output layer (set by each model file)."""

    def __init__(
        self,
        workload_spec: WorkloadSpec,
        *,
        pipeline_class: type[InputPipeline],
        benchmark_version: str = versions.DEFAULT_VERSION,
        allow_download: bool = False,
        model_kwargs: dict[str, Any] | None = None,
        **pipeline_options: Any,
    ) -> None:
        """`model_kwargs` (testing only, e.g. a shallower model in a quick end-to-end run)
        overrides the spec's model arguments; `pipeline_options` are the pipeline's declared
        options (`option_names`)."""
        super().__init__()
        unknown = sorted(set(pipeline_options) - set(pipeline_class.option_names()))
        if unknown:
            raise ValueError(
                f"{workload_spec.name} does not take these options: {', '.join(unknown)}; it "
                f"takes {', '.join(self.option_names(pipeline_class))} (--workload_options)."
            )
        if model_kwargs:
            merged = {**workload_spec.model_kwargs, **model_kwargs}
            workload_spec = dataclasses.replace(workload_spec, model_kwargs=merged)
        self.spec = workload_spec
        self.benchmark_version = versions.get_version(benchmark_version).name
        self._budget = workload_spec.budget(self.benchmark_version)
        self.allow_download = allow_download
        options = pipeline_class.Options(**{**self.pipeline_defaults, **pipeline_options})
        self.pipeline = pipeline_class(
            options, layout=self.data_layout, allow_download=allow_download
        )
        # Seed of the fixed eval_train subset; set from data_rng when the train queue is built.
        self._eval_train_seed = 0
        self._datasets: dict[str, Any] = {}

    @classmethod
    def option_names(cls, pipeline_class: type[InputPipeline]) -> list[str]:
        """What `--workload_options` may set: `model_kwargs` and the pipeline's options."""
        return ["model_kwargs", *pipeline_class.option_names()]

    # --- data (the pipeline's batches for a data dir) -----------------------------------------
    def dataset(self, data_dir: str) -> Any:
        """The pipeline's prepared splits under `data_dir` (loaded once)."""
        if data_dir not in self._datasets:
            self._datasets[data_dir] = self.pipeline.load(data_dir)
        return self._datasets[data_dir]

    # --- the data actually loaded (meta_data_<p>.json records these; docs/data.md) -------------
    @property
    def data_source(self) -> str | None:
        """What the pipeline loaded: "full" (the workload's dataset from the data dir), or what
        it fell back to and why (e.g. MNIST's offline sample); None before any data is loaded."""
        if not self._datasets:
            return None
        return getattr(self.pipeline, "data_source", "full")

    @property
    def data_num_train_examples(self) -> int | None:
        """Training examples actually loaded (in-memory datasets; else None)."""
        return self._loaded_size("train")

    @property
    def data_num_validation_examples(self) -> int | None:
        """Validation examples actually loaded (in-memory datasets; else None)."""
        return self._loaded_size("validation")

    def _loaded_size(self, split: str) -> int | None:
        dataset = next(reversed(self._datasets.values()), None)
        if not isinstance(dataset, Mapping) or not isinstance(dataset.get(split), ArraySplit):
            return None
        return len(dataset[split])

    @property
    def shard(self) -> Shard:
        """This process's share of every global batch (set by the framework bases)."""
        return Shard()

    def numpy_batches(
        self,
        split: str,
        data_dir: str,
        global_batch_size: int,
        seed: int,
        shard: Shard | None = None,
        start_step: int = 0,
    ) -> Iterator[Any]:
        """This rank's numpy batches: infinite for `train` (from batch `start_step` on, for an
        exact resume), one padded pass for the eval splits."""
        dataset, shard = self.dataset(data_dir), shard or self.shard
        if split == "train":
            return self.pipeline.train_batches(
                dataset, global_batch_size, seed=seed, shard=shard, start_step=start_step
            )
        return self.pipeline.eval_batches(
            dataset, split, global_batch_size, seed=seed, shard=shard,
            num_eval_train_examples=self.num_eval_train_examples,
        )  # fmt: skip

    def train_chunks(self, data_dir: str, global_batch_size: int, seed: int, start_step=0):
        """The pipeline's in-memory fast path (`InputPipeline.train_chunks`), or None."""
        return self.pipeline.train_chunks(
            self.dataset(data_dir), global_batch_size, seed=seed, shard=self.shard,
            start_step=start_step,
        )  # fmt: skip

    def fake_batch(self, batch_size: int, *, seed: int = 0) -> Any:
        """A numpy batch with the real structure (the pipeline's), for tests and examples."""
        return self.pipeline.fake_batch(batch_size, seed=seed)

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
        # Strict comparison, as upstream's runner (docs/rules.md, "Time to target").
        return value > target if self.spec.higher_is_better else value < target

    def has_reached_validation_target(self, eval_result: dict[str, float]) -> bool:
        key = f"validation/{self.target_metric_name}"
        return self._reached(eval_result.get(key), self.validation_target_value)

    def has_reached_test_target(self, eval_result: dict[str, float]) -> bool:
        key = f"test/{self.target_metric_name}"
        if self.test_target_value is None:
            return True
        return self._reached(eval_result.get(key), self.test_target_value)

    # --- eval ---------------------------------------------------------------------------------
    def eval_outputs(self, logits: Any, batch: Any) -> dict[str, Any]:
        """One eval batch's outputs on the device, as `eval_metrics` need them, and
        `num_examples` (the batch's count of valid rows)."""
        raise NotImplementedError(
            f"{type(self).__name__} defines no eval_outputs; a classifier takes it from the "
            "classification piece of its framework (docs/metrics.md)."
        )

    def _eval_batches(self, split, data_dir, global_batch_size) -> Iterator[Any]:
        """The split's batches on the device (framework bases)."""
        raise NotImplementedError

    def _eval_compute(self, params, model_state, rng):
        """A function batch -> `eval_outputs`, in EVAL mode (framework bases)."""
        raise NotImplementedError

    def _collectives(self) -> metrics.EvalCollectives:
        raise NotImplementedError

    def _eval_model_on_split(
        self,
        split: str,
        num_examples: int,
        global_batch_size: int,
        params: spec.ParameterContainer,
        model_state: spec.ModelAuxiliaryState,
        rng: spec.RandomState,
        data_dir: str,
        global_step: int = 0,
    ) -> dict[str, float]:
        del num_examples, global_step  # every example of the split is visited exactly once
        if not self.eval_metrics:
            raise NotImplementedError(f"{type(self).__name__} declares no eval_metrics.")
        return metrics.evaluate(
            self._eval_batches(split, data_dir, global_batch_size),
            self._eval_compute(params, model_state, rng),
            self.eval_metrics,
            self._collectives(),
        )

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
        """Evaluate eval_train, validation and test (test only where the spec has one)."""
        if imagenet_v2_data_dir and imagenet_v2_data_dir != self.pipeline.options.extra_data_dir:
            self.pipeline.with_options(extra_data_dir=imagenet_v2_data_dir)
        results: dict[str, Any] = {}
        for split, prefix in EVAL_SPLITS:
            num_examples = {
                "eval_train": self.num_eval_train_examples,
                "validation": self.num_validation_examples,
                "test": self.num_test_examples,
            }[split]
            if num_examples is None:
                continue  # the workload has no such split (a spec fact, e.g. no test set)
            split_metrics = self._eval_model_on_split(
                split, num_examples, global_batch_size, params, model_state, rng, data_dir,
                global_step,
            )  # fmt: skip
            if split == "eval_train":
                split_metrics.pop(metrics.NUM_EXAMPLES, None)
            for name, value in split_metrics.items():
                results[f"{prefix}/{name}"] = value
        return results

    def is_output_params(self, param_key: spec.ParameterKey) -> bool:
        key = param_key if isinstance(param_key, str) else "/".join(map(str, param_key))
        return any(key.startswith(prefix) for prefix in self.output_param_prefixes)
