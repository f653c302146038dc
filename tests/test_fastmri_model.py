"""fastMRI's SSIM and U-Net (docs/workloads.md, "fastmri"), what is specific to them.

SSIM: the numpy reference (workloads/fastmri/ssim.py) against scikit-image's
`structural_similarity` with the same settings on varied image pairs (noise, a smoothed phantom
and its noisy reconstruction, real photographs, odd and non-square sizes, the 7x7 minimum,
constant images, large offsets, identical and inverted pairs), and how the border crop and the
clipping relate to scikit-image's; the float32 torch and JAX versions against it, normalised at
real slices' scale; the eval outputs' sums over real rows and the L1 loss's contract.

U-Net: sizes the pools do not divide in both frameworks with the same weights, InstanceNorm as
torch's, channel-wise dropout, lecun-normal init of every conv. Counts and types of every
variant, init / forward / loss / backward, the dropout contract and torch <-> JAX parity are in
the registry suite (tests/test_workload_registry.py, from workloads/fastmri/testing.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data as skimage_data
from skimage.metrics import structural_similarity as skimage_ssim
from skimage.transform import resize

from algoperf.workloads.fastmri import ssim

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


# --- the torch and JAX SSIM, loss and eval outputs --------------------------------------------
def normalised_batch(seed: int = 0) -> dict[str, np.ndarray]:
    """Every image pair above (cropped to 24x28: each holds at least that) as a batch the
    pipeline would give: normalised by the target's own mean and std, the raw scale of real
    slices (mean and std ~1e-5) on some rows and of the photographs on others, and a padding
    row (zeros, std and volume_max 1, weight 0)."""
    rng = np.random.default_rng(seed)
    rows = {key: [] for key in ("outputs", "targets", "mean", "std", "volume_max")}
    for index, (x, y, data_range) in enumerate(PAIRS.values()):
        if min(x.shape) < 24:
            x, y = np.resize(x, (24, 28)), np.resize(y, (24, 28))  # tile the small ones
        x, y = x[:24, :28], y[:24, :28]
        raw_scale = 1e-5 / max(np.abs(y).max(), 1e-12) if index % 2 else 1.0
        x, y, data_range = x * raw_scale, y * raw_scale, data_range * raw_scale
        mean, std = y.mean(), y.std() or 1.0
        rows["outputs"].append(np.clip((x - mean) / std, -6, 6))
        rows["targets"].append(np.clip((y - mean) / std, -6, 6))
        rows["mean"].append(mean)
        rows["std"].append(std)
        rows["volume_max"].append(data_range)
    rows = {key: np.asarray(value) for key, value in rows.items()}
    padding = {"outputs": 0.0, "targets": 0.0, "mean": 0.0, "std": 1.0, "volume_max": 1.0}
    batch = {
        key: np.concatenate([rows[key], np.full_like(rows[key][:1], padding[key])]) for key in rows
    }
    batch["weights"] = np.r_[np.ones(len(PAIRS)), 0.0]
    batch["outputs"][-1] = rng.normal(size=(24, 28))  # a padding row's output is not 0
    return {key: value.astype(np.float32) for key, value in batch.items()}


def framework_ssim(framework: str, batch: dict) -> np.ndarray:
    args = [batch[k] for k in ("outputs", "targets", "mean", "std", "volume_max")]
    if framework == "pytorch":
        import torch

        from algoperf.workloads.fastmri import model_torch

        return model_torch.ssim_per_example(*map(torch.from_numpy, args)).numpy()
    import jax

    from algoperf.workloads.fastmri import model_jax

    return np.asarray(jax.jit(model_jax.ssim_per_example)(*args))


FRAMEWORKS = ("pytorch", "jax")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_framework_ssim_is_the_reference(framework):
    """float32 on the device against the float64 reference (= scikit-image) on every pair above,
    normalised, at real slices' raw scale (1e-5) and at the photographs' (255); measured on a
    2-core x86 CPU: at most 5.4e-7 apart in either framework. SSIM is computed from the images
    less their shared mean; from the de-normalised images, as upstream computes it, float32
    cancellation puts the 1e4-offset pair 2e-4 off."""
    batch = normalised_batch()
    expected = ssim.ssim_per_example(
        *(batch[k].astype(np.float64) for k in ("outputs", "targets", "mean", "std", "volume_max"))
    )
    got = framework_ssim(framework, batch)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=5e-6)


def eval_outputs(framework: str, batch: dict) -> dict[str, float]:
    logits, inputs = batch["outputs"], {**batch, "targets": batch["targets"]}
    if framework == "pytorch":
        import torch

        from algoperf.workloads.fastmri import model_torch

        tensors = {k: torch.from_numpy(v) for k, v in inputs.items()}
        out = model_torch.fastmri_eval_outputs(torch.from_numpy(logits), tensors)
        return {k: float(v) for k, v in out.items()}
    import jax

    from algoperf.workloads.fastmri import model_jax

    out = jax.jit(model_jax.fastmri_eval_outputs)(logits, inputs)
    return {k: float(v) for k, v in out.items()}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_eval_outputs_sum_over_real_rows(framework):
    """ssim_sum and loss_sum add each real row's SSIM and mean absolute error (on the
    normalised images), num_examples counts real rows; a padding row adds exactly nothing,
    even with a NaN output."""
    batch = normalised_batch()
    real = batch["weights"] > 0
    keys = ("outputs", "targets", "mean", "std", "volume_max")
    values = ssim.ssim_per_example(*(batch[k][real].astype(np.float64) for k in keys))
    errors = np.abs(batch["outputs"] - batch["targets"]).astype(np.float64).mean((1, 2))[real]
    batch["outputs"][-1, 3, 4] = np.nan
    got = eval_outputs(framework, batch)
    assert got["num_examples"] == real.sum()
    assert got["ssim_sum"] == pytest.approx(values.sum(), abs=1e-5)
    assert got["loss_sum"] == pytest.approx(errors.sum(), rel=1e-6)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_loss_contract(framework):
    """Per example the mean |output - target| over its pixels; masked rows 0 and not counted;
    without a mask every row counts."""
    rng = np.random.default_rng(2)
    targets, logits = rng.normal(size=(2, 3, 9, 10)).astype(np.float32)
    mask = np.asarray([1.0, 0.0, 1.0], np.float32)
    expected = np.abs(logits - targets).astype(np.float64).mean((1, 2))
    if framework == "pytorch":
        import torch

        from algoperf.workloads.fastmri import model_torch

        def loss(*args):
            out = model_torch.l1_loss(*map(torch.from_numpy, args))
            return {k: v.numpy() for k, v in out.items()}
    else:
        from algoperf.workloads.fastmri import model_jax

        def loss(*args):
            return {k: np.asarray(v) for k, v in model_jax.l1_loss(*args).items()}

    masked, unmasked = loss(targets, logits, mask), loss(targets, logits)
    np.testing.assert_allclose(masked["per_example"], expected * mask, rtol=1e-6)
    assert masked["summed"] == pytest.approx((expected * mask).sum(), rel=1e-6)
    assert masked["n_valid_examples"] == 2.0
    np.testing.assert_allclose(unmasked["per_example"], expected, rtol=1e-6)
    assert unmasked["n_valid_examples"] == 3.0


# --- the U-Net ----------------------------------------------------------------------------------
def torch_unet(seed: int = 0, **kwargs):
    import torch

    from algoperf.workloads.fastmri import model_torch, testing

    torch.manual_seed(seed)
    model = model_torch.UNet(**{**testing.TINY, **kwargs})
    testing.randomize_(model, seed)
    return model


def jax_forward(model, inputs: np.ndarray, **kwargs) -> np.ndarray:
    """The flax U-Net with the torch model's weights (the registry suite's weight map)."""
    import jax

    from algoperf.workloads.fastmri import model_jax, testing

    variables = testing.TESTS.torch_to_flax(model)
    flax_model = model_jax.UNet(**{**testing.TINY, **kwargs})
    with jax.default_matmul_precision("highest"):
        return np.asarray(jax.jit(flax_model.apply)(variables, inputs))


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(33, 33), (17, 22), (32, 16)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_any_size_in_both_frameworks(shape):
    """Sizes that the pools do not divide (both pads, the right column only, none): the output
    has the input's size and the frameworks agree (reflect padding at the same side)."""
    import torch

    model = torch_unet(activation="tanh", use_layer_norm=True).eval()
    inputs = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(inputs)).numpy()
    got = jax_forward(model, inputs, activation="tanh", use_layer_norm=True)
    assert expected.shape == got.shape == (2, *shape)
    assert np.abs(got - expected).max() < 1e-5 * np.abs(expected).max()


