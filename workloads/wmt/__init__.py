"""WMT German-to-English translation, Transformer, BLEU. Facts: docs/workloads.md."""

from algoperf.spec import LossType
from algoperf.workload_spec import Budget, Variant, WorkloadSpec

SPEC = WorkloadSpec(
    name="wmt",
    base="wmt",
    dataset="wmt",
    target_metric_name="bleu",
    validation_target=30.8491,
    test_target=30.7219,
    loss_type=LossType.SOFTMAX_CROSS_ENTROPY,
    num_train_examples=5_906_184,
    num_eval_train_examples=3_072,
    num_validation_examples=3_000,
    num_test_examples=3_003,
    eval_batch_size=128,
    budgets={
        "v0.5": Budget(max_allowed_runtime_sec=48_151, eval_period_time_sec=840, step_hint=133_333),
        "v0.6": Budget(max_allowed_runtime_sec=43_336, eval_period_time_sec=840, step_hint=120_000),
        "v1.0": Budget(max_allowed_runtime_sec=16_114, eval_period_time_sec=644, step_hint=120_000),
    },
    default_dropout_rate=0.1,  # main and attention dropout
    compile_model=True,
    compile_loss=True,
    model_kwargs={
        "vocab_size": 32_000,
        "emb_dim": 1_024,
        "num_heads": 16,
        "mlp_dim": 1_024,
        "num_layers": 6,  # encoder and decoder each
        "pre_ln": True,
        # Multiplies the queries after their projection.
        "attention_temp": 1.0,
        "activation": "relu",
        "glu": False,
    },
    # Upstream's count in both frameworks, in upstream's PyTorch layout in both (q, k and v
    # fused in self-attention, k and v in cross-attention: 155 tensors; its JAX kept them
    # apart, 185).
    num_params={"pytorch": (133_521_408, 155), "jax": (133_521_408, 155)},
    description="WMT17 de-en translation, pre-LN Transformer (6+6 layers, d 1024, 16 heads)",
)

VARIANTS: dict[str, Variant] = {
    "wmt_post_ln": Variant(
        model_kwargs={"pre_ln": False},
        validation_target=30.0779,
        test_target=29.8982,
        num_params={"pytorch": (133_517_312, 151), "jax": (133_517_312, 151)},
        description="Transformer with post-LayerNorm and no final encoder/decoder norms",
    ),
    "wmt_attention_temp": Variant(
        model_kwargs={"attention_temp": 4.0},
        validation_target=29.3379,
        # Upstream's PyTorch class says 229.4143, a typo; the JAX class and the docs say 29.4143.
        test_target=29.4143,
        description="Transformer with the queries multiplied by 4.0",
    ),
    "wmt_glu_tanh": Variant(
        model_kwargs={"activation": "tanh", "glu": True},
        validation_target=29.5779,
        test_target=29.0515,
        num_params={"pytorch": (146_116_608, 179), "jax": (146_116_608, 179)},
        description="Transformer with tanh and a GLU in the feed-forward blocks",
    ),
}
