"""fastMRI's data: prepare from release-format archives, the undersampling mask, the example
construction on a real phantom, and the index rules (ranks, resume, workers)."""

from __future__ import annotations

import io
import itertools
import json
import math
import pathlib
import shutil
import tarfile

import numpy as np
import pytest

from algoperf.data.sharding import Shard
from algoperf.workloads.fastmri import fixture, prepare
from algoperf.workloads.fastmri import input_pipeline as pipeline


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> pathlib.Path:
    return fixture.write_fixture(tmp_path_factory.mktemp("fastmri"))


@pytest.fixture(scope="module")
def dataset(data_dir):
    return pipeline.load_splits(str(data_dir))


def tiny_pipeline(**changes) -> pipeline.Pipeline:
    return pipeline.Pipeline(pipeline.Options(**{**fixture.PIPELINE_OPTIONS, **changes}))


def _prepare(tmp_path, archives, **kwargs):
    kwargs = {"expected_counts": fixture.SIZES, **kwargs}
    return prepare.prepare(
        tmp_path / "data", archives, num_validation_files=fixture.NUM_VALIDATION_FILES,
        log=lambda line: None, **kwargs,
    )  # fmt: skip


# --- prepare ---------------------------------------------------------------------------------
def test_prepare_splits_val_by_sorted_name(data_dir):
    root = data_dir / pipeline.DATASET_DIR
    manifest = json.loads((root / pipeline.MANIFEST).read_text())
    val_files = sorted(
        f"{pipeline.VAL_DIR}/{p.name}" for p in (root / pipeline.VAL_DIR).glob("*.h5")
    )
    assert [f for f, _ in manifest["validation"]] == val_files[: fixture.NUM_VALIDATION_FILES]
    assert [f for f, _ in manifest["test"]] == val_files[fixture.NUM_VALIDATION_FILES :]
    assert [n for _, n in manifest["train"]] == list(fixture.TRAIN_SLICES)
    assert [n for _, n in manifest["validation"] + manifest["test"]] == list(fixture.VAL_SLICES)
    assert {k: sum(n for _, n in v) for k, v in manifest.items()} == fixture.SIZES


def test_prepare_resumes_and_then_needs_no_archives(tmp_path):
    archives = fixture.write_release(tmp_path / "archives")
    root = tmp_path / "data" / pipeline.DATASET_DIR
    # An interrupted run: part of the train archive extracted, a half-written file left over.
    partial = root / f".tmp_{pipeline.TRAIN_DIR}"
    prepare.extract(archives / prepare.ARCHIVES[pipeline.TRAIN_DIR], partial, lambda line: None)
    first = sorted(partial.glob("*.h5"))[0]
    first.unlink()
    (partial / f".{first.name}.part").write_bytes(b"half")
    _prepare(tmp_path, archives)
    assert not partial.exists()
    assert {k: len(v) for k, v in pipeline.load_splits(str(tmp_path / "data")).items()} == (
        fixture.SIZES
    )
    shutil.rmtree(archives)
    assert _prepare(tmp_path, archives) == root  # already prepared: no archive needed
    # Folders extracted by upstream's setup (no manifest, no slice counts) are indexed in place.
    (root / pipeline.MANIFEST).unlink()
    for name in (pipeline.TRAIN_DIR, pipeline.VAL_DIR):
        (root / name / prepare.COUNTS_FILE).unlink()
    _prepare(tmp_path, archives)
    assert (root / pipeline.MANIFEST).is_file()


def test_prepare_checks_the_slice_counts(tmp_path):
    archives = fixture.write_release(tmp_path / "archives")
    wrong = {**fixture.SIZES, "test": fixture.SIZES["test"] + 1}
    with pytest.raises(ValueError, match="slices per split"):
        _prepare(tmp_path, archives, expected_counts=wrong)
    assert not (tmp_path / "data" / pipeline.DATASET_DIR / pipeline.MANIFEST).exists()


def test_missing_archives_are_one_line_errors(tmp_path, capsys):
    fixture.write_release(tmp_path / "archives")
    (tmp_path / "archives" / prepare.ARCHIVES[pipeline.VAL_DIR]).unlink()
    with pytest.raises(FileNotFoundError, match="knee_singlecoil_val.tar.xz") as error:
        _prepare(tmp_path, tmp_path / "archives")
    assert "\n" not in str(error.value) and "train.tar.xz" not in str(error.value)
    assert not (tmp_path / "data" / pipeline.DATASET_DIR).exists()  # nothing written
    code = prepare.main(["--data_dir", str(tmp_path / "data"), "--archive_dir", str(tmp_path)])
    message = capsys.readouterr().err
    assert code == 1 and message.count("\n") == 1 and "knee_singlecoil_train.tar.xz" in message


@pytest.mark.parametrize("kind", ["parent", "absolute", "symlink"])
def test_prepare_refuses_unsafe_members(tmp_path, kind):
    archives = fixture.write_release(tmp_path / "archives")
    path = archives / prepare.ARCHIVES[pipeline.TRAIN_DIR]
    member = tarfile.TarInfo({"parent": "../evil.h5", "absolute": "/tmp/evil.h5"}.get(kind, "x.h5"))
    if kind == "symlink":
        member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with tarfile.open(path, "w:xz") as tar:
        tar.addfile(member, io.BytesIO(b""))
    with pytest.raises(ValueError, match="refusing"):
        _prepare(tmp_path, archives)
    assert not (tmp_path / "data" / "evil.h5").exists()