def test_instance_norm_is_torchs():
    import torch
    import torch.nn.functional as F

    from algoperf.workloads.fastmri import model_torch

    x = torch.randn(3, 5, 9, 7) * 4 + 2
    torch.testing.assert_close(model_torch.instance_norm(x), F.instance_norm(x, eps=1e-5))
    channels_last = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(model_torch.instance_norm(channels_last), F.instance_norm(x))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_dropout_drops_whole_channels(framework):
    """Dropout2d after each activation of a ConvBlock: in TRAIN mode a channel of an example is
    zero everywhere or nowhere, about `rate` of them dropped."""
    rate, batch, channels = 0.5, 8, 16
    inputs = np.random.default_rng(0).normal(size=(batch, 12, 12, 3)).astype(np.float32)
    if framework == "pytorch":
        import torch

        from algoperf.workloads.fastmri import model_torch

        torch.manual_seed(0)
        block = model_torch.ConvBlock(3, channels, "leaky_relu", False).train()
        with torch.no_grad():
            out = block(torch.from_numpy(inputs).permute(0, 3, 1, 2), rate)
        planes = out.numpy().reshape(batch * channels, -1)
    else:
        import jax

        from algoperf.workloads.fastmri import model_jax

        block = model_jax.ConvBlock(channels, "leaky_relu", False)
        variables = block.init(jax.random.PRNGKey(0), inputs, False, 0.0)
        out = block.apply(variables, inputs, True, rate, rngs={"dropout": jax.random.PRNGKey(1)})
        planes = np.asarray(out).transpose(0, 3, 1, 2).reshape(batch * channels, -1)
    zero = (planes == 0).all(axis=1)
    assert ((planes != 0).mean(axis=1)[~zero] > 0.5).all()  # kept planes: LeakyReLU is not 0
    assert 0.3 < zero.mean() < 0.7


