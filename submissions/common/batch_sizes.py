"""Global training batch sizes of the reference submissions, keyed by BASE workload name."""

from __future__ import annotations

# The reference sizes of upstream's target-setting runs and baselines, which assume 8x V100;
# finewebedu_lm uses 64.
GLOBAL_BATCH_SIZES: dict[str, int] = {
    # Dev workloads. mnist: 128 (the baselines use 16) so that a run on CPU takes few steps.
    "mnist": 128,
    "cifar": 128,
    "criteo1tb": 262_144,
    "fastmri": 32,
    "imagenet_resnet": 1_024,
    "imagenet_vit": 1_024,
    "librispeech_conformer": 256,
    "librispeech_deepspeech": 256,
    "finewebedu_lm": 64,
    "ogbg": 512,
    "wmt": 128,
}


def get_batch_size(workload_name: str) -> int:
    """The global batch size of a base workload.

    Raises:
        ValueError: `workload_name` is not a base name (a variant such as
            `imagenet_resnet_silu`); the runner then retries with the base name.
    """
    try:
        return GLOBAL_BATCH_SIZES[workload_name]
    except KeyError:
        raise ValueError(
            f"no batch size for {workload_name!r}; known base workloads: "
            f"{', '.join(GLOBAL_BATCH_SIZES)} (the runner retries variants with their base name)"
        ) from None
