"""MNIST (development workload): a 784-128-10 MLP. Facts: docs/workloads.md."""

from algoperf.spec import LossType
from algoperf.workload_spec import Budget, WorkloadSpec

# Dev workloads keep the same budget in every version (docs/workloads.md, "Budgets per
# benchmark version").
_BUDGET = Budget(max_allowed_runtime_sec=60, eval_period_time_sec=10, step_hint=7_813)

SPEC = WorkloadSpec(
    name="mnist",
    base="mnist",
    dataset="mnist",
    target_metric_name="accuracy",
    validation_target=0.97,
    test_target=0.97,
    loss_type=LossType.SOFTMAX_CROSS_ENTROPY,
    num_train_examples=50_000,
    num_eval_train_examples=10_000,
    num_validation_examples=10_000,
    num_test_examples=10_000,
    eval_batch_size=10_000,
    budgets={"v0.5": _BUDGET, "v0.6": _BUDGET, "v1.0": _BUDGET},
    default_dropout_rate=None,
    compile_model=True,
    # Pixels are scaled to [0, 1] before this normalisation (upstream applies it to raw 0-255
    # values, a bug; docs/rules.md, "MNIST normalisation").
    train_mean=0.1307,
    train_stddev=0.3081,
    num_params={"pytorch": (101_770, 4), "jax": (101_770, 4)},  # as upstream's
    description="MNIST digits, MLP 784-128(sigmoid)-10",
)

VARIANTS: dict = {}