@pytest.mark.slow
def test_init_is_lecun_normal_in_both_frameworks():
    """Every conv kernel: std sqrt(1 / fan_in), fan_in = kernel area x input channels (the
    transposed convs too), truncated at 2 std; the output bias 0."""
    import jax
    import jax.numpy as jnp
    import torch

    from algoperf.workloads.fastmri import model_jax, model_torch

    sizes = {"num_channels": 16, "num_pool_layers": 2}
    torch.manual_seed(0)
    torch_model = model_torch.UNet(**sizes)
    kernels = {}
    for name, param in torch_model.named_parameters():
        if name.endswith("weight"):
            value = param.detach().numpy()
            if "up_transpose" in name:  # [in, out, kh, kw]
                fan_in = value.shape[0] * value.shape[2] * value.shape[3]
            else:  # [out, in, kh, kw]
                fan_in = value[0].size
            kernels[f"torch {name}"] = (value, fan_in)
    with jax.threefry_partitionable(False):  # compiles faster on a CPU; any draws will do
        variables = model_jax.UNet(**sizes).init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8)))
    for path, value in jax.tree_util.tree_leaves_with_path(variables["params"]):
        name = "/".join(str(k.key) for k in path)
        if name.endswith("kernel"):  # [kh, kw, in, out]
            kernels[f"jax {name}"] = (np.asarray(value), int(np.prod(value.shape[:-1])))
    assert len(kernels) == 2 * 13  # 2 pools: 4 + 2 + 4 convs, 2 transposed, the output conv
    for name, (value, fan_in) in kernels.items():
        std = np.sqrt(1.0 / fan_in)
        assert np.abs(value).max() <= 2 * std / 0.87962566103423978 + 1e-7, name
        if value.size >= 2000:  # enough draws for a 10% check
            assert value.std() == pytest.approx(std, rel=0.1), name
    assert not torch_model.output_conv.bias.detach().numpy().any()
    assert not np.asarray(variables["params"]["output_conv"]["bias"]).any()
