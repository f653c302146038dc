"""finewebedu_lm's data: prepare from parquet shards in the release's format with a tiny BPE
(counts, EOS, the seeded 90/10 document split, uint16 files, resume after an interruption, the
download path), windows cut across documents, rank-independent train batches and resume,
exact eval coverage on 1-3 ranks, and the one-line errors."""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil

import numpy as np
import pytest

from algoperf.data.sharding import Shard
from algoperf.workloads.finewebedu_lm import fixture, prepare, release
from algoperf.workloads.finewebedu_lm import input_pipeline as pipeline

WINDOW = fixture.SEQ_LEN + 1
FIXTURE_EXPECTED = prepare.Expected(
    window=WINDOW,
    train_windows=fixture.SIZES["train"],
    tolerance=0.0,
    validation_windows=fixture.SIZES["validation"],
)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> pathlib.Path:
    return fixture.write_fixture(tmp_path_factory.mktemp("finewebedu"))


@pytest.fixture(scope="module")
def loaded(prepared):
    lm = pipeline.Pipeline(pipeline.Options(**fixture.PIPELINE_OPTIONS))
    return lm, lm.load(str(prepared))


def tokenizer_of(folder: pathlib.Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(folder / "tokenizer.json"))


def split_documents_of(tokens: np.ndarray, eos: int) -> list[list[int]]:
    """The documents of a token file: the runs ending in EOS."""
    ends = np.flatnonzero(tokens == eos)
    assert len(ends) == 0 or ends[-1] == len(tokens) - 1, "the file must end with an EOS"
    return [tokens[a + 1 : b].tolist() for a, b in zip(np.r_[-1, ends[:-1]], ends)]


def prepare_fixture(folder: pathlib.Path, archives: pathlib.Path, **kwargs) -> pathlib.Path:
    return prepare.prepare(
        folder, str(archives), tokenizer=str(archives.parent / "tokenizer.json"),
        num_workers=kwargs.pop("num_workers", 0), expected=FIXTURE_EXPECTED, require_gpt2=False,
        log=lambda line: None, **kwargs,
    )  # fmt: skip


def file_bytes(root: pathlib.Path) -> dict[str, bytes]:
    return {name: (root / f"{name}.bin").read_bytes() for name in pipeline.SPLITS}


def window_rows(batch: dict) -> np.ndarray:
    """The windows of a batch's rows: inputs followed by the last target."""
    return np.concatenate([batch["inputs"], batch["targets"][:, -1:]], axis=1)


# --- prepare ---------------------------------------------------------------------------------
def test_prepare_writes_every_document_once_with_eos_split_90_10(prepared):
    root = prepared / pipeline.DATASET_DIR
    index = json.loads((root / pipeline.INDEX_FILE).read_text())
    tokenizer = tokenizer_of(prepared)
    eos = tokenizer.token_to_id(release.EOS_TOKEN)
    assert (index["eos_id"], index["vocab_size"], index["dtype"]) == (eos, 320, "uint16")
    texts = [text for shard in fixture.shard_texts() for text in shard]
    is_train, validation_order = prepare.split_documents(len(texts))
    assert is_train.sum() == len(texts) * 9 // 10 == 54
    decoded = {}
    for name in pipeline.SPLITS:
        path = root / index["splits"][name]["file"]
        tokens = np.fromfile(path, np.uint16)
        assert path.stat().st_size == 2 * index["splits"][name]["tokens"] == 2 * len(tokens)
        assert hashlib.sha256(tokens.tobytes()).hexdigest() == index["splits"][name]["sha256"]
        decoded[name] = [tokenizer.decode(ids) for ids in split_documents_of(tokens, eos)]
    # Every non-empty document ends with one EOS: train in the release's order, validation in
    # the split's hash order; the empty document (train) adds no token.
    train_texts = [text for text, keep in zip(texts, is_train) if keep and text]
    assert decoded["train"] == train_texts
    assert decoded["validation"] == [texts[d] for d in validation_order if texts[d]]
    assert index["splits"]["train"]["documents"] == 54
    assert index["splits"]["train"]["empty_documents"] == 1
    assert index["splits"]["validation"]["documents"] == 6
    assert any("🌍" in text for text in decoded["train"] + decoded["validation"])
    for name, size in fixture.SIZES.items():
        assert index["splits"][name]["tokens"] // WINDOW == size
    assert index["benchmark"]["ok"] is False and "GPT-2" in index["benchmark"]["why"]
    assert not (root / prepare.WORK_DIR).exists()


