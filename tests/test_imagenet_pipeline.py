"""The ImageNet input pipeline (shared by imagenet_resnet and imagenet_vit) and prepare.py, on tiny
format-exact fixtures (tests/imagenet_fixture.py): layouts, preprocessing against torchvision,
eval passes that visit every image once, deterministic and rank-sharded train streams, decoding in
worker processes, clear errors; prepare from fake official archives, resume, wrong counts.
"""

from __future__ import annotations

import io
import logging
import pathlib
import shutil
import tarfile

import data_utils
import imagenet_fixture as fixture
import numpy as np
import pytest
from PIL import Image

from algoperf import workloads
from algoperf.data.sharding import Shard
from algoperf.workloads.imagenet import input_pipeline as pipeline
from algoperf.workloads.imagenet import prepare as prepare_module

NUM_CLASSES, PER_CLASS, VAL_PER_CLASS, V2_PER_CLASS = 4, 5, 3, 2
NUM_TRAIN = NUM_CLASSES * PER_CLASS  # 20
NUM_VALIDATION = NUM_CLASSES * VAL_PER_CLASS  # 12
NUM_TEST = NUM_CLASSES * V2_PER_CLASS  # 8
SIZE = 24  # model input side in these tests
SPLIT_CODE = fixture.SPLIT_CODES


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> pathlib.Path:
    return fixture.make_imagenet_tree(
        tmp_path_factory.mktemp("imagenet_tree"), NUM_CLASSES, PER_CLASS, size=40,
        val_per_class=VAL_PER_CLASS, v2_per_class=V2_PER_CLASS,
    )  # fmt: skip


class Loaded:
    """A pipeline and its loaded splits, read like the splits (`.train`, `.test()`)."""

    def __init__(self, pipe: pipeline.Pipeline, splits: pipeline.ImageNetSplits) -> None:
        self.pipe, self.splits = pipe, splits
        self.train, self.validation, self.root = splits.train, splits.validation, splits.root

    def test(self):
        return self.splits.test(self.pipe.options.extra_data_dir)


def load(data_dir, layout="NCHW", imagenet_v2_data_dir=None, **options) -> Loaded:
    options.setdefault("num_workers", 0)
    options = pipeline.Options(image_size=SIZE, extra_data_dir=imagenet_v2_data_dir, **options)
    pipe = pipeline.Pipeline(options, layout=layout)
    return Loaded(pipe, pipe.load(str(data_dir)))


def batches(loaded, split, global_batch_size, *, seed=0, shard=None, eval_train=1000, start=0):
    return data_utils.batches(
        loaded.pipe, loaded.splits, split, global_batch_size, seed=seed, shard=shard or Shard(),
        num_eval_train_examples=eval_train, start_step=start,
    )  # fmt: skip


def take(iterator, count: int) -> list[dict]:
    return [next(iterator) for _ in range(count)]


def valid_ids(batch: dict) -> list[tuple[int, int, int]]:
    ids = fixture.decode_ids(batch["inputs"])[batch["weights"] > 0]
    return [tuple(row) for row in ids.tolist()]


# --- layouts and listing ---------------------------------------------------------------------
def test_lists_every_split_with_sorted_wnid_labels(data_dir):
    splits = load(data_dir)
    assert (len(splits.train), len(splits.validation), len(splits.test())) == (20, 12, 8)
    assert splits.root == data_dir / "imagenet"
    # Class index = position of the wnid among the sorted train folders.
    first = splits.train.paths[0].decode()
    assert first.startswith(fixture.wnid(0) + "/")
    assert np.array_equal(np.bincount(splits.train.labels), [PER_CLASS] * NUM_CLASSES)
    assert np.array_equal(np.bincount(splits.test().labels), [V2_PER_CLASS] * NUM_CLASSES)


