"""CIFAR-10 reader, splits, augmentation, sharding and prepare, on format-exact fixture files.

Fixtures hold 20 images per batch file (100 train-file images -> 90 train / 10 validation by the
"last tenth" rule, 20 test). Every image carries its index as a constant 12x12 centre patch,
which every crop (offset <= 4 px, flipped or not) keeps at pixel (16, 16): it identifies rows
after augmentation.
"""

from __future__ import annotations

import io
import logging
import pathlib
import pickle
import tarfile

import data_utils
import numpy as np
import pytest

from algoperf import workloads
from algoperf.data.sharding import Shard
from algoperf.workloads.cifar import SPEC
from algoperf.workloads.cifar import input_pipeline as pipeline
from algoperf.workloads.cifar import prepare as prepare_module

IMAGES_PER_FILE = 20
NUM_TRAIN, NUM_VALIDATION, NUM_TEST = 90, 10, 20
MEAN = np.asarray(SPEC.train_mean, np.float32)
STD = np.asarray(SPEC.train_stddev, np.float32)


def _raw_images(first_id: int, count: int, seed: int) -> np.ndarray:
    images = np.random.default_rng(seed).integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
    ids = np.arange(first_id, first_id + count, dtype=np.uint8)
    images[:, :, 10:22, 10:22] = ids[:, None, None, None]
    return images.reshape(count, -1)


