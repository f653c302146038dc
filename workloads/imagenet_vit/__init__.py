"""ImageNet-2012 with a ViT-S/16; test = ImageNet-v2. Facts: docs/workloads.md."""

from algoperf.spec import LossType
from algoperf.workload_spec import Budget, Variant, WorkloadSpec

SPEC = WorkloadSpec(
    name="imagenet_vit",
    base="imagenet_vit",
    dataset="imagenet",  # shares the ImageNet data with imagenet_resnet
    target_metric_name="accuracy",
    validation_target=0.77309,  # 1 - 0.22691
    test_target=0.6519,  # 1 - 0.3481
    loss_type=LossType.SOFTMAX_CROSS_ENTROPY,
    num_train_examples=1_281_167,
    num_eval_train_examples=51_200,
    num_validation_examples=50_000,
    num_test_examples=10_000,  # ImageNet-v2 matched-frequency
    eval_batch_size=2_048,
    budgets={
        "v0.5": Budget(max_allowed_runtime_sec=77_520, eval_period_time_sec=420, step_hint=186_666),
        "v0.6": Budget(max_allowed_runtime_sec=69_768, eval_period_time_sec=420, step_hint=167_999),
        "v1.0": Budget(
            max_allowed_runtime_sec=64_292, eval_period_time_sec=2_571, step_hint=167_999
        ),
    },
    default_dropout_rate=0.0,
    # v1.0 compiles the ViT model and its loss (v0.6 compiled neither; docs/workloads.md,
    # "Compile policy").
    compile_model=True,
    compile_loss=True,
    model_kwargs={
        "width": 384,
        "depth": 12,
        "mlp_dim": 1536,
        "num_heads": 6,
        "patch_size": 16,
        "use_glu": False,
        "use_post_layer_norm": False,
        "use_map": False,
    },
    # Per channel, on pixels scaled to [0, 1] (the JAX pipeline uses these x 255 on 0-255 pixels).
    train_mean=(0.485, 0.456, 0.406),
    train_stddev=(0.229, 0.224, 0.225),
    num_params={"pytorch": (22_122_472, 200), "jax": (22_122_472, 200)},  # as upstream's
    description="ImageNet-2012 classification, ViT-S/16 with RandAugment and mixup",
)

VARIANTS: dict[str, Variant] = {
    "imagenet_vit_glu": Variant(
        model_kwargs={"use_glu": True},
        validation_target=0.75738,
        test_target=0.6359,
        num_params={"pytorch": (50_452_456, 224), "jax": (50_452_456, 224)},
        description="ViT-S/16 with a GLU inside the MLP",
    ),
    "imagenet_vit_post_ln": Variant(
        model_kwargs={"use_post_layer_norm": True},
        validation_target=0.75312,
        test_target=0.6286,
        num_params={"pytorch": (22_121_704, 198), "jax": (22_121_704, 198)},
        description="ViT-S/16 with post-LayerNorm blocks and no final encoder norm",
    ),
    "imagenet_vit_map": Variant(
        model_kwargs={"use_map": True},
        validation_target=0.77113,
        test_target=0.6523,
        # Upstream's PyTorch MAP head fuses k and v (213 tensors); ours keeps q, k, v apart in
        # both frameworks, as upstream's JAX (215).
        num_params={"pytorch": (23_896_552, 215), "jax": (23_896_552, 215)},
        description="ViT-S/16 with a multi-head attention pooling head instead of mean pooling",
    ),
}