def test_finds_the_dataset_folder_and_upstreams_pytorch_layout(data_dir, tmp_path):
    assert pipeline.find_root(data_dir) == data_dir / "imagenet"
    assert pipeline.find_root(data_dir / "imagenet") == data_dir / "imagenet"
    upstream = tmp_path / "imagenet" / "pytorch"
    upstream.mkdir(parents=True)
    for name in ("train", "val"):
        shutil.copytree(data_dir / "imagenet" / name, upstream / name)
    assert pipeline.find_root(tmp_path) == upstream
    assert pipeline.find_root(tmp_path / "nothing") is None


def test_imagenet_v2_folder_can_live_elsewhere(data_dir, tmp_path):
    moved = tmp_path / "v2" / pipeline.V2_RELEASE_DIR  # the folder the release tarball holds
    shutil.copytree(data_dir / "imagenet" / pipeline.V2_DIR, moved)
    tree = tmp_path / "tree" / "imagenet"
    for name in ("train", "val"):
        shutil.copytree(data_dir / "imagenet" / name, tree / name)
    splits = load(tree.parent)
    with pytest.raises(FileNotFoundError, match="ImageNet-v2 .* --imagenet_v2_data_dir"):
        splits.test()
    for given in (moved, moved.parent):
        found = load(tree.parent, imagenet_v2_data_dir=str(given)).test()
        assert len(found) == NUM_TEST


def test_the_workload_takes_the_v2_folder_from_the_runners_eval_call(data_dir, tmp_path):
    """The runner passes --imagenet_v2_data_dir to eval_model (upstream's API), after the train
    split was listed: the test split is then found there."""
    tree = tmp_path / "imagenet"
    for name in ("train", "val"):
        shutil.copytree(data_dir / "imagenet" / name, tree / name)
    v2 = data_dir / "imagenet" / pipeline.V2_DIR
    workload = workloads.load("imagenet_resnet", "jax", image_size=16, num_workers=0)
    workload.numpy_batches("train", str(tmp_path), 4, 0)  # lists the splits first
    with pytest.raises(FileNotFoundError, match="ImageNet-v2"):
        list(workload.numpy_batches("test", str(tmp_path), 4, 0))
    workload.pipeline.with_options(extra_data_dir=str(v2))  # what eval_model(..., v2_dir) does
    batches = workload.numpy_batches("test", str(tmp_path), 4, 0)
    assert sum(int(b["weights"].sum()) for b in batches) == NUM_TEST


# --- preprocessing ---------------------------------------------------------------------------
def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.mark.parametrize(("width", "height", "size"), [(50, 37, 24), (37, 61, 32), (300, 260, 224)])
def test_eval_preprocessing_equals_torchvision(width, height, size):
    """Resize(size / 0.875) + CenterCrop(size) + ToTensor + Normalize, as upstream's PyTorch."""
    from torchvision import transforms

    image = noise_image(width, height)
    reference = transforms.Compose(
        [
            transforms.Resize(round(size / pipeline.CENTER_CROP_FRACTION)),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(pipeline.MEAN.tolist(), pipeline.STD.tolist()),
        ]
    )(image)
    ours = pipeline.normalise(pipeline.eval_image(image, size))
    assert ours.shape == (size, size, 3) and ours.dtype == np.float32
    np.testing.assert_allclose(ours.transpose(2, 0, 1), reference.numpy(), atol=1e-6)


def test_random_resized_crop_box_stays_in_range():
    rng = np.random.default_rng(0)
    fractions, aspects = [], []
    for width, height in [(500, 375), (64, 64), (40, 90), (1000, 12)]:
        for _ in range(300):
            left, top, crop_w, crop_h = pipeline.random_resized_crop_box(width, height, rng)
            assert left >= 0 and left + crop_w <= width and top >= 0 and top + crop_h <= height
            assert crop_w > 0 and crop_h > 0
            if (width, height) == (500, 375):
                fractions.append(crop_w * crop_h / (width * height))
                aspects.append(crop_w / crop_h)
    # Rounding of the sides moves area and aspect a little past the drawn values.
    assert min(fractions) >= 0.075 and max(fractions) <= 1.0
    assert min(aspects) >= 0.74 and max(aspects) <= 1.34
    assert min(fractions) < 0.15 and max(fractions) > 0.8  # the range is really used
    # 1000 x 12 never fits a crop of aspect in [3/4, 4/3] and area >= 8%: the fallback is the
    # largest centred crop whose aspect is clamped into that range (12 x 1000 likewise).
    assert pipeline.random_resized_crop_box(1000, 12, rng) == (492, 0, 16, 12)
    assert pipeline.random_resized_crop_box(12, 1000, rng) == (0, 492, 12, 16)


