"""ImageNet-2012 with a ResNet-50 v1.5; test = ImageNet-v2. Facts: docs/workloads.md."""

from algoperf.spec import LossType
from algoperf.workload_spec import Budget, Variant, WorkloadSpec

SPEC = WorkloadSpec(
    name="imagenet_resnet",
    base="imagenet_resnet",
    dataset="imagenet",
    target_metric_name="accuracy",
    validation_target=0.77431,  # 1 - 0.22569
    test_target=0.6560,  # 1 - 0.3440
    loss_type=LossType.SOFTMAX_CROSS_ENTROPY,
    num_train_examples=1_281_167,
    num_eval_train_examples=50_176,
    num_validation_examples=50_000,
    num_test_examples=10_000,  # ImageNet-v2 matched-frequency
    eval_batch_size=1_024,
    budgets={
        "v0.5": Budget(max_allowed_runtime_sec=63_008, eval_period_time_sec=510, step_hint=186_666),
        "v0.6": Budget(max_allowed_runtime_sec=66_159, eval_period_time_sec=510, step_hint=195_999),
        "v1.0": Budget(
            max_allowed_runtime_sec=49_918, eval_period_time_sec=1_996, step_hint=195_999
        ),
    },
    default_dropout_rate=None,  # ResNet-50 has no dropout
    compile_model=True,
    compile_loss=False,
    model_kwargs={
        "activation": "relu",
        # Initial scale of the last BN in every residual branch.
        "bn_init_scale": 0.0,
    },
    # Per channel, on pixels scaled to [0, 1] (the JAX pipeline uses these x 255 on 0-255 pixels).
    train_mean=(0.485, 0.456, 0.406),
    train_stddev=(0.229, 0.224, 0.225),
    # As upstream's; the variants change activations and init only.
    num_params={"pytorch": (25_557_032, 161), "jax": (25_557_032, 161)},
    description="ImageNet-2012 classification, ResNet-50 v1.5",
)

VARIANTS: dict[str, Variant] = {
    "imagenet_resnet_silu": Variant(
        model_kwargs={"activation": "silu"},
        validation_target=0.75445,
        test_target=0.6323,
        description="ResNet-50 with SiLU instead of ReLU",
    ),
    "imagenet_resnet_gelu": Variant(
        model_kwargs={"activation": "gelu"},  # tanh approximation
        validation_target=0.76765,
        test_target=0.6519,
        description="ResNet-50 with GELU (tanh approximation) instead of ReLU",
    ),
    "imagenet_resnet_large_bn_init": Variant(
        model_kwargs={"bn_init_scale": 8.0},
        validation_target=0.76526,
        test_target=0.6423,
        description="ResNet-50 with the last BN scale of each residual branch initialised to 8.0",
    ),
}
