"""wmt's data: prepare from archives in the WMT release's formats (plain parallel text and SGM)
with a tiny SentencePiece model trained in the test (counts, empty sides, the 256-id filter, the
tokenizer's training text, resume after an interruption, downloads), packed train rows (segments,
positions, weights, the greedy rule), rank-independent train batches and resume, exact eval
coverage on 1-3 ranks, a real SentencePiece model through encode and detokenisation, and the
one-line errors."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil

import numpy as np
import pytest

from algoperf.data.sharding import Shard
from algoperf.workloads.wmt import fixture, prepare
from algoperf.workloads.wmt import input_pipeline as pipeline
from algoperf.workloads.wmt import tokenizer as wmt_tokenizer
from algoperf.workloads.wmt.decode import cut_at_eos, detokenize_rows

MAX_LEN = fixture.MAX_LEN


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> pathlib.Path:
    return fixture.write_fixture(tmp_path_factory.mktemp("wmt"))


@pytest.fixture(scope="module")
def loaded(prepared):
    wmt = pipeline.Pipeline(pipeline.Options(**fixture.PIPELINE_OPTIONS))
    return wmt, wmt.load(str(prepared))


def prepare_fixture(data_dir: pathlib.Path, archives: pathlib.Path, **changes) -> pathlib.Path:
    return prepare.prepare(data_dir, str(archives), **{**fixture.prepare_kwargs(), **changes})


def tree_bytes(root: pathlib.Path) -> dict[str, bytes]:
    """Every file under a prepared folder, by relative path."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def expected_pairs(split: str) -> list[tuple[str, str]]:
    """The fixture's pairs of `split` that prepare keeps, in order (empty sides and the
    long pairs left out)."""
    if split == "train":
        pairs = [pair for lines in fixture.train_corpora().values() for pair in lines]
    else:
        pairs = fixture.eval_sets()[split]
    return [(a, b) for a, b in pairs if a and b and len(a.split()) < fixture.LONG_WORDS]


def stored_pairs(split: pipeline.PairSplit) -> list[tuple[list[int], list[int]]]:
    return [tuple(side.tolist() for side in split.pair(i)) for i in range(len(split))]


def row_segments(batch: dict, row: int, side: str) -> list[list[int]]:
    """The ids of each segment of a packed row, in segment order."""
    segmentation = batch[f"{side}_segmentation"][row]
    return [batch[side][row][segmentation == s].tolist() for s in range(1, segmentation.max() + 1)]


# --- prepare ---------------------------------------------------------------------------------
def test_prepare_keeps_every_pair_in_order_tokenized_with_eos(prepared):
    root = prepared / pipeline.DATASET_DIR
    index = json.loads((root / pipeline.INDEX_FILE).read_text())
    tokenizer = wmt_tokenizer.Tokenizer.from_file(root / wmt_tokenizer.MODEL_FILE)
    assert tokenizer.vocab_size == fixture.TOKENIZER_VOCAB == index["vocab_size"]
    assert index["tokenizer_sha256"] == tokenizer.sha256
    dataset = pipeline.load_dataset(prepared)
    for name in pipeline.SPLITS:
        counts = index["splits"][name]
        assert counts["read"] == fixture.RAW_COUNTS[name]
        assert counts["pairs"] == fixture.SIZES[name] == len(dataset[name])
        assert counts["too_long"] == (0 if name == "test" else 1)
        expected = [
            (tokenizer.encode(german), tokenizer.encode(english))
            for german, english in expected_pairs(name)
        ]
        assert stored_pairs(dataset[name]) == expected
        for german, english in stored_pairs(dataset[name]):
            assert german[-1] == english[-1] == pipeline.EOS_ID
            assert german.count(pipeline.EOS_ID) == english.count(pipeline.EOS_ID) == 1
    # The "\r" inside a Common Crawl sentence stays in it (the line is split at "\n" only).
    assert ("Preis: 10 € – „günstig“\rheute.", "Price: 10 € – “cheap”\rtoday.") in (
        expected_pairs("train")
    )
    assert index["benchmark"]["ok"] is False and "not the release's" in index["benchmark"]["why"]
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [*pipeline.SPLITS, pipeline.INDEX_FILE, wmt_tokenizer.MODEL_FILE]
    )  # the extracted files are gone; no partial file is left


