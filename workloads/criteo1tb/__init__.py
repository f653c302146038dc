"""Criteo 1TB click logs: DLRM-small click-through prediction. Facts: docs/workloads.md."""

from algoperf.spec import LossType
from algoperf.workload_spec import Budget, Variant, WorkloadSpec

SPEC = WorkloadSpec(
    name="criteo1tb",
    base="criteo1tb",
    dataset="criteo1tb",
    target_metric_name="loss",
    validation_target=0.123735,
    test_target=0.126041,
    loss_type=LossType.SIGMOID_CROSS_ENTROPY,
    num_train_examples=4_195_197_692,
    # The PyTorch value: ceil(83,274,637 / 8,192) * 8,192. JAX evaluates with batch 131,072 and
    # so rounds up to 83,361,792 (docs/workloads.md).
    num_eval_train_examples=83_279_872,
    num_validation_examples=83_274_637,
    num_test_examples=95_000_000,
    eval_batch_size=8_192,
    eval_batch_size_jax=131_072,
    budgets={
        "v0.5": Budget(max_allowed_runtime_sec=7_703, eval_period_time_sec=120, step_hint=10_666),
        "v0.6": Budget(max_allowed_runtime_sec=7_703, eval_period_time_sec=120, step_hint=10_666),
        "v1.0": Budget(max_allowed_runtime_sec=8_915, eval_period_time_sec=356, step_hint=10_666),
    },
    default_dropout_rate=0.0,
    # Upstream never compiles the DLRM model or its loss (docs/workloads.md, "Compile policy").
    compile_model=False,
    compile_loss=False,
    model_kwargs={
        "model": "dlrm_small",
        "vocab_size": 4_194_304,  # 32 * 128 * 1024
        "embed_dim": 128,
        "mlp_bottom_dims": (512, 256, 128),
        "mlp_top_dims": (1024, 1024, 512, 256, 1),
        "use_layer_norm": False,
        # None: U(0, 1) / sqrt(vocab_size); a number: U(0, 1) * that number.
        "embedding_init_multiplier": None,
    },
    description="Criteo 1TB click logs, DLRM-small (vocab 4,194,304, embed 128)",
)

VARIANTS: dict[str, Variant] = {
    "criteo1tb_layernorm": Variant(
        model_kwargs={"use_layer_norm": True},
        validation_target=0.123757,
        test_target=0.126152,
        description="DLRM-small with LayerNorm after every hidden ReLU and on the embeddings",
    ),
    "criteo1tb_resnet": Variant(
        model_kwargs={
            "model": "dlrm_resnet",
            "mlp_bottom_dims": (256, 256, 256),
            "mlp_top_dims": (256, 256, 256, 256, 1),
        },
        validation_target=0.12415,
        test_target=0.12648,
        description="DLRM-ResNet: residual MLPs, no dot interaction",
    ),
    "criteo1tb_embed_init": Variant(
        model_kwargs={"embedding_init_multiplier": 1.0},
        validation_target=0.129657,
        test_target=0.131967,
        description="DLRM-small with embeddings initialised U(0, 1) * 1.0",
    ),
    # Development variant for CI (small embedding table). Upstream gives it no targets of its own,
    # so it reuses the base criteo1tb targets.
    "criteo1tb_test": Variant(
        model_kwargs={"vocab_size": 65_536},  # 32 * 128 * 16
        validation_target=0.123735,
        test_target=0.126041,
        description="DLRM-small with a 65,536-row embedding table (CI only; base targets)",
    ),
}
