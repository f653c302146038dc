"""A small FineWeb-Edu release for tests: parquet shards with the release's columns, a tiny
byte-level BPE trained on them in-process (GPT-2's files are not available offline), run
through `workloads.finewebedu_lm.prepare`.

The documents are made-up English (sentences of common words, seeded), with an empty document
(no tokens, no EOS) and one with accents, a dash and an emoji (multi-byte characters for the
byte-level BPE). With `PIPELINE_OPTIONS` (windows of 17 tokens) the prepared fixture holds
`SIZES` windows per split.
"""

from __future__ import annotations

import pathlib

import numpy as np

from algoperf.workloads.finewebedu_lm import prepare, release

SHARD_DOCUMENTS = (23, 19, 18)
"""Documents per shard (60: 54 train, 6 validation)."""
EOS_TOKEN = release.EOS_TOKEN
TOKENIZER_VOCAB = 320
"""The tiny BPE's vocabulary, EOS (the last id) included: the 256 bytes and 63 merges."""
SEQ_LEN = 16
PIPELINE_OPTIONS = {"seq_len": SEQ_LEN, "vocab_size": TOKENIZER_VOCAB}
SIZES = {"train": 506, "validation": 60}
"""Windows of SEQ_LEN + 1 tokens per split of the prepared fixture (eval_train takes every
train window: fewer than the spec's 10,000)."""
COLUMNS = (
    "text", "id", "dump", "url", "file_path", "language", "language_score", "token_count",
    "score", "int_score",
)  # fmt: skip
VOCABULARY = (
    "the of and to in is that for it as was with be by on not this are or from at which but "
    "have an they you were her his one all we there been if more when will would who so no "
    "water light energy plant cell earth heat river history student teacher school learn "
    "number system change form power group point small large early study example children "
    "language reading science method problem question answer process growth market city"
)
WORDS = tuple(VOCABULARY.split())


def documents(count: int, rng: np.random.Generator) -> list[str]:
    """`count` made-up English documents of 2-9 sentences."""
    texts = []
    for _ in range(count):
        sentences = []
        for _ in range(int(rng.integers(2, 10))):
            words = list(rng.choice(WORDS, int(rng.integers(4, 15))))
            words[0] = words[0].capitalize()
            sentences.append(" ".join(words) + str(rng.choice([".", ".", "?", "!"])))
        texts.append(" ".join(sentences))
    return texts


def shard_texts(seed: int = 0) -> list[list[str]]:
    """Each shard's documents; shard 0 holds an empty document and a multi-byte one."""
    rng = np.random.default_rng(seed)
    shards = [documents(count, rng) for count in SHARD_DOCUMENTS]
    shards[0][3] = ""
    shards[0][7] = "Naïve café — 10 µm wide 🌍 cells. " + shards[0][7]
    return shards


def write_shard(path: pathlib.Path, texts: list[str], first_id: int) -> None:
    """One parquet file with the release's columns (several row groups)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    count = len(texts)
    table = pa.table(
        {
            "text": pa.array(texts, pa.string()),
            "id": [
                f"<urn:uuid:{first_id + i:08x}-0000-4000-8000-000000000000>" for i in range(count)
            ],
            "dump": ["CC-MAIN-2024-10"] * count,
            "url": [f"https://example.org/page/{first_id + i}" for i in range(count)],
            "file_path": ["s3://commoncrawl/crawl-data/fixture.warc.gz"] * count,
            "language": ["en"] * count,
            "language_score": pa.array([0.95] * count, pa.float64()),
            "token_count": pa.array([len(text.split()) for text in texts], pa.int64()),
            "score": pa.array([3.2] * count, pa.float64()),
            "int_score": pa.array([3] * count, pa.int64()),
        }
    )
    assert tuple(table.column_names) == COLUMNS
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=8)


def write_release(folder: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """The shards as `folder/sample/10BT/00N_00000.parquet`; returns `folder` (--archive_dir)."""
    first = 0
    for number, texts in enumerate(shard_texts(seed)):
        write_shard(folder / release.RELEASE_PATH / f"{number:03d}_00000.parquet", texts, first)
        first += len(texts)
    return folder


def train_tokenizer(texts: list[str], path: pathlib.Path, vocab: int = TOKENIZER_VOCAB):
    """A byte-level BPE like GPT-2's, trained on `texts`, with EOS as its last id; saved to
    `path` (tokenizer.json) and returned."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab - 1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    tokenizer.add_special_tokens([EOS_TOKEN])
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return tokenizer


def write_fixture(folder: pathlib.Path) -> pathlib.Path:
    """The prepared fixture (shards in `folder/archives`, the tokenizer in
    `folder/tokenizer.json`, run through `prepare`); returns the --data_dir. Use the pipeline
    with `PIPELINE_OPTIONS`."""
    archives = write_release(folder / "archives")
    texts = [text for shard in shard_texts() for text in shard]
    train_tokenizer(texts, folder / "tokenizer.json")
    expected = prepare.Expected(
        window=SEQ_LEN + 1,
        train_windows=SIZES["train"],
        tolerance=0.0,
        validation_windows=SIZES["validation"],
    )
    prepare.prepare(
        folder, str(archives), tokenizer=str(folder / "tokenizer.json"), num_workers=0,
        expected=expected, require_gpt2=False, log=lambda line: None,
    )  # fmt: skip
    return folder