def test_long_pairs_are_dropped_at_256_ids(prepared):
    tokenizer = pipeline.load_dataset(prepared).tokenizer
    crawl = fixture.train_corpora()["commoncrawl"]
    assert len(tokenizer.encode(crawl[20][0])) > 256  # the long pair: gone from train
    counts = json.loads((prepared / "wmt" / "train" / pipeline.SPLIT_FILE).read_text())
    assert counts["too_long"] == 1
    longest = pipeline.load_dataset(prepared)["train"].lengths.max()
    assert longest <= fixture.MAX_LEN  # every kept pair fits the test's rows of 64


def test_a_pair_is_kept_up_to_256_ids_on_each_side_eos_included(tmp_path):
    class Counting:  # "n" tokenizes as n - 1 ids and EOS
        sha256 = "counting"

        def encode_batch(self, texts, num_threads):
            return [[7] * (int(text) - 1) + [pipeline.EOS_ID] for text in texts]

    pairs = [("255", "256"), ("256", "257"), ("257", "3"), ("256", "256"), ("1", "2")]
    counts = prepare.write_split(tmp_path / "train", iter(pairs), Counting(), 1, print)
    assert (counts["pairs"], counts["too_long"], counts["read"]) == (3, 2, 5)
    offsets = np.load(tmp_path / "train" / "offsets.npy")
    assert np.diff(offsets, axis=0).tolist() == [[255, 256], [256, 256], [1, 2]]
    assert (tmp_path / "train" / "inputs.bin").stat().st_size == 2 * (255 + 256 + 1)


def test_sgm_test_sets_read_like_plain_text(prepared, tmp_path):
    """newstest2013 given only as its SGM files (extracted, no archive) gives the same split as
    the plain files; an SGM file's segments are its `<seg>` lines in document order."""
    members = fixture.release_members()["dev.tgz"]
    german = members["dev/newstest2013-src.de.sgm"]
    (tmp_path / "sgm.de.sgm").write_bytes(german)
    plain = members["dev/newstest2013.de"].decode().split("\n")[:-1]
    assert [s.decode() for s in prepare.read_sgm(tmp_path / "sgm.de.sgm")] == plain
    archives = tmp_path / "extracted"
    for files in fixture.release_members().values():
        for name, content in files.items():
            if not name.startswith("dev/newstest2013."):  # no plain newstest2013
                (archives / name).parent.mkdir(parents=True, exist_ok=True)
                (archives / name).write_bytes(content)
    shutil.copy(prepared / "wmt" / wmt_tokenizer.MODEL_FILE, tmp_path / "model")
    root = prepare_fixture(tmp_path / "data", archives, tokenizer=str(tmp_path / "model"))
    index = json.loads((root / pipeline.INDEX_FILE).read_text())
    assert index["sources"]["validation"]["newstest2013"][0] == "newstest2013-src.de.sgm"
    assert index["tokenizer"] == "given (model)"
    for name in pipeline.SPLITS:
        assert tree_bytes(root / name) == tree_bytes(prepared / "wmt" / name)


