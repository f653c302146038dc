"""fastMRI's SSIM and U-Net (docs/workloads.md, "fastmri"), what is specific to them.

SSIM: the numpy reference (workloads/fastmri/ssim.py) against scikit-image's
`structural_similarity` with the same settings on varied image pairs (noise, a smoothed phantom
and its noisy reconstruction, real photographs, odd and non-square sizes, the 7x7 minimum,
constant images, large offsets, identical and inverted pairs), and how the border crop and the
clipping relate to scikit-image's.
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data as skimage_data
from skimage.metrics import structural_similarity as skimage_ssim
from skimage.transform import resize

from workloads.fastmri import ssim

SKIMAGE_SETTINGS = {
    "win_size": 7,
    "gaussian_weights": False,
    "use_sample_covariance": True,
    "K1": 0.01,
    "K2": 0.03,
}


def reference_ssim(x: np.ndarray, y: np.ndarray, data_range: float, **kwargs):
    return skimage_ssim(x, y, data_range=data_range, **SKIMAGE_SETTINGS, **kwargs)


def smooth(image: np.ndarray, passes: int = 2) -> np.ndarray:
    """A cheap blur (3x3 box, `passes` times, edges repeated)."""
    for _ in range(passes):
        padded = np.pad(image, 1, mode="edge")
        image = (
            sum(
                padded[i : i + image.shape[0], j : j + image.shape[1]]
                for i in range(3)
                for j in range(3)
            )
            / 9.0
        )
    return image


def image_pairs() -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Name -> (image, reconstruction, data_range): float64, varied sizes and statistics."""
    rng = np.random.default_rng(0)
    phantom = resize(skimage_data.shepp_logan_phantom(), (96, 96), anti_aliasing=True)
    camera = skimage_data.camera().astype(np.float64)[::4, ::4]  # 128x128, 0..255
    moon = skimage_data.moon().astype(np.float64)[100:181, 37:140]  # 81x103, odd
    pairs = {
        "noise": (rng.normal(size=(32, 32)), rng.normal(size=(32, 32)), 8.0),
        "phantom_noisy": (phantom, phantom + 0.05 * rng.normal(size=phantom.shape), 1.0),
        "phantom_blurred": (phantom, smooth(phantom), float(phantom.max())),
        "camera_jpeg_like": (camera, np.round(smooth(camera, 1) / 16) * 16, 255.0),
        "moon_odd_size": (moon, moon + rng.normal(0, 10, moon.shape), 255.0),
        "non_square": (rng.random((20, 45)), smooth(rng.random((20, 45)), 1), 1.0),
        "smallest": (rng.random((7, 7)), rng.random((7, 7)), 1.0),  # one window
        "constant_vs_noise": (np.full((16, 16), 3.0), 3.0 + rng.normal(0, 0.1, (16, 16)), 4.0),
        "offset_1e4": (1e4 + phantom, 1e4 + smooth(phantom), 1e4 + 1.0),
        "small_range": (phantom * 1e-3, smooth(phantom) * 1e-3, 1e-3),
        "inverted": (phantom, 1.0 - phantom, 1.0),
    }
    return pairs


PAIRS = image_pairs()


@pytest.mark.parametrize("name", list(PAIRS))
def test_numpy_ssim_is_scikit_image_ssim(name):
    x, y, data_range = PAIRS[name]
    expected = reference_ssim(x, y, data_range)
    assert ssim.structural_similarity(x, y, data_range) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("name", ["phantom_noisy", "moon_odd_size", "non_square"])
def test_valid_windows_are_scikit_image_map_without_its_border(name):
    """scikit-image filters a symmetrically padded image and drops 3 px at each border before
    averaging: what is left is exactly the map of the windows wholly inside the image (the
    padding never reaches the mean), which is all that ssim.py computes."""
    x, y, data_range = PAIRS[name]
    _, full_map = reference_ssim(x, y, data_range, full=True)
    border = ssim.BORDER
    interior = full_map[border:-border, border:-border]
    np.testing.assert_allclose(ssim.ssim_map(x, y, data_range), interior, rtol=0, atol=1e-12)
    # The dropped border differs from the interior's values: the crop matters.
    assert not np.allclose(full_map[0], full_map[border])


def test_identical_and_inverted_images_and_the_clip():
    """SSIM is 1 for identical images and -1 at the least for an image and its negative
    (|SSIM| <= 1: Cauchy-Schwarz bounds both factors), so the clip to [-1, 1] is a no-op in
    exact arithmetic; upstream clips float32 rounding and cancellation, and so does the workload.
    A pattern of period 7 and zero sum has mean 0 in every window: its negative scores ~-1."""
    x = PAIRS["phantom_noisy"][1]
    assert ssim.structural_similarity(x, x, 1.0) == pytest.approx(1.0, abs=1e-15)
    period = np.array([3.0, -1.0, -1.0, -1.0, 2.0, -1.0, -1.0])
    pattern = np.outer(np.tile(period, 4), np.tile(period[::-1], 5))  # 28x35
    inverted = ssim.structural_similarity(pattern, -pattern, 1.0)
    assert inverted == pytest.approx(reference_ssim(pattern, -pattern, 1.0), abs=1e-12)
    assert -1.0 <= inverted < -0.999
    values = ssim.ssim_per_example(
        np.stack([x[:24, :24], pattern[:24, :24]]),
        np.stack([x[:24, :24], -pattern[:24, :24]]),
        np.zeros(2),
        np.ones(2),
        np.ones(2),
    )
    assert values[0] == 1.0 and -1.0 <= values[1] < -0.999


def test_per_example_ssim_denormalises_and_replaces_a_zero_range():
    """ssim_per_example reads normalised images: SSIM of (x·std + mean, y·std + mean) with
    data_range = volume_max, or 1 where volume_max is 0 (padding rows)."""
    rng = np.random.default_rng(1)
    images = rng.normal(size=(3, 2, 24, 24))
    outputs, targets = images[:, 0], images[:, 1] * 0.5 + 0.5 * images[:, 0]
    mean, std = np.array([2.0, -1.0, 0.0]), np.array([3.0, 0.5, 1.0])
    volume_max = np.array([20.0, 5.0, 0.0])
    got = ssim.ssim_per_example(outputs, targets, mean, std, volume_max)
    for row in range(3):
        x = outputs[row] * std[row] + mean[row]
        y = targets[row] * std[row] + mean[row]
        data_range = volume_max[row] or 1.0
        assert got[row] == pytest.approx(reference_ssim(x, y, data_range), abs=1e-12)


def test_too_small_images_are_refused():
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim.structural_similarity(np.zeros((6, 30)), np.zeros((6, 30)), 1.0)
