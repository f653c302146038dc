"""The upstream-compatible submission API: enums, type aliases, the abstract Workload.

Existing submissions do `from algoperf import spec`; every name they use lives here. This module
imports neither torch nor jax (a test checks), so the core and the scorer run without them.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple


class LossType(enum.Enum):
    SOFTMAX_CROSS_ENTROPY = 0
    SIGMOID_CROSS_ENTROPY = 1
    MEAN_SQUARED_ERROR = 2
    CTC_LOSS = 3
    MEAN_ABSOLUTE_ERROR = 4


class ForwardPassMode(enum.Enum):
    TRAIN = 0
    EVAL = 1


class ParameterType(enum.Enum):
    WEIGHT = 0
    BIAS = 1
    CONV_WEIGHT = 2
    BATCH_NORM_SCALE = 3
    BATCH_NORM_BIAS = 4
    LAYER_NORM_SCALE = 5
    LAYER_NORM_BIAS = 6
    EMBEDDING = 7
    ATTENTION_Q = 8
    ATTENTION_K = 9
    ATTENTION_V = 10
    ATTENTION_OUT = 11
    ATTENTION_QKV = 12
    ATTENTION_KV = 13
    ATTENTION_BIAS = 14


class ShapeTuple:
    """A shape wrapped so that pytree maps treat it as a leaf."""

    def __init__(self, shape_tuple):
        self.shape_tuple = tuple(shape_tuple)

    def __repr__(self):
        return f"ShapeTuple({self.shape_tuple})"

    def __eq__(self, other):
        return isinstance(other, ShapeTuple) and self.shape_tuple == other.shape_tuple

    def __hash__(self):
        return hash(self.shape_tuple)


class TrainingCompleteError(Exception):
    """Raised by `update_params` to end the trial; a final eval follows if budget remains."""


# Type aliases used in submission annotations. They are deliberately loose (`Any`): the same names
# describe a torch nn.Module or a JAX pytree depending on the framework.
Shape = tuple[int, ...] | tuple[int | None, ...] | Any
ParameterShapeTree = dict[str, dict[str, Shape]] | Any
ParameterKey = str
ParameterContainer = Any
ParameterTypeTree = dict[ParameterKey, dict[ParameterKey, ParameterType]] | Any
RandomState = Any
OptimizerState = dict[str, Any] | tuple[Any, ...] | Any
Hyperparameters = Any
Timing = int
Steps = int
Tensor = Any
Seed = int | RandomState
ModelAuxiliaryState = Any
ModelInitState = tuple[ParameterContainer, ModelAuxiliaryState]
UpdateReturn = tuple[OptimizerState, ParameterContainer, ModelAuxiliaryState]
InitOptimizerFn = Callable[..., OptimizerState]
UpdateParamsFn = Callable[..., UpdateReturn]
PrepareForEvalFn = Callable[..., UpdateReturn]
DataSelectionFn = Callable[..., dict[str, Tensor]]
InitModelFn = Callable[..., ModelInitState]
ModelFn = Callable[..., tuple[Tensor, ModelAuxiliaryState]]
LossFn = Callable[..., dict[str, Tensor]]
GetBatchSizeFn = Callable[[str], int]
EvalResults = list[tuple[int, dict[str, float]]]


class Hparams(NamedTuple):
    """Placeholder name some submissions annotate with; real hyperparameters are namedtuples."""


class Workload(metaclass=abc.ABCMeta):
    """The workload interface a submission sees (upstream `spec.Workload`).

    Our implementations derive every constant from a `WorkloadSpec` (see
    `algoperf.workload_base.SpecWorkload`); this class keeps upstream's abstract surface so that
    type checks and `isinstance` in existing code keep working.
    """

    def __init__(self, *args, **kwargs) -> None:
        self._param_shapes: ParameterShapeTree | None = None
        self._param_types: ParameterTypeTree | None = None
        self._eval_iters: dict[str, Iterator] = {}
        self.metrics_logger = None

    @abc.abstractmethod
    def has_reached_validation_target(self, eval_result: dict[str, float]) -> bool:
        """Whether the validation target is reached (strict comparison, as upstream)."""

    @abc.abstractmethod
    def has_reached_test_target(self, eval_result: dict[str, float]) -> bool:
        """Whether the test target is reached (strict comparison, as upstream)."""

    @abc.abstractmethod
    def _build_input_queue(
        self,
        data_rng: RandomState,
        split: str,
        data_dir: str,
        global_batch_size: int,
        cache: bool | None = None,
        repeat_final_dataset: bool | None = None,
        num_batches: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """The input iterator for a split. Submissions may not call it."""

    def attach_metrics_logger(self, metrics_logger) -> None:
        self.metrics_logger = metrics_logger

    @property
    @abc.abstractmethod
    def target_metric_name(self) -> str:
        """The metric key compared with the targets, e.g. `accuracy`."""

    @property
    @abc.abstractmethod
    def validation_target_value(self) -> float: ...

    @property
    @abc.abstractmethod
    def test_target_value(self) -> float | None: ...

    @property
    @abc.abstractmethod
    def loss_type(self) -> LossType: ...

    @property
    @abc.abstractmethod
    def num_train_examples(self) -> int: ...

    @property
    @abc.abstractmethod
    def num_eval_train_examples(self) -> int: ...

    @property
    @abc.abstractmethod
    def num_validation_examples(self) -> int: ...

    @property
    @abc.abstractmethod
    def num_test_examples(self) -> int | None: ...

    @property
    @abc.abstractmethod
    def eval_batch_size(self) -> int: ...

    @property
    @abc.abstractmethod
    def train_mean(self): ...

    @property
    @abc.abstractmethod
    def train_stddev(self): ...

    @property
    @abc.abstractmethod
    def max_allowed_runtime_sec(self) -> int: ...

    @property
    @abc.abstractmethod
    def eval_period_time_sec(self) -> int: ...

    @property
    @abc.abstractmethod
    def step_hint(self) -> int: ...

    @property
    def param_shapes(self) -> ParameterShapeTree:
        if self._param_shapes is None:
            raise ValueError(
                "param_shapes is set by init_model_fn; call workload.init_model_fn(rng) first."
            )
        return self._param_shapes

    @property
    def model_params_types(self) -> ParameterTypeTree:
        if self._param_types is None:
            raise ValueError(
                "model_params_types is set by init_model_fn; call workload.init_model_fn(rng) "
                "first."
            )
        return self._param_types

    @abc.abstractmethod
    def is_output_params(self, param_key: ParameterKey) -> bool:
        """Whether a parameter belongs to the output layer."""

    @abc.abstractmethod
    def init_model_fn(self, rng: RandomState) -> ModelInitState:
        """Build and initialise the model; sets `param_shapes` and `model_params_types`."""

    @abc.abstractmethod
    def model_fn(
        self,
        params: ParameterContainer,
        augmented_and_preprocessed_input_batch: dict[str, Tensor],
        model_state: ModelAuxiliaryState,
        mode: ForwardPassMode,
        rng: RandomState,
        update_batch_norm: bool,
        dropout_rate: float | None = None,
    ) -> tuple[Tensor, ModelAuxiliaryState]:
        """The forward pass; returns logits (before the output activation) and the new state."""

    @abc.abstractmethod
    def loss_fn(
        self,
        label_batch: Tensor,
        logits_batch: Tensor,
        mask_batch: Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, Tensor]:
        """Per-device, unregularised loss: `{'summed', 'n_valid_examples', 'per_example'}`."""

    @abc.abstractmethod
    def _eval_model_on_split(
        self,
        split: str,
        num_examples: int,
        global_batch_size: int,
        params: ParameterContainer,
        model_state: ModelAuxiliaryState,
        rng: RandomState,
        data_dir: str,
        global_step: int = 0,
    ) -> dict[str, float]:
        """Evaluate one split; returns metrics without the split prefix."""

    @abc.abstractmethod
    def eval_model(
        self,
        global_batch_size: int,
        params: ParameterContainer,
        model_state: ModelAuxiliaryState,
        rng: RandomState,
        data_dir: str,
        imagenet_v2_data_dir: str | None,
        global_step: int,
    ) -> dict[str, float]:
        """Evaluate eval_train, validation and test (keys `train/`, `validation/`, `test/`...)."""


# --- The submission functions, for annotation and documentation (upstream defines these too). ---


def init_optimizer_state(
    workload: Workload,
    model_params: ParameterContainer,
    model_state: ModelAuxiliaryState,
    hyperparameters: Hyperparameters,
    rng: RandomState,
) -> OptimizerState:
    raise NotImplementedError


def update_params(
    workload: Workload,
    current_param_container: ParameterContainer,
    current_params_types: ParameterTypeTree,
    model_state: ModelAuxiliaryState,
    hyperparameters: Hyperparameters,
    batch: dict[str, Tensor],
    loss_type: LossType,
    optimizer_state: OptimizerState,
    eval_results: EvalResults,
    global_step: int,
    rng: RandomState,
    train_state: dict[str, Any] | None = None,
) -> UpdateReturn:
    raise NotImplementedError


def prepare_for_eval(
    workload: Workload,
    current_param_container: ParameterContainer,
    current_params_types: ParameterTypeTree,
    model_state: ModelAuxiliaryState,
    hyperparameters: Hyperparameters,
    loss_type: LossType,
    optimizer_state: OptimizerState,
    eval_results: EvalResults,
    global_step: int,
    rng: RandomState,
) -> UpdateReturn:
    raise NotImplementedError


def data_selection(
    workload: Workload,
    input_queue: Iterator[dict[str, Any]],
    optimizer_state: OptimizerState,
    current_param_container: ParameterContainer,
    model_state: ModelAuxiliaryState,
    hyperparameters: Hyperparameters,
    global_step: int,
    rng: RandomState,
) -> dict[str, Tensor]:
    raise NotImplementedError


def get_batch_size(workload_name: str) -> int:
    raise NotImplementedError