def test_tokenizer_trains_on_the_first_bytes_in_the_fixed_order(prepared, tmp_path):
    assert wmt_tokenizer.training_order(10).tolist() == [3, 5, 7, 4, 1, 2, 8, 9, 6, 0]  # fixed

    def splitmix64(x: int) -> int:  # the published algorithm, in Python integers
        mask = (1 << 64) - 1
        z = (x + 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    assert splitmix64(0) == 0xE220A8397B1DCDAF
    order = wmt_tokenizer.training_order(1000).tolist()
    assert order == sorted(range(1000), key=splitmix64)
    folder = tmp_path / "archives"
    fixture.write_release(folder)
    located = prepare.locate(tmp_path / "wmt", str(folder), False, lambda line: None)
    lengths = prepare.byte_lengths(located["train"], lambda line: None)
    pairs = list(prepare.pairs_of(located["train"]))
    chosen = prepare.training_pairs(located["train"], lengths, fixture.MAX_TRAINING_BYTES)
    in_order = [pairs[i] for i in wmt_tokenizer.training_order(len(pairs))]
    assert chosen == in_order[: len(chosen)] and 0 < len(chosen) < len(pairs)
    size = sum(len(a.encode()) + len(b.encode()) + 2 for a, b in chosen)
    assert (
        size - len(chosen[-1][0].encode()) - len(chosen[-1][1].encode()) - 2
        < (fixture.MAX_TRAINING_BYTES)
        <= size
    )  # the pair that crosses the limit is the last one
    lines = list(wmt_tokenizer.training_lines(chosen, fixture.MAX_TRAINING_BYTES))
    assert lines[:4] == [chosen[0][0], chosen[0][1], chosen[1][0], chosen[1][1]]
    model = wmt_tokenizer.train(lines, fixture.TOKENIZER_VOCAB)
    assert model == (prepared / "wmt" / wmt_tokenizer.MODEL_FILE).read_bytes()  # deterministic
    tokenizer = wmt_tokenizer.Tokenizer(model)
    assert (tokenizer.vocab_size, tokenizer.encode("Haus")[-1]) == (256, wmt_tokenizer.EOS_ID)


def test_interrupted_prepare_resumes_to_identical_files(prepared, tmp_path, monkeypatch):
    archives = fixture.write_release(tmp_path / "archives")
    data, root = tmp_path / "data", tmp_path / "data" / pipeline.DATASET_DIR
    real_write, real_train = prepare.write_split, wmt_tokenizer.train

    def dies_in_training(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(wmt_tokenizer, "train", dies_in_training)
    with pytest.raises(KeyboardInterrupt):
        prepare_fixture(data, archives)
    assert not (root / wmt_tokenizer.MODEL_FILE).exists()
    monkeypatch.setattr(wmt_tokenizer, "train", real_train)

    def dies_on_validation(folder, pairs, *args):
        if folder.name == "validation":
            next(pairs)
            (folder.parent / ".validation.partial").mkdir()
            (folder.parent / ".validation.partial" / "inputs.bin").write_bytes(b"\x01" * 7)
            raise KeyboardInterrupt
        return real_write(folder, pairs, *args)

    monkeypatch.setattr(prepare, "write_split", dies_on_validation)
    with pytest.raises(KeyboardInterrupt):
        prepare_fixture(data, archives)
    assert (root / "train" / pipeline.SPLIT_FILE).exists()
    assert not (root / pipeline.INDEX_FILE).exists()
    with pytest.raises(FileNotFoundError, match="algoperf prepare wmt --data_dir DIR"):
        pipeline.Pipeline().load(str(data))
    (root / prepare.WORK_DIR / ".dev.tgz.partial").write_bytes(b"half")  # a leftover
    written = []
    monkeypatch.setattr(
        prepare, "write_split", lambda folder, *a: written.append(folder.name) or real_write(
            folder, *a)
    )  # fmt: skip
    prepare_fixture(data, archives)
    assert written == ["validation", "test"]  # train was finished: kept
    assert tree_bytes(root) == tree_bytes(prepared / pipeline.DATASET_DIR)


def test_counts_off_the_release_stop_before_anything_is_written(tmp_path, capsys):
    archives = fixture.write_release(tmp_path / "archives")
    wrong = {**fixture.RAW_COUNTS, "test": 3_003}
    with pytest.raises(ValueError, match="differ from the release's"):
        prepare_fixture(tmp_path / "data", archives, expected_counts=wrong)
    root = tmp_path / "data" / pipeline.DATASET_DIR
    assert list(root.iterdir()) == []  # not even the extracted files (a wrong archive's?)
    # The command checks the release's counts: one line, exit 1.
    code = prepare.main(["--data_dir", str(tmp_path / "cli"), "--archive_dir", str(archives)])
    lines = capsys.readouterr().err.strip().split("\n")
    error = lines[-1]
    assert code == 1 and all(line.startswith("[algoperf prepare] ") for line in lines[:-1])
    assert error.startswith("algoperf prepare wmt: error: pairs per split {'train': 177")
    assert prepare.main(["--data_dir", str(tmp_path), "--num_threads", "0"]) == 1
    assert capsys.readouterr().err.strip().endswith("--num_threads must be at least 1, got 0.")
    (tmp_path / "junk").write_bytes(b"junk")
    assert prepare.main(["--data_dir", str(tmp_path), "--tokenizer", str(tmp_path / "junk")]) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "junk is not a SentencePiece model" in error


def test_missing_and_damaged_archives_are_one_line(tmp_path, capsys):
    archives = fixture.write_release(tmp_path / "archives")
    (archives / "rapid2016.tgz").unlink()
    with pytest.raises(FileNotFoundError, match="no rapid2016.tgz in --archive_dir") as missing:
        prepare_fixture(tmp_path / "data", archives)
    assert "\n" not in str(missing.value)
    content = (archives / "dev.tgz").read_bytes()
    (archives / "dev.tgz").write_bytes(content[: len(content) // 2])
    fixture.write_tgz(archives / "rapid2016.tgz", fixture.release_members()["rapid2016.tgz"])
    with pytest.raises(ValueError, match="dev.tgz is damaged or incomplete") as damaged:
        prepare_fixture(tmp_path / "data", archives)
    assert "\n" not in str(damaged.value) and "delete it" in str(damaged.value)
    fixture.write_tgz(archives / "dev.tgz", {"dev/newstest2012.de": b"x\n"})
    with pytest.raises(FileNotFoundError, match="dev.tgz holds no newstest2013.de"):
        prepare_fixture(tmp_path / "data", archives)


def test_missing_archives_are_downloaded(prepared, tmp_path, monkeypatch):
    served = fixture.write_release(tmp_path / "served")
    sources = {
        split: tuple(
            dataclasses.replace(
                source, urls=(f"file://{tmp_path}/nowhere", (served / source.archive).as_uri())
            )
            for source in sources
        )
        for split, sources in prepare.SOURCES.items()
    }
    monkeypatch.setattr(prepare, "SOURCES", sources)
    (tmp_path / "empty").mkdir()
    root = prepare_fixture(tmp_path / "data", tmp_path / "empty", allow_download=True)
    downloads = root / prepare.DOWNLOAD_DIR
    assert sorted(p.name for p in downloads.iterdir()) == sorted(fixture.release_members())
    for name in pipeline.SPLITS:
        assert tree_bytes(root / name) == tree_bytes(prepared / "wmt" / name)


# --- packed train rows -----------------------------------------------------------------------
def test_packed_rows_hold_whole_pairs_with_segments_and_positions(loaded):
    wmt, dataset = loaded
    split, stored = dataset["train"], stored_pairs(dataset["train"])
    batch = next(wmt.train_batches(dataset, 16, seed=0, shard=Shard()))
    assert set(batch) == set(pipeline.TRAIN_KEYS)
    for key, array in batch.items():
        assert array.shape == (16, MAX_LEN)
        assert array.dtype == (np.float32 if key == "weights" else np.int32)
    for row in range(16):
        for side in pipeline.SIDES:
            segmentation = batch[f"{side}_segmentation"][row]
            position = batch[f"{side}_position"][row]
            used = int((segmentation > 0).sum())
            assert (segmentation[used:] == 0).all() and (batch[side][row][used:] == 0).all()
            assert (np.diff(segmentation[:used]) >= 0).all()  # segments are contiguous
            for s in range(1, segmentation.max() + 1):  # positions restart in each segment
                assert position[segmentation == s].tolist() == list(
                    range((segmentation == s).sum())
                )
            assert (position[used:] == 0).all()
        pairs = list(zip(row_segments(batch, row, "inputs"), row_segments(batch, row, "targets")))
        assert pairs and all(pair in stored for pair in pairs)  # whole pairs, never split
        np.testing.assert_array_equal(batch["weights"][row], batch["targets_segmentation"][row] > 0)
    assert len(split) == fixture.SIZES["train"]


def test_weights_count_unk_ids_inside_a_sentence(loaded):
    """Id 0 is unk as well as padding: inside a sentence it is a real token."""
    wmt, dataset = loaded
    split = dataset["validation"]
    with_unk = [i for i in range(len(split)) if 0 in split.pair(i)[1].tolist()]
    assert with_unk  # characters the tiny tokenizer never saw („, &, :)
    batch = pipeline.assemble(split, np.asarray(with_unk[:1]), np.ones(1, int), MAX_LEN)
    length = len(split.pair(with_unk[0])[1])
    assert batch["weights"][0].sum() == length and (batch["targets"][0][:length] == 0).any()


def test_each_epoch_packs_every_pair_once_greedily(loaded):
    wmt, dataset = loaded
    split = dataset["train"]
    stream = pipeline.RowStream(split.lengths, dataset.pairs["train"], MAX_LEN, seed=4)
    stream.take(0, 1)
    rows = stream.num_rows
    ids, counts = stream.take(0, rows)
    assert sorted(ids.tolist()) == list(range(len(split)))  # every pair once in epoch 0
    np.testing.assert_array_equal(ids, np.arange(len(split))[stream.order])  # in epoch order
    bounds = np.r_[0, np.cumsum(counts)]
    for lo, hi in zip(bounds[:-2], bounds[1:-1]):  # a row closes only when the next won't fit
        assert (split.lengths[ids[lo:hi]].sum(axis=0) <= MAX_LEN).all()
        assert (split.lengths[ids[lo : hi + 1]].sum(axis=0) > MAX_LEN).any()
    next_ids, _ = stream.take(rows, 5)  # epoch 1: another permutation
    assert stream.epoch == 1 and next_ids.tolist() != ids[: len(next_ids)].tolist()


def test_train_batches_are_the_same_on_1_2_and_4_ranks_and_after_a_resume(loaded):
    wmt, dataset = loaded
    steps = 20  # about three epochs of the fixture at 8 rows of 64 ids
    one = wmt.train_batches(dataset, 8, seed=7, shard=Shard())
    first = [next(one) for _ in range(steps)]
    for ranks in (2, 4):
        streams = [
            wmt.train_batches(dataset, 8, seed=7, shard=Shard(r, ranks)) for r in range(ranks)
        ]
        for batch in first:
            parts = [next(stream) for stream in streams]
            for key in pipeline.TRAIN_KEYS:
                np.testing.assert_array_equal(
                    np.concatenate([part[key] for part in parts]), batch[key]
                )
    for start in (3, 13):
        resumed = wmt.train_batches(dataset, 8, seed=7, shard=Shard(1, 2), start_step=start)
        for batch in first[start : start + 3]:
            part = next(resumed)
            for key in pipeline.TRAIN_KEYS:
                np.testing.assert_array_equal(part[key], batch[key][4:])
    other = next(wmt.train_batches(dataset, 8, seed=8, shard=Shard()))
    assert not np.array_equal(other["targets"], first[0]["targets"])


# --- eval rows -------------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["validation", "test", "eval_train"])
@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_eval_covers_every_pair_once_on_1_2_and_3_ranks(loaded, split, ranks):
    wmt, dataset = loaded
    source = dataset["train" if split == "eval_train" else split]
    seen = []
    for rank in range(ranks):
        for batch in wmt.eval_batches(
            dataset, split, 12, seed=3, shard=Shard(rank, ranks), num_eval_train_examples=50
        ):
            assert set(batch) == set(pipeline.EVAL_KEYS)
            assert batch["inputs"].shape == batch["weights"].shape == (12 // ranks, MAX_LEN)
            for row in range(len(batch["inputs"])):
                length = int(batch["weights"][row].sum())
                if length == 0:  # a padding row
                    assert not batch["inputs"][row].any() and not batch["targets"][row].any()
                    continue
                assert (batch["weights"][row][:length] == 1).all()
                target = batch["targets"][row][:length].tolist()
                assert target[-1] == pipeline.EOS_ID and not batch["targets"][row][length:].any()
                german = batch["inputs"][row]
                source_length = int(np.flatnonzero(german == pipeline.EOS_ID)[0]) + 1
                seen.append((german[:source_length].tolist(), target))
    expected = stored_pairs(source)
    if split == "eval_train":
        expected = [
            expected[i] for i in np.sort(np.random.default_rng(3).permutation(len(source))[:50])
        ]
    assert sorted(seen) == sorted(expected) and len(seen) == len(expected)


def test_max_len_leaves_out_longer_pairs_everywhere(prepared):
    wmt = pipeline.Pipeline(pipeline.Options(max_len=16, vocab_size=fixture.TOKENIZER_VOCAB))
    dataset = wmt.load(str(prepared))
    for name in pipeline.SPLITS:
        fits = (dataset[name].lengths <= 16).all(axis=1)
        assert 0 < fits.sum() < len(dataset[name])
        np.testing.assert_array_equal(dataset.pairs[name], np.flatnonzero(fits))
    batch = next(wmt.train_batches(dataset, 4, seed=0, shard=Shard()))
    assert batch["inputs"].shape == (4, 16)
    rows = sum(
        int(b["weights"].any(axis=1).sum())
        for b in wmt.eval_batches(
            dataset, "test", 8, seed=0, shard=Shard(), num_eval_train_examples=0
        )
    )
    assert rows == int((dataset["test"].lengths <= 16).all(axis=1).sum())


# --- the tokenizer and detokenisation --------------------------------------------------------
def real_sentencepiece_model() -> pathlib.Path:
    """A real 32,000-piece SentencePiece model that mistral-common ships (unk 0, bos 1, eos 2)."""
    import mistral_common

    return pathlib.Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"


def test_a_real_sentencepiece_model_round_trips_through_rows(tmp_path):
    tokenizer = wmt_tokenizer.Tokenizer.from_file(real_sentencepiece_model())
    assert tokenizer.vocab_size == 32_000
    texts = [
        ("Gutach: Noch mehr Sicherheit für Fußgänger", "Gutach: Increased safety for pedestrians"),
        ("Die Preise stiegen um 3,5 % auf 1.200 €.", 'Prices rose by 3.5% to €1,200 ("a record").'),
        ("Zürich – Köln – München", "Zurich – Cologne – Munich"),
    ]
    pairs = [(tokenizer.encode(german), tokenizer.encode(english)) for german, english in texts]
    for (german, english), (german_ids, english_ids) in zip(texts, pairs):
        assert german_ids[-1] == english_ids[-1] == wmt_tokenizer.EOS_ID
        assert tokenizer.decode(cut_at_eos(german_ids)) == german
        assert tokenizer.decode(english_ids) == english  # EOS decodes to nothing
    assert tokenizer.encode_batch([t[1] for t in texts], num_threads=2) == [p[1] for p in pairs]
    split = pipeline.split_of(pairs)
    batch = pipeline.assemble(split, np.arange(3), np.asarray([1, 1, 1, 0]), 64, packed=False)
    assert detokenize_rows(batch["targets"], tokenizer.decode) == [*[t[1] for t in texts], ""]
    assert detokenize_rows(batch["inputs"][:3], tokenizer.decode) == [t[0] for t in texts]
    packed = pipeline.assemble(split, np.arange(3), np.asarray([3]), 128)
    assert [tokenizer.decode(s) for s in row_segments(packed, 0, "targets")] == [
        t[1] for t in texts
    ]


def test_tokenizer_refuses_other_files_and_ids(tmp_path):
    import io

    import sentencepiece

    (tmp_path / "junk").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="is not a SentencePiece model"):
        wmt_tokenizer.Tokenizer.from_file(tmp_path / "junk")
    lines = [s for pair in fixture.corpus(200, np.random.default_rng(0)) for s in pair]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=128, pad_id=0, unk_id=3,
        minloglevel=2,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"unk/bos/eos ids \(3, 1, 2\)"):
        wmt_tokenizer.Tokenizer(model.getvalue())
    with pytest.raises(ValueError, match="could not train the tokenizer"):
        wmt_tokenizer.train(["ab ab"], 500)


# --- errors, options, fake batches -----------------------------------------------------------
def test_missing_or_damaged_data_is_one_line_naming_the_command(prepared, tmp_path):
    with pytest.raises(FileNotFoundError) as missing:
        pipeline.Pipeline().load(str(tmp_path / "nowhere"))
    message = str(missing.value)
    assert "\n" not in message and "algoperf prepare wmt --data_dir DIR" in message
    copy = tmp_path / "copy"
    shutil.copytree(prepared / pipeline.DATASET_DIR, copy / pipeline.DATASET_DIR)
    wmt = pipeline.Pipeline(pipeline.Options(**fixture.PIPELINE_OPTIONS))
    assert wmt.load(str(copy / pipeline.DATASET_DIR))  # the folder itself is found too
    with open(copy / "wmt" / "test" / "targets.bin", "r+b") as handle:
        handle.truncate(100)
    with pytest.raises(ValueError, match="not the 427 ids") as damaged:
        wmt.load(str(copy))
    assert "\n" not in str(damaged.value) and "algoperf prepare wmt" in str(damaged.value)
    shutil.rmtree(copy / "wmt" / "test")
    with pytest.raises(FileNotFoundError, match="test is missing or incomplete"):
        wmt.load(str(copy))


def test_data_source_and_vocabulary_option(prepared):
    wmt = pipeline.Pipeline(pipeline.Options(**fixture.PIPELINE_OPTIONS))
    wmt.load(str(prepared))
    assert wmt.data_source.startswith("prepared data that is not the benchmark's: pair counts")
    with pytest.raises(ValueError, match="vocab_size=100"):
        pipeline.Pipeline(pipeline.Options(vocab_size=100)).load(str(prepared))
    with pytest.raises(ValueError, match="max_len must be a whole number"):
        pipeline.Options(max_len=1)


def test_fake_batches_have_the_real_structure():
    batch = pipeline.fake_batch(5, seed=1, max_len=32, vocab_size=50)
    assert set(batch) == set(pipeline.TRAIN_KEYS)
    assert all(array.shape == (5, 32) for array in batch.values())
    assert batch["inputs"].max() < 50 and (batch["targets_segmentation"].max(axis=1) > 1).all()
    np.testing.assert_array_equal(batch["weights"], batch["targets_segmentation"] > 0)
    evaluation = pipeline.fake_batch(4, seed=1, max_len=32, vocab_size=50, packed=False)
    assert set(evaluation) == set(pipeline.EVAL_KEYS)
    assert evaluation["weights"][:3].any(axis=1).all() and not evaluation["weights"][3].any()
    full = pipeline.Pipeline().fake_batch(2)
    assert full["inputs"].shape == (2, pipeline.MAX_LEN) and full["inputs"].max() < 32_000
    with pytest.raises(ValueError, match="layout"):
        pipeline.fake_batch(2, layout="NWC")