def test_split_rule_is_a_fixed_hash_of_the_document_number():
    mask = (1 << 64) - 1

    def splitmix64(number: int, seed: int) -> int:  # the reference, in Python integers
        z = (number + (seed << 40) + 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    keys = prepare.document_keys(1000)
    assert int(keys[0]) == 0xE220A8397B1DCDAF  # splitmix64's first output from state 0
    assert [int(k) for k in keys] == [splitmix64(n, 0) for n in range(1000)]
    assert [int(k) for k in prepare.document_keys(5, seed=3)] == [
        splitmix64(n, 3) for n in range(5)
    ]
    is_train, validation = prepare.split_documents(1000)
    assert is_train.sum() == 900 and not is_train[validation].any() and len(validation) == 100
    assert list(validation) == sorted(validation, key=lambda d: int(keys[d]))
    again, _ = prepare.split_documents(1000)
    assert np.array_equal(is_train, again)


def test_interrupted_prepare_resumes_to_identical_files(prepared, tmp_path, monkeypatch):
    archives = fixture.write_release(tmp_path / "archives")
    shutil.copy(prepared / "tokenizer.json", tmp_path / "tokenizer.json")
    real = prepare.tokenize_shard
    calls = []

    def dies_on_second_shard(source, *args):
        calls.append(pathlib.Path(source).name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed mid-run
        return real(source, *args)

    monkeypatch.setattr(prepare, "tokenize_shard", dies_on_second_shard)
    with pytest.raises(KeyboardInterrupt):
        prepare_fixture(tmp_path / "data", archives)
    root = tmp_path / "data" / pipeline.DATASET_DIR
    assert not (root / pipeline.INDEX_FILE).exists()
    with pytest.raises(FileNotFoundError, match="algoperf prepare finewebedu_lm"):
        pipeline.Pipeline().load(str(tmp_path / "data"))
    # A half-written shard file from the killed worker is overwritten.
    (root / prepare.WORK_DIR / ".001_00000.tokens.partial").write_bytes(b"\x01" * 7)
    calls.clear()
    monkeypatch.setattr(prepare, "tokenize_shard", lambda *a: calls.append(a) or real(*a))
    prepare_fixture(tmp_path / "data", archives)
    assert len(calls) == 2  # the first shard was kept
    assert file_bytes(root) == file_bytes(prepared / pipeline.DATASET_DIR)


def test_interrupted_final_write_is_never_taken_for_a_dataset(prepared, tmp_path, monkeypatch):
    archives = fixture.write_release(tmp_path / "archives")
    shutil.copy(prepared / "tokenizer.json", tmp_path / "tokenizer.json")
    real = prepare.write_tokens

    def dies_on_validation(path, chunks):
        if path.name == "validation.bin":
            next(iter(chunks))
            raise OSError("disk full")
        return real(path, chunks)

    monkeypatch.setattr(prepare, "write_tokens", dies_on_validation)
    with pytest.raises(OSError, match="disk full"):
        prepare_fixture(tmp_path / "data", archives)
    root = tmp_path / "data" / pipeline.DATASET_DIR
    assert (root / "train.bin").exists() and not (root / pipeline.INDEX_FILE).exists()
    with pytest.raises(FileNotFoundError, match="not prepared"):
        pipeline.Pipeline().load(str(tmp_path / "data"))
    monkeypatch.setattr(prepare, "write_tokens", real)
    prepare_fixture(tmp_path / "data", archives)
    assert file_bytes(root) == file_bytes(prepared / pipeline.DATASET_DIR)
    assert sorted(p.name for p in root.iterdir()) == ["index.json", "train.bin", "validation.bin"]


def test_worker_processes_give_the_same_files(prepared, tmp_path):
    archives = fixture.write_release(tmp_path / "archives")
    shutil.copy(prepared / "tokenizer.json", tmp_path / "tokenizer.json")
    root = prepare_fixture(tmp_path / "data", archives, num_workers=2)
    assert file_bytes(root) == file_bytes(prepared / pipeline.DATASET_DIR)


def test_batches_of_documents_tokenize_as_whole_shards(prepared, tmp_path, monkeypatch):
    archives = fixture.write_release(tmp_path / "archives")
    shutil.copy(prepared / "tokenizer.json", tmp_path / "tokenizer.json")
    monkeypatch.setattr(prepare, "DOCUMENTS_PER_BATCH", 5)  # batches across row groups
    root = prepare_fixture(tmp_path / "data", archives)
    assert file_bytes(root) == file_bytes(prepared / pipeline.DATASET_DIR)


def test_real_text_round_trips(prepared, tmp_path):
    """Real prose nobody here wrote (the standard library's module docstrings) through the
    byte-level BPE and prepare: every document comes back exactly."""
    import collections
    import decimal
    import email
    import json as json_module
    import logging
    import pathlib as pathlib_module
    import textwrap
    import unittest

    modules = (collections, decimal, email, json_module, logging, pathlib_module, textwrap)
    texts = [module.__doc__ for module in (*modules, unittest) if module.__doc__]
    texts += [fn.__doc__ for fn in (shutil.copy, textwrap.dedent, json.dumps) if fn.__doc__]
    fixture.write_shard(tmp_path / "real" / "000_00000.parquet", texts, 0)
    shutil.copy(prepared / "tokenizer.json", tmp_path / "real.json")
    root = prepare.prepare(
        tmp_path / "data", str(tmp_path / "real"), tokenizer=str(tmp_path / "real.json"),
        num_workers=0, expected=None, require_gpt2=False, log=lambda line: None,
    )  # fmt: skip
    tokenizer = tokenizer_of(prepared)
    eos = tokenizer.token_to_id(release.EOS_TOKEN)
    back = []
    for name in pipeline.SPLITS:
        tokens = np.fromfile(root / f"{name}.bin", np.uint16)
        back += [tokenizer.decode(ids) for ids in split_documents_of(tokens, eos)]
    assert sorted(back) == sorted(texts)
    assert json.loads((root / pipeline.INDEX_FILE).read_text())["benchmark"]["ok"] is False


def test_counts_off_the_expected_stop_before_writing(prepared, tmp_path):
    archives = fixture.write_release(tmp_path / "archives")
    (archives / release.RELEASE_PATH / "002_00000.parquet").unlink()  # a shard missing
    shutil.copy(prepared / "tokenizer.json", tmp_path / "tokenizer.json")
    with pytest.raises(ValueError, match="train windows of 17 tokens, expected 506"):
        prepare_fixture(tmp_path / "data", archives)
    assert not (tmp_path / "data" / pipeline.DATASET_DIR / "train.bin").exists()


def test_the_command_refuses_a_tokenizer_other_than_gpt2(prepared, tmp_path, capsys):
    archives = fixture.write_release(tmp_path / "archives")
    code = prepare.main(
        ["--data_dir", str(tmp_path / "data"), "--archive_dir", str(archives),
         "--tokenizer", str(prepared / "tokenizer.json")]
    )  # fmt: skip
    error = capsys.readouterr().err.strip()
    assert code == 1 and "\n" not in error
    assert "is not GPT-2's tokenizer" in error and "50257" in error


def test_download_checks_each_shard_against_the_hub(prepared, tmp_path, monkeypatch):
    import huggingface_hub

    hub = fixture.write_release(tmp_path / "hub")
    files = sorted((hub / release.RELEASE_PATH).glob("*.parquet"))
    listing = [
        (f"{release.RELEASE_PATH}/{f.name}", f.stat().st_size, release.file_digest(f, "sha256"))
        for f in files
    ]
    monkeypatch.setattr(release, "list_release", lambda revision: ("c0ffee", listing))
    monkeypatch.setattr(
        huggingface_hub, "hf_hub_url", lambda repo, path, **kw: (hub / path).as_uri()
    )
    shutil.copy(prepared / "tokenizer.json", tmp_path / "tokenizer.json")
    root = prepare.prepare(
        tmp_path / "data", None, tokenizer=str(tmp_path / "tokenizer.json"), num_workers=0,
        expected=FIXTURE_EXPECTED, require_gpt2=False, log=lambda line: None,
    )  # fmt: skip
    assert file_bytes(root) == file_bytes(prepared / pipeline.DATASET_DIR)
    index = json.loads((root / pipeline.INDEX_FILE).read_text())
    assert index["source"]["revision"] == "c0ffee"
    assert [s["sha256"] for s in index["source"]["shards"]] == [sha for *_, sha in listing]

    # A shard whose bytes differ from the hub's sha256 is deleted and refused in one line.
    listing[0] = (listing[0][0], listing[0][1], "0" * 64)
    with pytest.raises(OSError, match="sha256 differs") as refused:
        release.download_release(tmp_path / "again", "main", log=lambda line: None)
    assert "\n" not in str(refused.value)
    assert not list((tmp_path / "again" / release.DOWNLOAD_DIR).glob("*.parquet"))


def test_a_downloaded_tokenizer_must_be_gpt2(prepared, tmp_path, monkeypatch):
    import huggingface_hub

    url = (prepared / "tokenizer.json").as_uri()
    monkeypatch.setattr(huggingface_hub, "hf_hub_url", lambda repo, path, **kw: url)
    with pytest.raises(OSError, match="not GPT-2's tokenizer"):
        release.get_tokenizer(tmp_path, None, log=lambda line: None)
    assert not (tmp_path / "tokenizer.json").exists()


# --- windows ---------------------------------------------------------------------------------
def test_windows_are_contiguous_spans_across_documents(prepared, loaded):
    lm, dataset = loaded
    tokens = np.fromfile(prepared / pipeline.DATASET_DIR / "validation.bin", np.uint16)
    eos = json.loads((prepared / pipeline.DATASET_DIR / pipeline.INDEX_FILE).read_text())["eos_id"]
    rows = [
        window_rows(batch)[batch["weights"][:, 0] > 0]
        for batch in lm.eval_batches(
            dataset, "validation", 8, seed=0, shard=Shard(), num_eval_train_examples=0
        )
    ]
    windows = np.concatenate(rows)
    count = len(tokens) // WINDOW
    assert len(windows) == count == fixture.SIZES["validation"]
    # Non-overlapping and back to back; the last partial window (len % 17 tokens) is dropped.
    assert np.array_equal(windows.reshape(-1), tokens[: count * WINDOW])
    assert len(tokens) % WINDOW > 0
    crossing = [w for w in windows if eos in w[:-1]]
    assert crossing, "some window holds the end of one document and the start of the next"


def test_targets_are_inputs_shifted_within_a_window(loaded):
    lm, dataset = loaded
    batch = next(lm.train_batches(dataset, 8, seed=3, shard=Shard()))
    assert batch["inputs"].dtype == batch["targets"].dtype == np.int32
    assert batch["weights"].dtype == np.float32
    assert batch["inputs"].shape == batch["targets"].shape == batch["weights"].shape == (8, 16)
    assert np.array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
    assert (batch["weights"] == 1).all()
    windows = dataset["train"].windows(WINDOW)
    for row in window_rows(batch):
        assert (windows == row).all(axis=1).sum() == 1


def test_window_batch_cuts_a_known_token_stream():
    tokens = np.arange(50, dtype=np.uint16)
    split = pipeline.TokenSplit(tokens=tokens, documents=1)
    windows = split.windows(7)
    assert windows.shape == (7, 7) and split.num_windows(7) == 7  # 1 token dropped
    batch = pipeline.window_batch(windows, np.array([3, -1, 0]))
    assert batch["inputs"].tolist()[0] == list(range(21, 27))
    assert batch["targets"].tolist()[0] == list(range(22, 28))
    assert batch["inputs"][1].tolist() == [0] * 6 and batch["weights"][1].tolist() == [0.0] * 6
    assert batch["weights"][[0, 2]].tolist() == [[1.0] * 6] * 2


# --- train and eval across ranks ---------------------------------------------------------------
def take(stream, count):
    return [next(stream) for _ in range(count)]


def test_train_batches_are_the_same_on_1_2_and_4_ranks(loaded):
    lm, dataset = loaded
    single = take(lm.train_batches(dataset, 8, seed=5, shard=Shard()), 70)
    for ranks in (2, 4):
        streams = [
            lm.train_batches(dataset, 8, seed=5, shard=Shard(rank, ranks)) for rank in range(ranks)
        ]
        per_rank = [take(stream, 70) for stream in streams]
        for step in range(70):
            for key in ("inputs", "targets", "weights"):
                joined = np.concatenate([per_rank[r][step][key] for r in range(ranks)])
                assert np.array_equal(joined, single[step][key]), (ranks, step, key)
    # The first epoch (506 windows = 63.25 batches of 8) visits every window once.
    windows = dataset["train"].windows(WINDOW)
    seen = np.concatenate([window_rows(batch) for batch in single])[: len(windows)]
    assert sorted(map(bytes, seen.astype(np.uint16))) == sorted(map(bytes, windows))


def test_a_resumed_trial_reads_the_same_batches(loaded):
    lm, dataset = loaded
    stream = take(lm.train_batches(dataset, 8, seed=2, shard=Shard()), 70)
    for step in (1, 17, 63, 64):
        for ranks in (1, 2):
            for rank in range(ranks):
                resumed = next(
                    lm.train_batches(dataset, 8, seed=2, shard=Shard(rank, ranks), start_step=step)
                )
                rows = Shard(rank, ranks).rows(8)
                assert np.array_equal(resumed["inputs"], stream[step]["inputs"][rows])
    other = next(lm.train_batches(dataset, 8, seed=3, shard=Shard()))
    assert not np.array_equal(other["inputs"], stream[0]["inputs"])


@pytest.mark.parametrize("split", ["validation", "eval_train"])
def test_eval_covers_every_window_once_on_1_2_and_3_ranks(loaded, split):
    lm, dataset = loaded
    source = dataset["train" if split == "eval_train" else "validation"].windows(WINDOW)
    expected = np.arange(len(source)) if split == "validation" else None
    for ranks in (1, 2, 3):
        real, padding = [], 0
        for rank in range(ranks):
            for batch in lm.eval_batches(
                dataset, split, 18, seed=4, shard=Shard(rank, ranks), num_eval_train_examples=100
            ):
                assert batch["inputs"].shape == (18 // ranks, 16)
                valid = batch["weights"][:, 0] > 0
                assert (batch["weights"] == valid[:, None]).all()  # whole rows
                assert (batch["inputs"][~valid] == 0).all() and (
                    batch["targets"][~valid] == 0
                ).all()
                padding += int((~valid).sum())
                real.append(window_rows(batch)[valid])
        rows = np.concatenate(real)
        found = [int(np.flatnonzero((source == row).all(axis=1))[0]) for row in rows]
        assert len(found) == len(set(found))
        if expected is not None:
            assert sorted(found) == list(expected)  # all 60, each once
        else:
            assert len(found) == 100
        assert (len(found) + padding) % 18 == 0 and padding < 18


def test_validation_is_the_first_windows_of_its_split(loaded, monkeypatch):
    lm, dataset = loaded
    monkeypatch.setattr(pipeline, "NUM_VALIDATION_WINDOWS", 25)
    batches = list(
        lm.eval_batches(dataset, "validation", 8, seed=0, shard=Shard(), num_eval_train_examples=0)
    )
    rows = np.concatenate([window_rows(b)[b["weights"][:, 0] > 0] for b in batches])
    assert np.array_equal(rows, dataset["validation"].windows(WINDOW)[:25])
    assert len(batches) == 4


def test_there_is_no_test_split(loaded):
    lm, dataset = loaded
    with pytest.raises(ValueError, match="no test split"):
        lm.eval_batches(dataset, "test", 8, seed=0, shard=Shard(), num_eval_train_examples=0)


# --- errors, options, fake batches -------------------------------------------------------------
def test_missing_or_damaged_data_is_one_line_naming_the_command(prepared, tmp_path):
    with pytest.raises(FileNotFoundError) as missing:
        pipeline.Pipeline().load(str(tmp_path / "nowhere"))
    message = str(missing.value)
    assert "\n" not in message and "algoperf prepare finewebedu_lm --data_dir DIR" in message

    copy = tmp_path / "copy"
    shutil.copytree(prepared / pipeline.DATASET_DIR, copy / pipeline.DATASET_DIR)
    lm = pipeline.Pipeline(pipeline.Options(**fixture.PIPELINE_OPTIONS))
    assert lm.load(str(copy / pipeline.DATASET_DIR))  # the folder itself is found too
    with open(copy / pipeline.DATASET_DIR / "train.bin", "r+b") as handle:
        handle.truncate(100)
    with pytest.raises(ValueError, match="not the 8614 tokens") as damaged:
        lm.load(str(copy))
    assert "\n" not in str(damaged.value) and "algoperf prepare finewebedu_lm" in str(damaged.value)
    shutil.copy(prepared / pipeline.DATASET_DIR / "train.bin", copy / pipeline.DATASET_DIR)
    (copy / pipeline.DATASET_DIR / "validation.bin").unlink()
    with pytest.raises(FileNotFoundError, match="validation.bin is missing"):
        lm.load(str(copy))


def test_data_source_and_vocabulary_option(prepared):
    lm = pipeline.Pipeline(pipeline.Options(seq_len=16))
    lm.load(str(prepared))
    assert lm.data_source.startswith("prepared data that is not the benchmark's")
    with pytest.raises(ValueError, match="vocab_size=64"):
        pipeline.Pipeline(pipeline.Options(seq_len=16, vocab_size=64)).load(str(prepared))
    with pytest.raises(ValueError, match="seq_len must be a whole number"):
        pipeline.Options(seq_len=0)


def test_fake_batch_has_the_real_structure():
    batch = pipeline.fake_batch(3, seed=1, seq_len=12, vocab_size=50)
    assert batch["inputs"].shape == batch["targets"].shape == batch["weights"].shape == (3, 12)
    assert batch["inputs"].dtype == np.int32 and batch["weights"].dtype == np.float32
    assert np.array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
    assert batch["inputs"].max() < 50 and (batch["weights"] == 1).all()
    full = pipeline.Pipeline().fake_batch(2)
    assert full["inputs"].shape == (2, pipeline.SEQ_LEN)
    with pytest.raises(ValueError, match="layout"):
        pipeline.fake_batch(2, layout="NWC")
