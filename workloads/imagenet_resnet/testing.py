"""ImageNet ResNet-50's declarations for the registry suite (tests/test_workload_registry.py): one
narrow bottleneck per stage on 64 px images, the fixture JPEG tree of workloads/imagenet."""

from __future__ import annotations

from algoperf.spec import ParameterType as T
from algoperf.workloads import parity
from algoperf.workloads.imagenet import testing as imagenet_testing

SMALL = {"stage_sizes": (1, 1, 1, 1), "widths": (8, 8, 8, 8)}
"""One bottleneck per stage, narrow and equal widths (few distinct shapes): the same modules as
the ResNet-50, a small XLA program."""

TESTS = parity.ModelTests(
    model_kwargs=SMALL,
    # 64 px: 2x2 at the last stage, 16 values per channel for BN in TRAIN mode on 4 images.
    workload_options={"image_size": 64, "num_workers": 0},
    batch_size=4,
    output_shape=(1000,),
    batch_norm_layers=53,
    param_types={
        T.CONV_WEIGHT: 53,
        T.BATCH_NORM_SCALE: 53,
        T.BATCH_NORM_BIAS: 53,
        T.WEIGHT: 1,
        T.BIAS: 1,
    },
    randomize=parity.randomize_batch_norm_,
    # large_bn_init changes only the init: its JAX forward is the base's (one compile for both).
    forward_twins={"imagenet_resnet_large_bn_init": "imagenet_resnet"},
    # Measured on a 2-core x86 CPU over the 4 variants (17 conv + BN layers, randomised BN):
    # logits at most 2.0e-6 of max |logit| (EVAL 5.8e-7, TRAIN 2.0e-6); loss 4.8e-7; params
    # after the step 1.2e-7 abs (they move by up to 5e-2); running means 7.5e-8. Different conv
    # kernels (oneDNN vs XLA/Eigen) and reduction orders; the bounds are 10x that, while a wrong
    # transpose, padding, activation or BN statistic shows up at 1e-2 or more.
    logits_rtol=2e-5,
    step_atol=1e-5,
    write_fixture=imagenet_testing.write_fixture,
    fixture_sizes=imagenet_testing.FIXTURE_SIZES,
    # One stage of one bottleneck (every module type of the ResNet): a cold torch.compile on a
    # 2-core CPU takes ~40 s for it, ~100 s for one bottleneck per stage, ~3.5 min in full.
    cli_options="image_size=32,num_workers=1,model_kwargs={'stage_sizes':[1],'widths':[8]}",
    cli_metrics=("accuracy", "loss"),
)