def test_train_image_flips_half_the_time():
    half = np.zeros((40, 40, 3), np.uint8)
    half[:, 20:] = 255  # black left half, white right half
    image = Image.fromarray(half)
    rng = np.random.default_rng(1)
    flips = 0
    for _ in range(200):
        out = pipeline.train_image(image, 16, rng)
        assert out.shape == (16, 16, 3) and out.dtype == np.uint8
        flips += int(out[:, 0].mean() > out[:, -1].mean())
    assert 70 < flips < 130


def test_greyscale_cmyk_and_png_files_decode_to_rgb(tmp_path):
    for mode, fmt in (("L", "JPEG"), ("CMYK", "JPEG"), ("RGBA", "PNG")):
        path = tmp_path / f"{mode}.JPEG"  # ImageNet holds a PNG under a .JPEG name, too
        Image.new(mode, (30, 20)).save(path, format=fmt)
        image = pipeline.load_rgb(str(path))
        assert image.mode == "RGB" and image.size == (30, 20)
    broken = tmp_path / "broken.JPEG"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match=r"broken\.JPEG: not a readable image"):
        pipeline.load_rgb(str(broken))


# --- eval splits -----------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize(("split", "count"), [("validation", 12), ("test", 8), ("eval_train", 20)])
def test_eval_pass_visits_every_image_once(data_dir, layout, split, count):
    splits = load(data_dir, layout)
    out = list(batches(splits, split, 5))
    assert len(out) == -(-count // 5)
    shape = (5, 3, SIZE, SIZE) if layout == "NCHW" else (5, SIZE, SIZE, 3)
    for batch in out:
        assert batch["inputs"].shape == shape and batch["inputs"].dtype == np.float32
        assert batch["targets"].dtype == np.int64 and batch["weights"].dtype == np.float32
    seen = [ident for batch in out for ident in valid_ids(batch)]
    assert len(seen) == len(set(seen)) == count
    assert {code for code, _, _ in seen} == {
        SPLIT_CODE["train" if split == "eval_train" else split]
    }
    # Labels agree with the class each image was written for.
    for batch in out:
        ids = fixture.decode_ids(batch["inputs"])
        valid = batch["weights"] > 0
        assert np.array_equal(batch["targets"][valid], ids[valid, 1])
    # The last batch is padded with zero rows of weight 0.
    last = out[-1]
    assert last["weights"].sum() == count - 5 * (len(out) - 1)
    padding = last["weights"] == 0
    assert not last["inputs"][padding].any() and not last["targets"][padding].any()


def test_eval_split_is_sharded_across_two_ranks(data_dir):
    splits = load(data_dir)
    whole = list(batches(splits, "validation", 4))
    ranks = [list(batches(splits, "validation", 4, shard=Shard(rank, 2))) for rank in (0, 1)]
    seen = [set(), set()]
    for step, batch in enumerate(whole):
        parts = [ranks[0][step], ranks[1][step]]
        assert all(part["inputs"].shape[0] == 2 for part in parts)
        for key in batch:
            assert np.array_equal(np.concatenate([p[key] for p in parts]), batch[key])
        for rank in (0, 1):
            seen[rank].update(valid_ids(parts[rank]))
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == NUM_VALIDATION


def test_eval_train_is_a_fixed_seeded_subset(data_dir):
    splits = load(data_dir)

    def subset(seed):
        out = list(batches(splits, "eval_train", 4, seed=seed, eval_train=7))
        assert sum(b["weights"].sum() for b in out) == 7
        return sorted(ident for batch in out for ident in valid_ids(batch))

    assert subset(3) == subset(3)
    assert subset(3) != subset(4)
    assert len(set(subset(3))) == 7


# --- train stream ----------------------------------------------------------------------------
def test_train_stream_is_deterministic_per_seed_and_covers_each_epoch(data_dir):
    splits = load(data_dir, "NHWC")
    first = take(batches(splits, "train", 4, seed=5), 10)  # 40 rows = two epochs of 20
    again = take(batches(splits, "train", 4, seed=5), 10)
    other = take(batches(splits, "train", 4, seed=6), 10)
    for a, b in zip(first, again):
        for key in a:
            assert np.array_equal(a[key], b[key])
    assert any(not np.array_equal(a["inputs"], b["inputs"]) for a, b in zip(first, other))
    ids = [ident for batch in first for ident in valid_ids(batch)]
    assert len(set(ids[:NUM_TRAIN])) == len(set(ids[NUM_TRAIN:])) == NUM_TRAIN
    assert ids[:NUM_TRAIN] != ids[NUM_TRAIN:]  # each epoch has its own order
    assert {code for code, _, _ in ids} == {SPLIT_CODE["train"]}
    batch = first[0]
    assert batch["inputs"].shape == (4, SIZE, SIZE, 3) and batch["weights"].tolist() == [1] * 4
    assert np.array_equal(batch["targets"], fixture.decode_ids(batch["inputs"])[:, 1])


def test_train_stream_is_sharded_and_resumes_exactly(data_dir):
    """Two ranks read disjoint halves of each global batch, pixel for pixel the rows one rank
    would read (the augmentation is seeded by the global row); start_step resumes the stream."""
    splits = load(data_dir)
    whole = take(batches(splits, "train", 4, seed=2), 6)
    halves = [take(batches(splits, "train", 4, seed=2, shard=Shard(r, 2)), 6) for r in (0, 1)]
    for step, batch in enumerate(whole):
        for key in batch:
            joined = np.concatenate([halves[0][step][key], halves[1][step][key]])
            assert np.array_equal(joined, batch[key]), (step, key)
        assert not set(valid_ids(halves[0][step])) & set(valid_ids(halves[1][step]))
    resumed = take(batches(splits, "train", 4, seed=2, start=4), 2)
    for a, b in zip(whole[4:], resumed):
        assert np.array_equal(a["inputs"], b["inputs"])


def test_worker_processes_give_the_same_batches(data_dir):
    """Decoding in 2 DataLoader workers (forkserver) changes nothing but where the work runs."""
    in_process, workers = load(data_dir, num_workers=0), load(data_dir, num_workers=2)
    train = [take(batches(s, "train", 4, seed=9), 3) for s in (in_process, workers)]
    evals = [list(batches(s, "validation", 5)) for s in (in_process, workers)]
    for a_batches, b_batches in (train, evals):
        assert len(a_batches) == len(b_batches)
        for a, b in zip(a_batches, b_batches):
            assert all(isinstance(b[k], np.ndarray) for k in b)
            for key in a:
                assert np.array_equal(a[key], b[key]), key


def test_fake_batch_has_the_real_format():
    for layout, shape in (("NCHW", (3, 3, 32, 32)), ("NHWC", (3, 32, 32, 3))):
        batch = pipeline.fake_batch(3, layout=layout, image_size=32)
        assert batch["inputs"].shape == shape and batch["inputs"].dtype == np.float32
        assert batch["targets"].dtype == np.int64 and batch["targets"].max() < 1000
        assert batch["weights"].tolist() == [1.0] * 3
    assert pipeline.fake_batch(2)["inputs"].shape == (2, 3, 224, 224)


# --- errors ----------------------------------------------------------------------------------
def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ImageNet not found .*algoperf prepare imagenet"):
        load(tmp_path)


def test_bad_folders_are_clear_errors(data_dir, tmp_path):
    tree = tmp_path / "imagenet"
    for name in ("train", "val"):
        shutil.copytree(data_dir / "imagenet" / name, tree / name)
    (tree / "val" / "n09999999").mkdir()
    with pytest.raises(ValueError, match="n09999999: not one of the 4 classes"):
        load(tmp_path)
    shutil.rmtree(tree / "val" / "n09999999")
    bad_v2 = tmp_path / "v2"
    (bad_v2 / "0").mkdir(parents=True)
    (bad_v2 / "n01440764").mkdir()
    with pytest.raises(ValueError, match="must be named 0..999"):
        load(tmp_path, imagenet_v2_data_dir=str(bad_v2)).test()
    with pytest.raises(ValueError, match="unknown split"):
        batches(load(tmp_path), "dev", 4)
    with pytest.raises(ValueError, match="layout"):
        load(tmp_path, layout="CHWN")


def test_a_small_dataset_warns_that_results_are_not_comparable(data_dir, caplog):
    with caplog.at_level(logging.WARNING):
        load(data_dir)
    assert "NOT comparable" in caplog.text and "1281167" in caplog.text


# --- prepare.py --------------------------------------------------------------------------------
COUNTS = {
    "train": 12,
    "validation": 8,
    "test": 8,
}  # make_imagenet_archives' defaults: 4 x 3 / 2 / 2


@pytest.fixture
def archives(tmp_path) -> dict[str, pathlib.Path]:
    return fixture.make_imagenet_archives(tmp_path / "archives")


def test_prepare_builds_the_tree_the_pipeline_reads(archives, tmp_path):
    root = prepare_module.prepare(
        tmp_path / "data", **archives, expected_counts=COUNTS, expected_classes=4
    )
    assert root == tmp_path / "data" / "imagenet"
    splits = load(tmp_path / "data")
    assert (len(splits.train), len(splits.validation), len(splits.test())) == (12, 8, 8)
    # Validation labels went through the devkit (meta.mat IDs differ from the wnid order) and
    # agree with the class each image was drawn for; so do the v2 folders.
    for split, code in (("validation", 1), ("test", 2), ("eval_train", 0)):
        out = list(batches(splits, split, 8))
        ids = np.concatenate([fixture.decode_ids(b["inputs"])[b["weights"] > 0] for b in out])
        targets = np.concatenate([b["targets"][b["weights"] > 0] for b in out])
        assert (ids[:, 0] == code).all() and np.array_equal(targets, ids[:, 1]), split
    # A second run finds everything done and changes nothing.
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    prepare_module.prepare(
        tmp_path / "data", **archives, expected_counts=COUNTS, expected_classes=4
    )
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_prepare_resumes_after_an_interruption(archives, tmp_path, monkeypatch):
    extract_class = prepare_module.extract_class
    write = prepare_module._write_atomically
    calls = {"classes": [], "files": 0}

    def failing_extract(outer, member, folder):
        if len(calls["classes"]) == 2:
            (folder.with_name(f".tmp_{folder.name}") / "half.JPEG").parent.mkdir()
            raise KeyboardInterrupt  # stopped while extracting the third class
        calls["classes"].append(folder.name)
        return extract_class(outer, member, folder)

    monkeypatch.setattr(prepare_module, "extract_class", failing_extract)
    with pytest.raises(KeyboardInterrupt):
        prepare_module.prepare(tmp_path / "data", **archives, expected_counts=COUNTS)
    train = tmp_path / "data" / "imagenet" / "train"
    assert sorted(p.name for p in train.iterdir() if not p.name.startswith(".")) == sorted(
        calls["classes"]
    )

    def failing_write(source, target):
        if calls["files"] == 3:
            raise KeyboardInterrupt
        calls["files"] += 1
        write(source, target)

    monkeypatch.setattr(prepare_module, "extract_class", extract_class)
    monkeypatch.setattr(prepare_module, "_write_atomically", failing_write)
    with pytest.raises(KeyboardInterrupt):
        prepare_module.prepare(
            tmp_path / "data", **archives, expected_counts=COUNTS, expected_classes=4
        )
    assert not (tmp_path / "data" / "imagenet" / "val").exists()  # only complete splits appear

    resumed = {"classes": 0, "files": 0}

    def counting_extract(outer, member, folder):
        resumed["classes"] += 1
        return extract_class(outer, member, folder)

    def counting_write(source, target):
        resumed["files"] += 1
        write(source, target)

    monkeypatch.setattr(prepare_module, "extract_class", counting_extract)
    monkeypatch.setattr(prepare_module, "_write_atomically", counting_write)
    prepare_module.prepare(
        tmp_path / "data", **archives, expected_counts=COUNTS, expected_classes=4
    )
    # Only what was missing is extracted again: no train class (all done by the second run),
    # 8 - 3 validation files and all 8 v2 files.
    assert resumed == {"classes": 0, "files": 5 + 8}
    assert not list((tmp_path / "data").rglob(".tmp_*")) and not list(
        (tmp_path / "data").rglob("*.part")
    )
    splits = load(tmp_path / "data")
    assert (len(splits.train), len(splits.validation), len(splits.test())) == (12, 8, 8)


def test_wrong_counts_are_a_one_line_error(archives, tmp_path, capsys):
    with pytest.raises(ValueError) as error:
        prepare_module.prepare(tmp_path / "data", **archives, splits=("train",))
    message = str(error.value)
    assert "\n" not in message
    assert "12 images in 4 classes" in message and "expected 1,281,167 in 1,000" in message
    assert not (tmp_path / "data" / "imagenet" / "train" / ".complete").exists()
    argv = ["--data_dir", str(tmp_path / "data"), "--splits", "test"]
    argv += ["--v2_tar", str(archives["v2_tar"])]
    assert prepare_module.main(argv) == 1
    progress, err = capsys.readouterr().err.strip().splitlines()  # `algoperf prepare`'s format
    assert progress.startswith("[algoperf prepare] ")
    assert err.startswith("algoperf prepare imagenet: error: ")
    assert "expected 10,000 in 1,000" in err


def test_missing_or_unsafe_archives_are_clear_errors(archives, tmp_path, capsys):
    argv = ["--data_dir", str(tmp_path / "data"), "--archive_dir", str(tmp_path / "nowhere")]
    assert prepare_module.main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("algoperf prepare imagenet: error: ")
    assert "ILSVRC2012_img_train.tar not found" in err
    assert not (tmp_path / "data").exists()  # archives are checked before anything is written
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as outer:
        inner = io.BytesIO()
        with tarfile.open(fileobj=inner, mode="w") as tar:
            data = b"x"
            info = tarfile.TarInfo("../../escaped.JPEG")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("n01000000.tar")
        info.size = len(inner.getvalue())
        outer.addfile(info, io.BytesIO(inner.getvalue()))
    with pytest.raises(ValueError, match="refusing to extract"):
        prepare_module.prepare(tmp_path / "data", train_tar=evil, splits=("train",))
    assert not list(tmp_path.rglob("escaped.JPEG"))
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(archives["train_tar"].read_bytes()[:3000])
    with pytest.raises(ValueError, match="truncated.tar: not a readable archive") as error:
        prepare_module.prepare(tmp_path / "other", train_tar=truncated, splits=("train",))
    assert "\n" not in str(error.value)
    garbage = tmp_path / "devkit.tar.gz"
    garbage.write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="devkit.tar.gz: not a readable archive") as error:
        prepare_module.prepare(
            tmp_path / "other", val_tar=archives["val_tar"], devkit=garbage, splits=("validation",)
        )
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="is this ILSVRC2012_img_train.tar"):
        prepare_module.prepare(tmp_path / "other", train_tar=archives["val_tar"], splits=("train",))
