"""LibriSpeech 960h speech recognition with DeepSpeech and CTC. Facts: docs/workloads.md."""

from algoperf.spec import LossType
from algoperf.workload_spec import Budget, Variant, WorkloadSpec

SPEC = WorkloadSpec(
    name="librispeech_deepspeech",
    base="librispeech_deepspeech",
    dataset="librispeech",
    target_metric_name="wer",
    validation_target=0.119936,
    test_target=0.074143,
    loss_type=LossType.CTC_LOSS,
    num_train_examples=263_840,
    num_eval_train_examples=5_376,
    num_validation_examples=5_348,
    num_test_examples=2_472,
    eval_batch_size=256,
    budgets={
        "v0.5": Budget(
            max_allowed_runtime_sec=55_506, eval_period_time_sec=1_440, step_hint=48_000
        ),
        "v0.6": Budget(
            max_allowed_runtime_sec=44_405, eval_period_time_sec=1_440, step_hint=38_400
        ),
        "v1.0": Budget(
            max_allowed_runtime_sec=36_949, eval_period_time_sec=1_447, step_hint=38_400
        ),
    },
    default_dropout_rate=0.1,  # input and feed-forward dropout
    # The model is not compiled, its loss is (docs/workloads.md, "Compile policy").
    compile_model=False,
    compile_loss=True,
    model_kwargs={
        "encoder_dim": 512,
        "num_lstm_layers": 6,  # bidirectional, 256 units per direction
        "num_ffn_layers": 3,
        "activation": "relu",
        "use_residual": True,
        # False: masked BatchNorm in the LSTM and FFN blocks; True: LayerNorm (eps 1e-6).
        "use_layer_norm": False,
        "enable_decoder_layer_norm": True,
        "freq_mask_count": 2,
        "time_mask_count": 10,
    },
    description="LibriSpeech 960h ASR, DeepSpeech (6 BiLSTM + 3 FFN layers) with CTC",
)

VARIANTS: dict[str, Variant] = {
    "librispeech_deepspeech_tanh": Variant(
        model_kwargs={"activation": "tanh"},
        validation_target=0.150883,
        test_target=0.098613,
        description="DeepSpeech with tanh instead of ReLU",
    ),
    "librispeech_deepspeech_no_resnet": Variant(
        model_kwargs={"use_residual": False},
        validation_target=0.131564,
        test_target=0.079297,
        description="DeepSpeech without residual connections",
    ),
    "librispeech_deepspeech_norm_and_spec_aug": Variant(
        model_kwargs={
            "use_layer_norm": True,
            "enable_decoder_layer_norm": False,
            "freq_mask_count": 4,
            "time_mask_count": 15,
        },
        validation_target=0.14342,
        test_target=0.090976,
        eval_batch_size=128,
        description="DeepSpeech with LayerNorm for all BN, no decoder LN, SpecAug 4 freq/15 time",
    ),
}