def write_fixture(folder: pathlib.Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Six pickled batch files like the real distribution; returns what was written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    names = (*pipeline.TRAIN_FILES, pipeline.TEST_FILE)
    for index, name in enumerate(names):
        first_id = 100 if name == pipeline.TEST_FILE else index * IMAGES_PER_FILE
        images = _raw_images(first_id, IMAGES_PER_FILE, seed=index)
        labels = [
            int(v) for v in np.random.default_rng(50 + index).integers(0, 10, IMAGES_PER_FILE)
        ]
        content = {b"batch_label": name.encode(), b"labels": labels, b"data": images}
        with open(folder / name, "wb") as handle:
            pickle.dump(content, handle, protocol=2)
        written[name] = (images, np.asarray(labels))
    return written


@pytest.fixture
def cifar_dir(tmp_path) -> pathlib.Path:
    write_fixture(tmp_path / "cifar10" / pipeline.BATCHES_DIR)
    return tmp_path


@pytest.fixture
def splits(cifar_dir) -> dict:
    return pipeline.load_splits(str(cifar_dir), layout="NCHW", allow_download=False)


def ids_of(inputs: np.ndarray) -> np.ndarray:
    """The fixture index of each (augmented or not) image, from its centre pixel's red value."""
    red = inputs[:, 0, 16, 16] if inputs.shape[1] == 3 else inputs[:, 16, 16, 0]
    return np.rint((red * STD[0] + MEAN[0]) * 255).astype(int)


def model_inputs(split) -> np.ndarray:
    """Every image of a split as the model gets it (the split stores uint8 pixels)."""
    return split.take(np.arange(len(split)))["inputs"]


def expected_normalised(raw: np.ndarray) -> np.ndarray:
    images = raw.reshape(-1, 3, 32, 32).astype(np.float64) / 255.0
    return (images - MEAN[:, None, None]) / STD[:, None, None]


# --- reading and splits --------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_split_sizes_shapes_and_dtypes(cifar_dir, layout):
    loaded = pipeline.load_splits(str(cifar_dir), layout=layout, allow_download=False)
    image_shape = (3, 32, 32) if layout == "NCHW" else (32, 32, 3)
    for split, size in (("train", NUM_TRAIN), ("validation", NUM_VALIDATION), ("test", NUM_TEST)):
        arrays = loaded[split].arrays
        assert arrays["inputs"].shape == (size, *image_shape)
        assert arrays["inputs"].dtype == np.uint8  # a quarter of float32's memory
        assert arrays["targets"].shape == (size,) and arrays["targets"].dtype == np.int64
        assert arrays["inputs"].flags["C_CONTIGUOUS"]
        inputs = model_inputs(loaded[split])
        assert inputs.shape == (size, *image_shape) and inputs.dtype == np.float32


def test_splits_take_the_right_images_and_normalise_them(tmp_path):
    written = write_fixture(tmp_path / pipeline.BATCHES_DIR)
    loaded = pipeline.load_splits(str(tmp_path), layout="NCHW", allow_download=False)
    train_raw = np.concatenate([written[name][0] for name in pipeline.TRAIN_FILES])
    train_labels = np.concatenate([written[name][1] for name in pipeline.TRAIN_FILES])
    # train = the first images of the train files, validation = the last tenth, in file order.
    np.testing.assert_array_equal(ids_of(model_inputs(loaded["train"])), np.arange(90))
    np.testing.assert_array_equal(ids_of(model_inputs(loaded["validation"])), np.arange(90, 100))
    np.testing.assert_array_equal(loaded["train"].arrays["targets"], train_labels[:NUM_TRAIN])
    np.testing.assert_array_equal(loaded["validation"].arrays["targets"], train_labels[NUM_TRAIN:])
    np.testing.assert_array_equal(loaded["test"].arrays["targets"], written["test_batch"][1])
    np.testing.assert_allclose(
        model_inputs(loaded["train"]), expected_normalised(train_raw[:NUM_TRAIN]), atol=1e-6
    )
    np.testing.assert_allclose(
        model_inputs(loaded["test"]), expected_normalised(written["test_batch"][0]), atol=1e-6
    )


def test_nhwc_is_the_transposed_nchw(splits, cifar_dir):
    nhwc = pipeline.load_splits(str(cifar_dir), layout="NHWC", allow_download=False)
    np.testing.assert_array_equal(
        nhwc["validation"].arrays["inputs"],
        splits["validation"].arrays["inputs"].transpose(0, 2, 3, 1),
    )


@pytest.mark.parametrize(
    "where", ["", "cifar10", pipeline.BATCHES_DIR, "cifar10/cifar-10-batches-py"]
)
def test_finds_the_usual_layouts(tmp_path, where):
    write_fixture(tmp_path / where if where else tmp_path)
    assert pipeline.find_batches_dir(tmp_path) is not None


def test_small_files_are_reported(cifar_dir, caplog):
    with caplog.at_level(logging.WARNING):
        pipeline.load_splits(str(cifar_dir), layout="NCHW", allow_download=False)
    assert "100 training and 20 test images" in caplog.text
    assert "90 train / 10 validation / 20 test" in caplog.text


def test_missing_dir_raises_file_not_found_with_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        pipeline.load_splits(str(tmp_path / "nowhere"), layout="NCHW", allow_download=False)
    message = str(error.value)
    assert "algoperf prepare cifar --data_dir DIR" in message
    assert "downloading is off (--download false)" in message
    assert pipeline.BATCHES_DIR in message and "data_batch_1" in message


def test_missing_one_file_raises_file_not_found(cifar_dir):
    (cifar_dir / "cifar10" / pipeline.BATCHES_DIR / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError):
        pipeline.load_splits(str(cifar_dir), layout="NCHW", allow_download=False)


class _Evil:
    def __reduce__(self):
        return (print, ("pickle ran code",))


@pytest.mark.parametrize(
    "content",
    [
        b"this is not a pickle",
        "truncated",
        {b"data": np.zeros((20, 100), np.uint8), b"labels": [0] * 20},  # wrong image size
        {b"data": np.zeros((20, 3072), np.float32), b"labels": [0] * 20},  # wrong dtype
        {b"data": np.zeros((20, 3072), np.uint8), b"labels": [0] * 19},  # labels short
        {b"data": np.zeros((20, 3072), np.uint8), b"labels": [10] * 20},  # label out of range
        {b"pixels": np.zeros((20, 3072), np.uint8)},  # wrong keys
        {b"data": _Evil(), b"labels": [0] * 20},  # arbitrary code: refused
    ],
    ids=["garbage", "truncated", "shape", "dtype", "labels", "label-range", "keys", "code"],
)
def test_corrupt_file_raises_value_error(cifar_dir, content, capsys):
    path = cifar_dir / "cifar10" / pipeline.BATCHES_DIR / "data_batch_3"
    if content == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(ValueError, match="data_batch_3"):
        pipeline.load_splits(str(cifar_dir), layout="NCHW", allow_download=False)
    assert "pickle ran code" not in capsys.readouterr().out


# --- batches -------------------------------------------------------------------------------
def _train(splits, seed: int, shard: Shard | None = None, batch_size: int = 10):
    return data_utils.batches(
        pipeline.Pipeline(),
        splits,
        "train",
        batch_size,
        seed=seed,
        shard=shard or Shard(),
        num_eval_train_examples=16,
    )


def _take(iterator, count: int) -> list[dict]:
    return [next(iterator) for _ in range(count)]


def test_train_stream_is_deterministic_per_seed(splits):
    first, again, other = (_take(_train(splits, seed), 3) for seed in (7, 7, 8))
    for a, b in zip(first, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert not all(np.array_equal(a["inputs"], c["inputs"]) for a, c in zip(first, other))


def test_train_epoch_visits_every_example_once(splits):
    batches = _take(_train(splits, seed=3), NUM_TRAIN // 10)
    ids = np.concatenate([ids_of(batch["inputs"]) for batch in batches])
    assert sorted(ids) == list(range(NUM_TRAIN))
    assert all(batch["weights"].sum() == 10 for batch in batches)


def test_two_ranks_get_disjoint_rows_covering_the_batch(splits):
    whole = _take(_train(splits, seed=5, batch_size=8), 2)
    rank0 = _take(_train(splits, seed=5, shard=Shard(0, 2), batch_size=8), 2)
    rank1 = _take(_train(splits, seed=5, shard=Shard(1, 2), batch_size=8), 2)
    for full, part0, part1 in zip(whole, rank0, rank1):
        assert len(part0["targets"]) == len(part1["targets"]) == 4
        ids0, ids1 = ids_of(part0["inputs"]), ids_of(part1["inputs"])
        assert not set(ids0) & set(ids1)
        np.testing.assert_array_equal(np.concatenate([ids0, ids1]), ids_of(full["inputs"]))
        np.testing.assert_array_equal(
            np.concatenate([part0["targets"], part1["targets"]]), full["targets"]
        )


@pytest.mark.parametrize("split,size", [("validation", NUM_VALIDATION), ("test", NUM_TEST)])
def test_eval_pass_covers_each_example_exactly_once(splits, split, size):
    batches = list(
        data_utils.batches(
            pipeline.Pipeline(), splits, split, 8, seed=0, shard=Shard(), num_eval_train_examples=16
        )
    )
    assert len(batches) == -(-size // 8)
    assert all(batch["inputs"].shape == (8, 3, 32, 32) for batch in batches)
    weights = np.concatenate([batch["weights"] for batch in batches])
    assert weights.sum() == size and set(weights[size:]) <= {0.0}
    inputs = np.concatenate([batch["inputs"] for batch in batches])
    np.testing.assert_array_equal(inputs[:size], model_inputs(splits[split]))  # no augmentation
    assert not inputs[size:].any()  # padded rows are zeros


def test_eval_pass_split_over_two_ranks(splits):
    def rows(shard):
        return list(
            data_utils.batches(
                pipeline.Pipeline(),
                splits,
                "validation",
                8,
                seed=0,
                shard=shard,
                num_eval_train_examples=0,
            )
        )

    whole, rank0, rank1 = rows(Shard()), rows(Shard(0, 2)), rows(Shard(1, 2))
    for full, part0, part1 in zip(whole, rank0, rank1, strict=True):
        for key in full:
            np.testing.assert_array_equal(np.concatenate([part0[key], part1[key]]), full[key])
    assert sum(batch["weights"].sum() for batch in rank0 + rank1) == NUM_VALIDATION


def test_eval_train_is_a_fixed_subset_of_train(splits):
    def eval_train(seed):
        batches = data_utils.batches(
            pipeline.Pipeline(),
            splits,
            "eval_train",
            8,
            seed=seed,
            shard=Shard(),
            num_eval_train_examples=16,
        )
        return np.concatenate([ids_of(b["inputs"])[b["weights"] > 0] for b in batches])

    ids = eval_train(4)
    assert len(ids) == 16 and len(set(ids)) == 16 and set(ids) <= set(range(NUM_TRAIN))
    np.testing.assert_array_equal(ids, eval_train(4))
    assert not np.array_equal(ids, eval_train(5))


def test_unknown_split_raises(splits):
    with pytest.raises(ValueError, match="unknown split"):
        data_utils.batches(
            pipeline.Pipeline(), splits, "dev", 8, seed=0, shard=Shard(), num_eval_train_examples=16
        )


# --- augmentation --------------------------------------------------------------------------
def _padded_black(image_chw: np.ndarray) -> np.ndarray:
    fill = -MEAN / STD  # black in pixel space, after normalisation
    return np.stack(
        [np.pad(channel, 4, constant_values=value) for channel, value in zip(image_chw, fill)]
    )


def _is_crop_of(output_chw: np.ndarray, image_chw: np.ndarray) -> bool:
    padded = _padded_black(image_chw)
    for top in range(9):
        for left in range(9):
            crop = padded[:, top : top + 32, left : left + 32]
            if np.array_equal(output_chw, crop) or np.array_equal(output_chw, crop[:, :, ::-1]):
                return True
    return False


def test_augmentation_is_a_padded_crop_and_flip(splits):
    batch = splits["train"].take(np.arange(16))
    batch["weights"] = np.ones(16, np.float32)
    out = pipeline.random_crop_and_flip(batch, np.random.default_rng(0))
    assert out["inputs"].shape == batch["inputs"].shape and out["inputs"].dtype == np.float32
    np.testing.assert_array_equal(out["targets"], batch["targets"])
    assert not np.array_equal(out["inputs"], batch["inputs"])
    assert all(_is_crop_of(o, i) for o, i in zip(out["inputs"], batch["inputs"]))
    np.testing.assert_array_equal(ids_of(out["inputs"]), ids_of(batch["inputs"]))
    # 16 images: some are flipped, some are not, and the offsets vary.
    assert sum(np.array_equal(o, i) for o, i in zip(out["inputs"], batch["inputs"])) < 16


def test_augmentation_is_the_same_in_both_layouts(splits):
    batch = splits["train"].take(np.arange(8))
    nhwc = {**batch, "inputs": batch["inputs"].transpose(0, 2, 3, 1)}
    out_nchw = pipeline.random_crop_and_flip(batch, np.random.default_rng(1))["inputs"]
    out_nhwc = pipeline.random_crop_and_flip(nhwc, np.random.default_rng(1))["inputs"]
    np.testing.assert_array_equal(out_nhwc, out_nchw.transpose(0, 2, 3, 1))


# --- fake_batch, workload caching ----------------------------------------------------------
@pytest.mark.parametrize("layout,shape", [("NCHW", (4, 3, 32, 32)), ("NHWC", (4, 32, 32, 3))])
def test_fake_batch(layout, shape):
    batch = pipeline.fake_batch(4, layout=layout, seed=2)
    assert batch["inputs"].shape == shape and batch["inputs"].dtype == np.float32
    assert batch["targets"].dtype == np.int64 and batch["weights"].tolist() == [1.0] * 4
    np.testing.assert_array_equal(
        batch["inputs"], pipeline.fake_batch(4, layout=layout, seed=2)["inputs"]
    )


@pytest.mark.parametrize("framework,shape", [("pytorch", (4, 3, 32, 32)), ("jax", (4, 32, 32, 3))])
def test_workload_reads_its_layout_once(cifar_dir, monkeypatch, framework, shape):
    workload = workloads.load("cifar", framework)
    calls = []
    original = pipeline.load_splits
    monkeypatch.setattr(
        pipeline, "load_splits", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    first = next(workload.numpy_batches("validation", str(cifar_dir), 4, 0, Shard()))
    next(workload.numpy_batches("train", str(cifar_dir), 4, 0, Shard()))
    assert first["inputs"].shape == shape
    assert len(calls) == 1


# --- prepare -------------------------------------------------------------------------------
def _tarball(path: pathlib.Path, members: dict[str, bytes], symlink: str | None = None) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)


def test_prepare_extracts_and_verifies(tmp_path, monkeypatch):
    source = tmp_path / "source"
    write_fixture(source / pipeline.BATCHES_DIR)
    archive = tmp_path / "fixture.tar.gz"
    members = {
        f"{pipeline.BATCHES_DIR}/{name}": (source / pipeline.BATCHES_DIR / name).read_bytes()
        for name in prepare_module.BATCH_FILES
    }
    _tarball(archive, members)

    def fake_fetch(urls, destination, md5, *, timeout_s):
        assert urls == [prepare_module.URL] and md5 == prepare_module.MD5
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(archive.read_bytes())

    monkeypatch.setattr(prepare_module, "fetch", fake_fetch)
    data_dir = tmp_path / "data"
    folder = prepare_module.prepare(data_dir)
    assert folder == data_dir / "cifar10" / pipeline.BATCHES_DIR
    loaded = pipeline.load_splits(str(data_dir), layout="NHWC", allow_download=False)
    assert len(loaded["train"]) == NUM_TRAIN
    assert prepare_module.prepare(data_dir) == folder  # already there: nothing to do


@pytest.mark.parametrize(
    "members,symlink",
    [
        ({"../escape": b"x"}, None),
        ({"cifar-10-batches-py/../../escape": b"x"}, None),
        ({"/tmp/absolute": b"x"}, None),
        ({"cifar-10-batches-py/data_batch_1": b"x"}, "cifar-10-batches-py/link"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink"],
)
def test_extract_rejects_unsafe_members(tmp_path, members, symlink):
    archive = tmp_path / "bad.tar.gz"
    _tarball(archive, members, symlink)
    target = tmp_path / "out"
    with pytest.raises(ValueError, match="refusing"):
        prepare_module.extract(archive, target)
    assert not (tmp_path / "escape").exists() and not target.exists()


def test_prepare_reports_missing_batch_files(tmp_path, monkeypatch):
    archive = tmp_path / "partial.tar.gz"
    _tarball(archive, {f"{pipeline.BATCHES_DIR}/data_batch_1": b"x"})
    monkeypatch.setattr(
        prepare_module,
        "fetch",
        lambda urls, destination, md5, *, timeout_s: (
            destination.parent.mkdir(parents=True, exist_ok=True),
            destination.write_bytes(archive.read_bytes()),
        ),
    )
    with pytest.raises(ValueError, match="test_batch"):
        prepare_module.prepare(tmp_path / "data")
