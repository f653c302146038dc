"""fastMRI's eval metrics (docs/workloads.md, "fastmri"): the mean SSIM and the mean L1 loss over
the real examples of a split.

Each eval batch's `eval_outputs` (model_torch.py, model_jax.py) sums on the device, over its
rows weighted by `weights` (1 real, 0 padding): `ssim_sum` (SSIM per example as
workloads/fastmri/ssim.py defines it), `loss_sum` (the mean absolute error over the pixels of
each example, on the normalised images as the training loss) and `num_examples`.
"""

from __future__ import annotations

from algoperf.metrics import MeanOfSums

METRICS = (
    MeanOfSums(name="ssim", total="ssim_sum"),
    MeanOfSums(name="loss", total="loss_sum"),
)
"""Both over `num_examples`, the split's real examples (upstream divides by the split size)."""
