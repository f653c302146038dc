"""A dry-run workload (tests only): multi-label prediction from masked features, scored by mean
average precision over every prediction of a split. Not a classifier, batches are nested: it
shows what a new workload writes on the platform (tests/test_new_workload.py counts the lines)."""

from algoperf.spec import LossType
from algoperf.workload_spec import Budget, WorkloadSpec

_BUDGET = Budget(max_allowed_runtime_sec=600, eval_period_time_sec=60, step_hint=100)

SPEC = WorkloadSpec(
    name="dryrun",
    base="dryrun",
    dataset="dryrun",
    target_metric_name="mean_average_precision",
    validation_target=0.9,
    test_target=0.9,
    loss_type=LossType.SIGMOID_CROSS_ENTROPY,
    num_train_examples=200,
    num_eval_train_examples=50,
    num_validation_examples=50,
    num_test_examples=30,
    eval_batch_size=16,
    budgets={"v1.0": _BUDGET},
)
