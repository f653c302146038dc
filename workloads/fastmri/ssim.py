"""fastMRI's SSIM (docs/workloads.md, "fastmri"), the float64 numpy reference of the torch and
JAX versions in model_torch.py and model_jax.py (framework-free, so the metric's definition is
readable and testable on its own; tests/test_fastmri_model.py checks it equal to scikit-image's
`structural_similarity` with the same settings).

Per example, on the de-normalised images X = output·std + mean and Y = target·std + mean:
local means, variances and the covariance over every 7x7 window (uniform weights, variances and
covariance × 49/48, the sample estimate), c1 = (0.01·L)², c2 = (0.03·L)² with L = volume_max
(1 where it is 0: padding rows),

    s = (2·μx·μy + c1)(2·σxy + c2) / ((μx² + μy² + c1)(σx² + σy² + c2)),

averaged over the windows that lie wholly inside the image, then clipped to [-1, 1].

The windows wholly inside the image are the centres 3 px or more from every border: upstream
(and scikit-image) filter a symmetrically padded image and then drop those 3 px, so the padding
never reaches the average; computing only the valid windows gives the same number without it.
SSIM's variances and covariance do not change when both images shift by the same constant, so
the torch and JAX versions compute them from output·std and target·std and add `mean` to the
two local means only: the same value with less float32 cancellation than from X and Y.
"""

from __future__ import annotations

import numpy as np

WINDOW = 7
"""Side of the uniform window."""
K1, K2 = 0.01, 0.03
COV_NORM = WINDOW**2 / (WINDOW**2 - 1)
"""Sample covariance: the window mean of products, × 49/48."""
BORDER = (WINDOW - 1) // 2
"""Pixels dropped at each border: centres nearer the border see the padding."""


def check_image_size(height: int, width: int) -> None:
    if height < WINDOW or width < WINDOW:
        raise ValueError(
            f"SSIM needs images of at least {WINDOW}x{WINDOW} pixels, got {height}x{width}; "
            "use a larger image_size."
        )


def window_means(image: np.ndarray) -> np.ndarray:
    """The mean over every 7x7 window wholly inside `image` [H, W] -> [H-6, W-6]."""
    windows = np.lib.stride_tricks.sliding_window_view(image, (WINDOW, WINDOW))
    return windows.mean(axis=(-2, -1))


def ssim_map(x: np.ndarray, y: np.ndarray, data_range: float) -> np.ndarray:
    """The SSIM of every valid window of two images [H, W] (float64), [H-6, W-6]."""
    check_image_size(*x.shape)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    mu_x, mu_y = window_means(x), window_means(y)
    var_x = COV_NORM * (window_means(x * x) - mu_x * mu_x)
    var_y = COV_NORM * (window_means(y * y) - mu_y * mu_y)
    cov_xy = COV_NORM * (window_means(x * y) - mu_x * mu_y)
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return numerator / denominator


def structural_similarity(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """Mean SSIM of two images [H, W] over the valid windows (not clipped): scikit-image's
    `structural_similarity(x, y, win_size=7, gaussian_weights=False,
    use_sample_covariance=True, K1=0.01, K2=0.03, data_range=data_range)`."""
    return float(ssim_map(x, y, data_range).mean())


def ssim_per_example(
    outputs: np.ndarray,
    targets: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    volume_max: np.ndarray,
) -> np.ndarray:
    """The workload's SSIM of each example of a batch: outputs and targets [B, H, W] normalised
    as the pipeline gives them, mean, std and volume_max [B]; returns [B] float64 in [-1, 1]."""
    values = []
    for output, target, m, s, v in zip(outputs, targets, mean, std, volume_max):
        data_range = float(v) if v != 0 else 1.0
        x = np.asarray(output, np.float64) * float(s) + float(m)
        y = np.asarray(target, np.float64) * float(s) + float(m)
        values.append(structural_similarity(x, y, data_range))
    return np.clip(np.asarray(values, np.float64), -1.0, 1.0)
