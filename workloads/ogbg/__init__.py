"""ogbg-molpcba molecular property prediction with a graph network. Facts: docs/workloads.md."""

from algoperf.spec import LossType
from algoperf.workload_spec import Budget, Variant, WorkloadSpec

SPEC = WorkloadSpec(
    name="ogbg",
    base="ogbg",
    dataset="ogbg",
    target_metric_name="mean_average_precision",
    validation_target=0.28098,
    test_target=0.268729,
    # Upstream declares softmax cross-entropy although the loss is a per-task sigmoid BCE; the
    # declared value is kept for compatibility with submissions that read `loss_type`.
    loss_type=LossType.SOFTMAX_CROSS_ENTROPY,
    num_train_examples=350_343,
    num_eval_train_examples=43_793,  # fixed, not rounded up to the eval batch
    num_validation_examples=43_793,
    num_test_examples=43_793,
    eval_batch_size=32_768,
    budgets={
        "v0.5": Budget(max_allowed_runtime_sec=18_477, eval_period_time_sec=240, step_hint=80_000),
        "v0.6": Budget(max_allowed_runtime_sec=12_011, eval_period_time_sec=240, step_hint=52_000),
        "v1.0": Budget(max_allowed_runtime_sec=11_303, eval_period_time_sec=452, step_hint=52_000),
    },
    default_dropout_rate=0.1,
    # Upstream left the model eager ("compile errors"); packs give static shapes, so it compiles
    # once. scripts/bench_workloads.py --workloads ogbg --batch 64 --threads 1 --dropout_rate 0
    # on a 2-core x86 CPU (full-size base, 4 packs of 16, forward + BCE + backward + AdamW):
    # compiled 353 ms/step, eager 402 (0.88), JAX 541. At dropout 0.1 compiled was 1.13x eager
    # before the part-wise first Linear: inductor's CPU random numbers cost more than ATen's
    # bernoulli (on GPUs inductor draws them in its fused kernels). The first compiled step
    # takes ~55 s. The loss is compiled too, as upstream's.
    compile_model=True,
    compile_loss=True,
    model_kwargs={
        "latent_dim": 256,
        "hidden_dims": (256,),
        "num_message_passing_steps": 5,
        "activation": "relu",
    },
    num_params={"pytorch": (3_554_176, 66), "jax": (3_554_176, 66)},  # as upstream's
    description="ogbg-molpcba 128-task graph classification, GNN (latent 256, 5 steps)",
)

VARIANTS: dict[str, Variant] = {
    "ogbg_gelu": Variant(
        model_kwargs={"activation": "gelu"},  # tanh approximation
        validation_target=0.27771,
        test_target=0.262926,
        description="GNN with GELU (tanh approximation) instead of ReLU",
    ),
    "ogbg_silu": Variant(
        model_kwargs={"activation": "silu"},
        validation_target=0.282178,
        test_target=0.272144,
        description="GNN with SiLU instead of ReLU",
    ),
    "ogbg_model_size": Variant(
        model_kwargs={
            "latent_dim": 128,
            "hidden_dims": (256, 256),
            "num_message_passing_steps": 3,
        },
        validation_target=0.269446,
        test_target=0.253051,
        description="GNN with latent 128, hidden (256, 256) and 3 message-passing steps",
        num_params={"pytorch": (2_571_648, 78), "jax": (2_571_648, 78)},
    ),
}
