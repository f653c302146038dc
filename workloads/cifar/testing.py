"""CIFAR-10's declarations for the registry suite (tests/test_workload_registry.py): a ResNet-18
with one narrow block per stage; fixture = the python release's six pickled batch files."""

from __future__ import annotations

import pathlib
import pickle

import numpy as np

from algoperf.spec import ParameterType as T
from algoperf.workloads import parity
from algoperf.workloads.cifar import input_pipeline

IMAGES_PER_FILE = 10  # 5 train files -> 45 train / 5 validation (the last tenth); 10 test


def write_fixture(folder: pathlib.Path, images_per_file: int = IMAGES_PER_FILE) -> pathlib.Path:
    """The six batch files (random pixels and labels, pickled as the real release is) in
    `folder/cifar-10-batches-py`; returns the --data_dir (`folder`)."""
    batches = folder / input_pipeline.BATCHES_DIR
    batches.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in (*input_pipeline.TRAIN_FILES, input_pipeline.TEST_FILE):
        images = rng.integers(0, 256, (images_per_file, input_pipeline.PIXELS_PER_IMAGE), np.uint8)
        labels = [int(v) for v in rng.integers(0, input_pipeline.NUM_CLASSES, images_per_file)]
        content = {b"batch_label": name.encode(), b"labels": labels, b"data": images}
        with open(batches / name, "wb") as handle:
            pickle.dump(content, handle, protocol=2)
    return folder


def randomize_(model, seed: int = 0) -> None:
    """Non-trivial BN scales, biases and running statistics, and a head of std 0.3: at init the
    residual branches are off (last BN scale 0) and the logits of the narrow model are ~1e-2."""
    import torch

    parity.randomize_batch_norm_(model, seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.fc.weight.copy_(0.3 * torch.randn(model.fc.weight.shape, generator=generator))


SMALL = {"stage_sizes": (1, 1, 1, 1), "widths": (8, 8, 8, 8)}
"""One narrow block per stage: every module type of the ResNet-18 (a stride-1 block, three
projection shortcuts), a small XLA program and a short torch.compile."""
_TRAIN_FILE_IMAGES = 5 * IMAGES_PER_FILE

TESTS = parity.ModelTests(
    model_kwargs=SMALL,
    batch_size=4,
    output_shape=(10,),
    batch_norm_layers=20,
    param_types={
        T.CONV_WEIGHT: 20,
        T.BATCH_NORM_SCALE: 20,
        T.BATCH_NORM_BIAS: 20,
        T.WEIGHT: 1,
        T.BIAS: 1,
    },
    randomize=randomize_,
    # Conv + BN layers with different conv kernels (oneDNN vs XLA/Eigen) and reduction orders.
    # Measured on a 2-core x86 CPU, batch 4: EVAL logits 4.5e-7 and TRAIN logits 2.4e-7 of max
    # |logit| (the full ResNet-18: 1.0e-6); loss 2.4e-7; params after the step 3.0e-8 abs (they
    # move by up to 3.3e-2); running means 4.5e-8. BN in TRAIN mode on 4 images amplifies
    # rounding; 1e-5 leaves ~10x for other CPUs, while a wrong transpose, a swapped BN statistic
    # or asymmetric padding is >= 1e-2.
    logits_rtol=1e-5,
    step_atol=1e-5,
    write_fixture=write_fixture,
    fixture_sizes={
        "validation": _TRAIN_FILE_IMAGES // input_pipeline.VALIDATION_FRACTION_DENOMINATOR,
        "test": IMAGES_PER_FILE,
    },
    cli_options="model_kwargs={'stage_sizes':[1,1,1,1],'widths':[8,8,8,8]}",
    cli_metrics=("accuracy", "loss"),
)
