"""LibriSpeech 960h speech recognition with a Conformer and CTC. Facts: docs/workloads.md."""

from algoperf.spec import LossType
from algoperf.workload_spec import Budget, Variant, WorkloadSpec

SPEC = WorkloadSpec(
    name="librispeech_conformer",
    base="librispeech_conformer",
    dataset="librispeech",
    target_metric_name="wer",
    validation_target=0.085884,
    test_target=0.052981,
    loss_type=LossType.CTC_LOSS,
    num_train_examples=263_840,
    num_eval_train_examples=5_376,
    num_validation_examples=5_348,
    num_test_examples=2_472,
    eval_batch_size=256,
    budgets={
        "v0.5": Budget(
            max_allowed_runtime_sec=61_068, eval_period_time_sec=1_440, step_hint=80_000
        ),
        "v0.6": Budget(
            max_allowed_runtime_sec=58_015, eval_period_time_sec=1_440, step_hint=76_000
        ),
        "v1.0": Budget(
            max_allowed_runtime_sec=43_680, eval_period_time_sec=1_747, step_hint=76_000
        ),
    },
    # Applied to the input, attention-residual and feed-forward-residual dropouts; 0 elsewhere.
    default_dropout_rate=0.1,
    # Upstream never compiles the Conformer model or its loss (docs/workloads.md, "Compile policy").
    compile_model=False,
    compile_loss=False,
    model_kwargs={
        "encoder_dim": 512,
        "num_attention_heads": 8,
        "num_encoder_layers": 4,
        # Multiplies the attention output (not the logits).
        "attention_temperature": 1.0,
        "use_post_layer_norm": True,
        "activation": "swish",
    },
    # PyTorch batch-norm statistics are per rank, so the model state is averaged before each eval.
    requires_sync_before_eval=True,
    description="LibriSpeech 960h ASR, 4-block Conformer (dim 512, 8 heads) with CTC",
)

VARIANTS: dict[str, Variant] = {
    "librispeech_conformer_attention_temperature": Variant(
        model_kwargs={"attention_temperature": 1.6},
        validation_target=0.109977,
        test_target=0.068065,
        description="Conformer with the attention output multiplied by 1.6",
    ),
    "librispeech_conformer_layernorm": Variant(
        model_kwargs={"use_post_layer_norm": False},
        validation_target=0.09731,
        test_target=0.05996,
        description="Conformer without the per-block final LayerNorm",
    ),
    "librispeech_conformer_gelu": Variant(
        # Upstream PyTorch uses exact GELU in the conv block, tanh-approximate GELU elsewhere.
        model_kwargs={"activation": "gelu"},
        validation_target=0.094114,
        test_target=0.056629,
        description="Conformer with GELU instead of swish",
    ),
}
