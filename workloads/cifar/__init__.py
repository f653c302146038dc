"""CIFAR-10 (development workload): ResNet-18 with a 3x3 stem. Facts: docs/workloads.md."""

from algoperf.spec import LossType
from algoperf.workload_spec import Budget, WorkloadSpec

_BUDGET = Budget(max_allowed_runtime_sec=3_600, eval_period_time_sec=600, step_hint=4_883)

SPEC = WorkloadSpec(
    name="cifar",
    base="cifar",
    dataset="cifar",
    target_metric_name="accuracy",
    validation_target=0.85,
    test_target=0.85,
    loss_type=LossType.SOFTMAX_CROSS_ENTROPY,
    num_train_examples=45_000,
    num_eval_train_examples=5_120,
    num_validation_examples=5_000,
    num_test_examples=10_000,
    eval_batch_size=1_024,
    budgets={"v0.5": _BUDGET, "v0.6": _BUDGET, "v1.0": _BUDGET},
    default_dropout_rate=None,
    compile_model=True,
    train_mean=(0.49139968, 0.48215827, 0.44653124),
    train_stddev=(0.24703233, 0.24348505, 0.26158768),
    num_params={"pytorch": (11_173_962, 62), "jax": (11_173_962, 62)},  # as upstream's
    description="CIFAR-10, ResNet-18 (3x3 stem, no max-pool)",
)

VARIANTS: dict = {}
