"""fastMRI knee single-coil: U-Net reconstruction scored by SSIM. Facts: docs/workloads.md."""

from algoperf.spec import LossType
from algoperf.workload_spec import Budget, Variant, WorkloadSpec

SPEC = WorkloadSpec(
    name="fastmri",
    base="fastmri",
    dataset="fastmri",
    target_metric_name="ssim",
    validation_target=0.723653,
    test_target=0.740633,
    loss_type=LossType.MEAN_ABSOLUTE_ERROR,
    num_train_examples=34_742,
    num_eval_train_examples=3_584,
    num_validation_examples=3_554,
    num_test_examples=3_581,
    eval_batch_size=256,
    budgets={
        "v0.5": Budget(max_allowed_runtime_sec=8_859, eval_period_time_sec=80, step_hint=36_189),
        "v0.6": Budget(max_allowed_runtime_sec=4_430, eval_period_time_sec=80, step_hint=18_094),
        "v1.0": Budget(max_allowed_runtime_sec=2_745, eval_period_time_sec=110, step_hint=18_094),
    },
    default_dropout_rate=0.0,
    # scripts/bench_workloads.py --workloads fastmri --batch 2 --image_size 320 --threads 1 on a
    # 2-core x86 CPU (full-size base): compiled 4,189 ms/step, eager 3,987 (1.05), JAX 6,230.
    # Compiled loses on this CPU only through inductor's layout optimisation (channels_last
    # convs, whose backward oneDNN runs slower here; with TORCHINDUCTOR_LAYOUT_OPTIMIZATION=0
    # compiled took 3,637 ms); on GPUs that layout is cuDNN's faster one. The loss is compiled
    # too, as upstream's.
    compile_model=True,
    compile_loss=True,
    model_kwargs={
        "num_channels": 32,
        "num_pool_layers": 4,
        "activation": "leaky_relu",  # LeakyReLU(0.2)
        "use_layer_norm": False,
    },
    num_params={"pytorch": (7_756_097, 24), "jax": (7_756_097, 24)},  # as upstream's
    description="fastMRI knee single-coil 4x reconstruction, U-Net (32 channels, 4 pools)",
)

VARIANTS: dict[str, Variant] = {
    "fastmri_model_size": Variant(
        model_kwargs={"num_channels": 64, "num_pool_layers": 3},
        validation_target=0.723559,
        test_target=0.740726,
        description="U-Net with 64 channels and 3 pools",
        num_params={"pytorch": (7_692_929, 19), "jax": (7_692_929, 19)},
    ),
    "fastmri_tanh": Variant(
        model_kwargs={"activation": "tanh"},
        validation_target=0.717840,
        test_target=0.734505,
        description="U-Net with tanh instead of LeakyReLU everywhere",
    ),
    "fastmri_layernorm": Variant(
        model_kwargs={"use_layer_norm": True},
        validation_target=0.723284,
        test_target=0.739996,
        description="U-Net whose ConvBlock norms are LayerNorm over (C, H, W)",
        num_params={"pytorch": (7_761_985, 60), "jax": (7_761_985, 60)},
    ),
}