def test_a_truncated_archive_is_one_line(tmp_path):
    archives = fixture.write_release(tmp_path / "archives")
    path = archives / prepare.ARCHIVES[pipeline.TRAIN_DIR]
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(ValueError, match="truncated") as error:
        _prepare(tmp_path, archives)
    assert "\n" not in str(error.value)


def test_missing_data_names_the_prepare_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="algoperf prepare fastmri --data_dir DIR"):
        tiny_pipeline().load(str(tmp_path))


# --- the mask and the example construction ---------------------------------------------------
@pytest.mark.parametrize("columns", [36, 368, 372])
def test_mask_keeps_the_centre_and_a_quarter_of_the_columns(columns):
    num_low = math.floor(0.08 * columns)
    start = (columns - num_low + 1) // 2
    masks = np.stack([pipeline.column_mask(columns, np.random.default_rng(i)) for i in range(2000)])
    assert masks[:, start : start + num_low].all()
    assert masks.mean() == pytest.approx(0.25, abs=0.01)  # 4x acceleration on average
    outside = np.delete(masks, np.arange(start, start + num_low), axis=1)
    assert outside.mean() == pytest.approx((columns / 4 - num_low) / (columns - num_low), abs=0.01)


@pytest.mark.parametrize("shape", [(640, 368, 320, 320), (41, 37, 32, 32), (40, 36, 31, 33)])
def test_the_reconstruction_is_the_rule_written_out(shape):
    rows, cols, height, width = shape
    rng = np.random.default_rng(0)
    kspace = (rng.standard_normal((rows, cols)) + 1j * rng.standard_normal((rows, cols))).astype(
        np.complex64
    )
    mask = pipeline.column_mask(cols, rng)
    shifted = np.fft.ifftshift(kspace * mask[None, :])
    image = np.fft.fftshift(np.fft.ifft2(shifted)) * math.sqrt(rows * cols)
    expected = np.abs(pipeline.center_crop(image, height, width))
    actual = pipeline.zero_filled_image(kspace, mask, (height, width))
    assert actual.dtype == np.float32 and actual.shape == (height, width)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * expected.max())


def _inputs(slices: pipeline.DecodedSlices, key) -> np.ndarray:
    return slices(key)["inputs"]


def test_each_slice_keeps_one_mask_and_eval_masks_are_fixed(dataset):
    slices = pipeline.DecodedSlices(dataset["train"], fixture.IMAGE_SIZE, seed=3)
    np.testing.assert_array_equal(_inputs(slices, 5), _inputs(slices, 5))
    train = _inputs(slices, (5,))  # the same on every visit, as upstream's per-example seed
    np.testing.assert_array_equal(train, _inputs(slices, (5,)))
    other_seed = pipeline.DecodedSlices(dataset["train"], fixture.IMAGE_SIZE, seed=4)
    assert not np.array_equal(train, _inputs(other_seed, (5,)))  # the trial's seed picks it
    assert not np.array_equal(train, _inputs(slices, 5))  # not the eval mask (seed 0)
    # Validation and test: seed 0 for every slice, as upstream's PRNGKey(0).
    volume_path, index = dataset["train"].locate(5)
    import h5py

    with h5py.File(volume_path) as volume:
        expected = pipeline.make_example(
            volume["kspace"][index], volume["reconstruction_esc"][index],
            np.random.default_rng(pipeline.EVAL_MASK_SEED), fixture.IMAGE_SIZE,
        )  # fmt: skip
    np.testing.assert_array_equal(_inputs(slices, 5), expected["inputs"])


def _phantom_volume(path: pathlib.Path, crop: int = 320):
    """Scikit-image's 400x400 Shepp-Logan phantom as a 2-slice h5 volume (the phantom, its
    transpose) with 320x320 targets, as the release's: the images and the targets."""
    import h5py
    from skimage.data import shepp_logan_phantom

    phantom = shepp_logan_phantom()
    images = 1e-4 * np.stack([phantom, phantom.T]).astype(np.float32)
    esc = pipeline.center_crop(images, crop, crop)
    with h5py.File(path, "w") as volume:
        volume["kspace"] = fixture.kspace_of(images)
        volume["reconstruction_esc"] = esc
        volume.attrs["max"] = float(esc.max())
    return images, esc


