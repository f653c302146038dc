"""imagenet_vit's RandAugment and mixup (workloads/imagenet/augment.py, docs/workloads.md): each
op's effect, determinism, the per-step mixup lambda, the ViT train stream on the fixture JPEG tree
against ResNet's plain one, and the loss on mixed (soft) targets in both frameworks.
"""

from __future__ import annotations

import imagenet_fixture as fixture
import numpy as np
import pytest
import torch
from PIL import Image

from algoperf import rng as np_rng
from algoperf import spec, workloads
from algoperf.data.loader import worker_batches
from algoperf.data.sharding import Shard
from algoperf.torch.workload import to_torch
from algoperf.workloads.imagenet import augment
from algoperf.workloads.imagenet import input_pipeline as pipeline

SIZE = 16  # model input side on the fixture tree
BATCH = 4
SEED = 7
GRAY = 128


def random_image(seed: int = 0, width: int = 32, height: int = 24, low=40, high=200) -> Image:
    """Non-square (a swapped size shows) RGB noise in [low, high): every op changes it."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(low, high, (height, width, 3), np.uint8), "RGB")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, np.int64)


# --- the 16 ops ------------------------------------------------------------------------------
def test_the_sixteen_ops_of_the_spec():
    assert set(augment.OP_NAMES) == {
        "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color",
        "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY",
        "Cutout", "SolarizeAdd",
    }  # fmt: skip


@pytest.mark.parametrize("name", augment.OP_NAMES)
def test_each_op_keeps_size_and_mode_and_changes_the_image(name):
    image = random_image()
    out = augment.apply_op(image, name, np.random.default_rng(0))
    assert out.size == image.size and out.mode == "RGB"
    if name == "Solarize":  # threshold 256 at magnitude 10: no pixel reaches it (upstream's value)
        assert np.array_equal(pixels(out), pixels(image))
    else:
        assert not np.array_equal(pixels(out), pixels(image))
    assert np.array_equal(pixels(image), pixels(random_image()))  # the input is not modified


def test_op_values_at_magnitude_10():
    image = Image.fromarray(np.array([[[100, 127, 128], [200, 0, 255]]], np.uint8), "RGB")
    rng = np.random.default_rng(0)
    # SolarizeAdd: +110 below 128, clipped to 255.
    out = pixels(augment.apply_op(image, "SolarizeAdd", rng))
    assert out.tolist() == [[[210, 237, 128], [200, 110, 255]]]
    # Posterize keeps the 4 high bits.
    out = pixels(augment.apply_op(image, "Posterize", rng))
    assert out.tolist() == [[[96, 112, 128], [192, 0, 240]]]
    assert pixels(augment.apply_op(image, "Invert", rng)).tolist() == [
        [[155, 128, 127], [55, 255, 0]]
    ]
    # Enhance factor 1.9: Brightness scales every pixel by 1.9 (clipped).
    out = pixels(augment.apply_op(image, "Brightness", rng))
    assert np.abs(out - np.minimum(255, pixels(image) * 1.9)).max() <= 1


def test_cutout_is_a_gray_box_of_side_80():
    big = random_image(width=200, height=160)
    for seed in range(5):
        out = pixels(augment.apply_op(big, "Cutout", np.random.default_rng(seed)))
        gray = np.all(out == GRAY, axis=-1)
        rows, cols = np.nonzero(gray)
        # A box of side 80 (less where it meets an edge), and nothing gray outside it.
        assert rows.max() - rows.min() + 1 <= 80 and cols.max() - cols.min() + 1 <= 80
        assert gray.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert gray.sum() >= 40 * 40
    assert np.all(
        pixels(augment.apply_op(random_image(), "Cutout", np.random.default_rng(0))) == GRAY
    )


@pytest.mark.parametrize("name", ["Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"])
def test_geometric_ops_use_nearest_and_gray_fill_and_both_signs(name):
    """On a black/white image, NEAREST and fill 128 leave only 0, 255 and 128; each draw is the
    op at +value or at -value (negated with probability 1/2), and both come up."""
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.choice([0, 255], (64, 64, 3)).astype(np.uint8), "RGB")
    op, value_at, signed = augment.OPS[name]
    assert signed
    value = value_at(0.2)
    assert value > 0
    plus, minus = (pixels(op(image, v, None)) for v in (value, -value))
    assert not np.array_equal(plus, minus)
    seen = set()
    for seed in range(12):
        out = pixels(augment.apply_op(image, name, np.random.default_rng(seed), magnitude=2))
        assert set(np.unique(out)) <= {0, GRAY, 255}
        assert np.all(out == GRAY, axis=-1).any()
        assert np.array_equal(out, plus) or np.array_equal(out, minus)
        seen.add(np.array_equal(out, plus))
    assert seen == {True, False}


def test_rand_augment_is_deterministic_per_rng_and_changes_the_image():
    image = random_image(width=240, height=200)  # big enough that a shift or cutout leaves some
    outs = [pixels(augment.rand_augment(image, np.random.default_rng(s))) for s in range(12)]
    again = [pixels(augment.rand_augment(image, np.random.default_rng(s))) for s in range(12)]
    assert all(np.array_equal(a, b) for a, b in zip(outs, again, strict=True))
    changed = [not np.array_equal(o, pixels(image)) for o in outs]
    assert sum(changed) >= 11  # only two Solarize draws (p = 1/256) keep it
    assert len({o.tobytes() for o in outs}) >= 10
    assert all(o.shape == pixels(image).shape for o in outs)


def test_rand_augment_draws_two_ops_uniformly(monkeypatch):
    calls = []
    real = augment.apply_op
    monkeypatch.setattr(
        augment,
        "apply_op",
        lambda image, name, rng, m: calls.append((name, m)) or real(image, name, rng, m),
    )
    for seed in range(400):
        augment.rand_augment(random_image(width=8, height=8), np.random.default_rng(seed))
    assert len(calls) == 800 and {m for _, m in calls} == {10}
    counts = np.array([sum(n == name for n, _ in calls) for name in augment.OP_NAMES])
    assert counts.min() >= 25 and counts.max() <= 80  # 50 expected each


# --- mixup -----------------------------------------------------------------------------------
def test_mixup_lambda_is_one_per_step_and_seed():
    lams = [augment.mixup_lambda(SEED, step) for step in range(200)]
    assert lams[:5] == [augment.mixup_lambda(SEED, step) for step in range(5)]
    assert lams[0] != augment.mixup_lambda(SEED + 1, 0)
    assert len(set(lams)) == 200 and all(0.0 <= lam <= 1.0 for lam in lams)
    # Beta(0.2, 0.2): mean 1/2, variance 1/(4 * 1.4) ~ 0.18, mostly near 0 or 1.
    assert abs(np.mean(lams) - 0.5) < 0.1 and abs(np.var(lams) - 0.1786) < 0.05


def test_mixup_mixes_with_the_batch_rolled_by_one():
    batch = pipeline.fake_batch(5, layout="NCHW", seed=2, image_size=8)
    batch["weights"][-1] = 0.0
    lam = 0.3
    mixed = augment.mixup(batch, lam)
    x = batch["inputs"]
    np.testing.assert_allclose(
        mixed["inputs"], lam * x + (1 - lam) * np.roll(x, 1, axis=0), rtol=1e-6, atol=1e-6
    )
    assert mixed["inputs"].dtype == np.float32
    targets = mixed["targets"]
    assert targets.shape == (5, 1000) and targets.dtype == np.float32
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    labels, previous = batch["targets"], np.roll(batch["targets"], 1)
    for row in range(5):
        expected = np.zeros(1000, np.float32)
        expected[labels[row]] += lam
        expected[previous[row]] += 1 - lam
        np.testing.assert_allclose(targets[row], expected, rtol=1e-6)
    assert np.array_equal(mixed["weights"], batch["weights"])
    assert batch["targets"].ndim == 1  # the input batch is left as it was


# --- the train streams on the fixture tree ---------------------------------------------------
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return fixture.make_imagenet_tree(tmp_path_factory.mktemp("imagenet_tree"), 4, 4, size=40)


def stream(name, data_dir, split="train", *, framework="pytorch", shard=None, start=0, n=3,
           num_workers=0, batch_size=BATCH):  # fmt: skip
    workload = workloads.load(name, framework, image_size=SIZE, num_workers=num_workers)
    batches = workload.numpy_batches(
        split, str(data_dir), batch_size, SEED, shard or Shard(), start_step=start
    )
    return [next(batches) for _ in range(n)] if split == "train" else list(batches)


def plain_stream(data_dir, *, augment_fn=None, shard=None, start=0, n=3, layout="NCHW"):
    """The crop-and-flip stream with `augment_fn` per image and no mixup, from the pipeline's
    parts (its options offer crop_flip or randaugment_mixup only)."""
    files = pipeline.load_splits(str(data_dir)).train
    sampler = pipeline.TrainBatches(len(files), BATCH, SEED, shard or Shard(), start)
    images = pipeline.DecodedImages(files, SIZE, train=True, seed=SEED, augment=augment_fn)
    batches = worker_batches(images, sampler, pipeline.Collate(layout), num_workers=0)
    return [next(batches) for _ in range(n)]


def assert_mixed(mixed, unmixed, step):
    """`mixed` is `unmixed` after mixup with the step's lambda."""
    expected = augment.mixup(unmixed, augment.mixup_lambda(SEED, step))
    np.testing.assert_allclose(mixed["inputs"], expected["inputs"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(mixed["targets"], expected["targets"], rtol=1e-6, atol=1e-7)


def test_vit_train_stream_is_randaugment_then_mixup_and_resnet_stays_plain(data_dir):
    vit = stream("imagenet_vit", data_dir)
    resnet = stream("imagenet_resnet", data_dir)
    plain = plain_stream(data_dir)
    augmented = plain_stream(data_dir, augment_fn=augment.rand_augment)
    for step, (v, r, p, a) in enumerate(zip(vit, resnet, plain, augmented, strict=True)):
        for key in ("inputs", "targets", "weights"):
            assert np.array_equal(r[key], p[key])  # ResNet: crop and flip only
        assert r["targets"].dtype == np.int64 and r["targets"].shape == (BATCH,)
        assert v["targets"].dtype == np.float32 and v["targets"].shape == (BATCH, 1000)
        np.testing.assert_allclose(v["targets"].sum(axis=1), 1.0, rtol=1e-6)
        assert not np.allclose(v["inputs"], r["inputs"])
        assert not np.array_equal(a["inputs"], p["inputs"])  # RandAugment changed the images
        assert np.array_equal(a["targets"], p["targets"])  # same images, same order
        assert_mixed(v, a, step)


def test_vit_train_stream_resumes_and_every_rank_uses_the_steps_lambda(data_dir):
    full = stream("imagenet_vit", data_dir, n=4)
    resumed = stream("imagenet_vit", data_dir, start=2, n=2)
    for a, b in zip(full[2:], resumed, strict=True):
        assert all(np.array_equal(a[k], b[k]) for k in a)
    for rank in range(2):
        shard = Shard(rank, 2)
        local = stream("imagenet_vit", data_dir, shard=shard, n=2)
        unmixed = plain_stream(data_dir, augment_fn=augment.rand_augment, shard=shard, n=2)
        for step, (v, a) in enumerate(zip(local, unmixed, strict=True)):
            assert v["targets"].shape == (BATCH // 2, 1000)
            # The local rows, rolled among themselves, with the same lambda as on one rank.
            assert_mixed(v, a, step)


def test_vit_stream_is_the_same_in_worker_processes_and_in_jax_layout(data_dir):
    in_process = stream("imagenet_vit", data_dir, n=2)
    workers = stream("imagenet_vit", data_dir, n=2, num_workers=1)
    jax_layout = stream("imagenet_vit", data_dir, framework="jax", n=2)
    for a, b, c in zip(in_process, workers, jax_layout, strict=True):
        assert all(np.array_equal(a[k], b[k]) for k in a)
        np.testing.assert_array_equal(a["inputs"].transpose(0, 2, 3, 1), c["inputs"])
        np.testing.assert_array_equal(a["targets"], c["targets"])


@pytest.mark.parametrize("split", ["validation", "eval_train", "test"])
def test_vit_eval_batches_are_plain_with_integer_targets(data_dir, split):
    vit = stream("imagenet_vit", data_dir, split)
    resnet = stream("imagenet_resnet", data_dir, split)
    assert len(vit) == len(resnet) > 0
    for v, r in zip(vit, resnet, strict=True):
        assert v["targets"].dtype == np.int64 and v["targets"].ndim == 1
        assert all(np.array_equal(v[k], r[k]) for k in ("inputs", "targets", "weights"))


# --- the loss on soft targets -----------------------------------------------------------------
def as_jax(batch: dict) -> dict:
    import jax.numpy as jnp

    return {key: jnp.asarray(value) for key, value in batch.items()}


def test_loss_on_mixed_targets_is_finite_and_the_same_in_both_frameworks():
    import jax.numpy as jnp

    numpy_batch = augment.mixup(
        pipeline.fake_batch(BATCH, layout="NCHW", seed=3, image_size=32), 0.7
    )
    workload = workloads.load("imagenet_vit", "pytorch", model_kwargs={"depth": 1}, image_size=32)
    model, _ = workload.init_model_fn(np_rng.prng_key(0))
    torch.nn.init.normal_(model.head.weight, std=0.1)
    batch = to_torch(numpy_batch, torch.device("cpu"))
    assert batch["targets"].dtype == torch.float32
    logits, _ = workload.model_fn(model, batch, None, spec.ForwardPassMode.TRAIN, None, True)
    loss = workload.loss_fn(batch["targets"], logits, batch["weights"])
    value = loss["summed"] / loss["n_valid_examples"]
    assert torch.isfinite(value)
    value.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    # The soft-target cross-entropy, by hand; and it is not the loss of either label alone.
    log_probs = torch.log_softmax(logits.detach(), dim=-1)
    by_hand = -(batch["targets"] * log_probs).sum(-1)
    torch.testing.assert_close(loss["per_example"].detach(), by_hand)
    hard = workload.loss_fn(batch["targets"].argmax(-1), logits.detach())["per_example"]
    assert not torch.allclose(hard, by_hand)
    # JAX's loss on the same logits and targets (with and without label smoothing).
    jax_workload = workloads.load("imagenet_vit", "jax", model_kwargs={"depth": 1}, image_size=32)
    logits_np = logits.detach().numpy()
    for smoothing in (0.0, 0.1):
        torch_loss = workload.loss_fn(
            batch["targets"], logits.detach(), batch["weights"], smoothing
        )
        jax_loss = jax_workload.loss_fn(
            jnp.asarray(numpy_batch["targets"]), jnp.asarray(logits_np),
            jnp.asarray(numpy_batch["weights"]), smoothing,
        )  # fmt: skip
        np.testing.assert_allclose(
            np.asarray(jax_loss["per_example"]), torch_loss["per_example"].numpy(), rtol=1e-5
        )
        assert float(jax_loss["n_valid_examples"]) == BATCH
    # Eval metrics still take integer targets (and agree with soft one-hot rows).
    int_batch = pipeline.fake_batch(BATCH, layout="NHWC", seed=3, image_size=32)
    soft_batch = dict(int_batch, targets=augment.soft_targets(int_batch["targets"]))
    jax_int = jax_workload.eval_outputs(jnp.asarray(logits_np), as_jax(int_batch))
    jax_soft = jax_workload.eval_outputs(jnp.asarray(logits_np), as_jax(soft_batch))
    torch_int = workload.eval_outputs(logits.detach(), to_torch(int_batch, torch.device("cpu")))
    for key in ("correct", "loss_sum", "num_examples"):
        np.testing.assert_allclose(float(jax_int[key]), float(torch_int[key]), rtol=1e-5)
        np.testing.assert_allclose(float(jax_soft[key]), float(jax_int[key]), rtol=1e-5)