def test_a_real_phantom_survives_the_construction(tmp_path):
    images, esc = _phantom_volume(tmp_path / "phantom.h5")
    size = images.shape[-1]
    # Fully sampled, the reconstruction is the image itself.
    full = pipeline.zero_filled_image(fixture.kspace_of(images[0]), np.ones(size, bool), (320, 320))
    np.testing.assert_allclose(full, esc[0], rtol=0, atol=1e-9)
    volumes = pipeline.Volumes(str(tmp_path), ("phantom.h5",), np.asarray([0, 2]))
    slices = pipeline.DecodedSlices(volumes, 320, seed=0)
    for key in [0, 1, (0,), (1,)]:
        example = slices(key)
        target = esc[key if isinstance(key, int) else key[0]]
        # 4x undersampled: still the phantom (r 0.85-0.90 over 50 masks; the phantom's sharp
        # edges alias; uniform noise gives 0.53-0.64), the target normalised alike.
        r = np.corrcoef(example["inputs"].ravel(), target.ravel())[0, 1]
        assert r > 0.8, r
        normalised = np.clip((target - example["mean"]) / example["std"], -6, 6)
        np.testing.assert_allclose(example["targets"], normalised, rtol=1e-5, atol=1e-5)
        assert example["inputs"].min() >= -6 and example["inputs"].max() <= 6
        assert example["volume_max"] == np.float32(esc.max())


def test_image_size_crops_inputs_and_targets(dataset):
    example = pipeline.DecodedSlices(dataset["validation"], 20)(0)
    assert example["inputs"].shape == example["targets"].shape == (20, 20)
    with pytest.raises(ValueError, match="image_size"):
        tiny_pipeline(image_size="big")
    with pytest.raises(ValueError, match="image_size=32 or less"):
        pipeline.DecodedSlices(dataset["validation"], 64)(0)


# --- index rules -------------------------------------------------------------------------------
def _concat(batches):
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _eval(dataset, split, ranks, batch_size=4, **options):
    per_rank = [
        list(
            tiny_pipeline(**options).eval_batches(
                dataset,
                split,
                batch_size,
                seed=1,
                shard=Shard(rank, ranks),
                num_eval_train_examples=10,
            )
        )  # fmt: skip
        for rank in range(ranks)
    ]
    return _concat([b for step in zip(*per_rank) for b in step])


@pytest.mark.parametrize("split", ["validation", "test", "eval_train"])
@pytest.mark.parametrize("ranks", [1, 2])
def test_eval_visits_every_slice_once(dataset, split, ranks):
    batch = _eval(dataset, split, ranks)
    real = batch["weights"] == 1
    size = 10 if split == "eval_train" else fixture.SIZES[split]
    assert real.sum() == size and (batch["weights"][~real] == 0).all()
    assert real[:size].all()  # in split order, padding at the end
    volumes = dataset["train" if split == "eval_train" else split]
    slices = pipeline.DecodedSlices(volumes, fixture.IMAGE_SIZE, seed=1)
    if split == "eval_train":
        rows = pipeline.index_rules.eval_train_indices(len(volumes), 10, 1)
        keys = [(int(i),) for i in rows]
    else:
        keys = list(range(size))
    expected = _concat([pipeline.collate([slices(k) for k in keys])])
    for key, values in expected.items():
        np.testing.assert_array_equal(batch[key][:size], values)
    assert (batch["std"][~real] == 1).all() and (batch["volume_max"][~real] == 1).all()


def _train(dataset, ranks, steps, start_step=0, batch_size=4, **options):
    streams = [
        tiny_pipeline(**options).train_batches(
            dataset, batch_size, seed=2, shard=Shard(rank, ranks), start_step=start_step
        )
        for rank in range(ranks)
    ]
    return [_concat(list(rows)) for rows in itertools.islice(zip(*streams), steps)]


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def test_train_batches_match_on_any_ranks_and_after_a_resume(dataset):
    one = _train(dataset, 1, 6)  # 12 slices, batch 4: two epochs
    _assert_same(one, _train(dataset, 2, 6))
    _assert_same(one[4:], _train(dataset, 1, 2, start_step=4))
    assert all(b["inputs"].shape == (4, fixture.IMAGE_SIZE, fixture.IMAGE_SIZE) for b in one)
    assert all((b["weights"] == 1).all() for b in one)
    # Batch s is the examples the index rules pick, each masked with (seed, example index).
    slices = pipeline.DecodedSlices(dataset["train"], fixture.IMAGE_SIZE, seed=2)
    steps = pipeline.index_rules.global_batch_indices(12, 4, seed=2)
    for batch, picked in zip(one, steps):
        expected = pipeline.collate([slices((int(i),)) for i in picked])
        _assert_same([batch], [expected])


def test_workers_give_the_same_batches(dataset):
    _assert_same(_train(dataset, 1, 3), _train(dataset, 1, 3, num_workers=2))
    _assert_same(
        [_eval(dataset, "validation", 1)], [_eval(dataset, "validation", 1, num_workers=2)]
    )


def test_fake_batch_has_the_real_structure(dataset):
    real = next(iter(tiny_pipeline().train_batches(dataset, 4, seed=0, shard=Shard())))
    fake = tiny_pipeline().fake_batch(4)
    assert {k: (v.shape, v.dtype) for k, v in fake.items()} == {
        k: (v.shape, v.dtype) for k, v in real.items()
    }
    full = pipeline.fake_batch(2, layout="NHWC")
    assert full["inputs"].shape == (2, 320, 320) and full["volume_max"].shape == (2,)
    with pytest.raises(ValueError, match="layout"):
        pipeline.fake_batch(2, layout="CHW")
