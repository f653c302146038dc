"""FineWeb-Edu 10BT as GPT-2 token windows: the data protocol of finewebedu_lm.

Prepared layout (what `algoperf prepare finewebedu_lm` writes; docs/data.md, "FineWeb-Edu"):

  <data_dir>/fineweb_edu_10B/
    train.bin        uint16 tokens of the train documents, back to back, each non-empty document
                     followed by EOS (50256), in the release's order
    validation.bin   the same for the validation documents, in the split's seeded order
    index.json       token and document counts, EOS id, vocabulary size, tokenizer and source;
                     written last, so a folder without it is not a finished dataset

A split is cut into non-overlapping windows of `seq_len + 1` tokens (1,025) that run across
document boundaries (no document mask, no position reset); the last partial window is dropped.
A window's `inputs` are its first `seq_len` tokens and its `targets` the last `seq_len`, so the
targets are the inputs shifted by one within the window. Batches are
`{"inputs": int32 [B, L], "targets": int32 [B, L], "weights": float32 [B, L]}`.

- train: the windows in the index rules' order (each epoch a permutation seeded by
  (seed, epoch); global batch `s` a pure function of (seed, s)), so any number of ranks reads
  the same global batches and a resumed trial continues the stream; weights all 1.
- validation: the first 100,000 windows of the validation split, in order; eval_train: the
  index rules' fixed random subset of the train windows. One pass in global batches, the last
  padded with rows of token 0 and weight 0; every window counts exactly once on any number of
  ranks. There is no test split.

The token files are memory-mapped: a rank reads only its rows of each global batch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import numpy as np

from algoperf.data import indices as index_rules
from algoperf.data.pipeline import (
    LAYOUTS,
    InputPipeline,
    PipelineOptions,
    check_split,
    whole_number_option,
)
from algoperf.data.sharding import Shard

DATASET_DIR = "fineweb_edu_10B"
INDEX_FILE = "index.json"
FORMAT = "algoperf-finewebedu-tokens-1"
SPLITS = ("train", "validation")
TOKEN_DTYPE = np.dtype("<u2")
SEQ_LEN = 1_024
VOCAB_SIZE = 50_257
EOS_ID = 50_256
NUM_TRAIN_WINDOWS = 8_749_870
"""Train windows of 1,025 tokens in the benchmark's dataset (upstream's num_train_examples)."""
TRAIN_WINDOWS_TOLERANCE = 0.01
"""How far (relative) a prepared train split may be from NUM_TRAIN_WINDOWS: our document split
is seeded differently from upstream's (docs/data.md), so the count matches only closely."""
NUM_VALIDATION_WINDOWS = 100_000
"""Validation windows evaluated: the first ones of the validation split."""
PREPARE_COMMAND = "algoperf prepare finewebedu_lm --data_dir DIR"


# --- the prepared splits -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TokenSplit:
    """One split's tokens (memory-mapped, uint16) and its documents."""

    tokens: np.ndarray
    documents: int

    def num_windows(self, window: int) -> int:
        """Non-overlapping windows of `window` tokens (the last partial one dropped)."""
        return len(self.tokens) // window

    def windows(self, window: int) -> np.ndarray:
        """The split as a [num_windows, window] view (no copy)."""
        count = self.num_windows(window)
        return self.tokens[: count * window].reshape(count, window)


@dataclasses.dataclass(frozen=True)
class Dataset:
    splits: dict[str, TokenSplit]
    index: dict
    """The prepared folder's index.json."""

    def __getitem__(self, split: str) -> TokenSplit:
        return self.splits[split]


def find_root(data_dir: str | os.PathLike) -> pathlib.Path:
    """The prepared folder: `<data_dir>/fineweb_edu_10B`, or `data_dir` itself."""
    base = pathlib.Path(data_dir).expanduser()
    for root in (base / DATASET_DIR, base):
        if (root / INDEX_FILE).is_file():
            return root
    raise FileNotFoundError(
        f"FineWeb-Edu is not prepared under {base} (no {DATASET_DIR}/{INDEX_FILE}); run "
        f"`{PREPARE_COMMAND}` (it downloads the sample-10BT shards, or reads them from "
        "--archive_dir)."
    )


def read_index(root: pathlib.Path) -> dict:
    path = root / INDEX_FILE
    try:
        index = json.loads(path.read_text())
        if index["format"] != FORMAT or index["dtype"] != "uint16":
            raise ValueError(f"format {index['format']!r}, dtype {index['dtype']!r}")
        for name in SPLITS:
            int(index["splits"][name]["tokens"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} is malformed ({error}); rerun `{PREPARE_COMMAND}`.") from None
    return index


def load_dataset(data_dir: str | os.PathLike) -> Dataset:
    """The prepared splits, memory-mapped and checked against the index.

    Raises:
      FileNotFoundError: nothing prepared, or a token file is missing (names the command).
      ValueError: a token file's size disagrees with the index.
    """
    root = find_root(data_dir)
    index = read_index(root)
    splits = {}
    for name in SPLITS:
        entry = index["splits"][name]
        path = root / entry["file"]
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; rerun `{PREPARE_COMMAND}`.")
        tokens = int(entry["tokens"])
        if path.stat().st_size != tokens * TOKEN_DTYPE.itemsize:
            raise ValueError(
                f"{path} holds {path.stat().st_size} bytes, not the {tokens} tokens its index "
                f"says; rerun `{PREPARE_COMMAND}`."
            )
        array = np.memmap(path, TOKEN_DTYPE, mode="r") if tokens else np.zeros(0, TOKEN_DTYPE)
        splits[name] = TokenSplit(tokens=array, documents=int(entry["documents"]))
    return Dataset(splits=splits, index=index)


# --- batches -------------------------------------------------------------------------------------
def window_batch(windows: np.ndarray, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The batch of windows `rows` (PADDING rows: token 0, weight 0)."""
    valid = rows != index_rules.PADDING
    taken = windows[np.where(valid, rows, 0)]  # one gather from the memory map
    taken[~valid] = 0
    weights = np.empty((len(rows), windows.shape[1] - 1), np.float32)
    weights[:] = valid[:, None]
    return {
        "inputs": taken[:, :-1].astype(np.int32),
        "targets": taken[:, 1:].astype(np.int32),
        "weights": weights,
    }


def fake_batch(
    batch_size: int,
    *,
    layout: str = "NCHW",
    seed: int = 0,
    seq_len: int = SEQ_LEN,
    vocab_size: int = VOCAB_SIZE,
) -> dict[str, np.ndarray]:
    """Random windows with the real keys, shapes and dtypes (`layout` is checked but changes
    nothing: there are no images); the targets are the inputs shifted by one."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
    rng = np.random.default_rng(seed)
    windows = rng.integers(0, vocab_size, (batch_size, seq_len + 1))
    return window_batch(windows, np.arange(batch_size))


# --- the data protocol ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class Options(PipelineOptions):
    """FineWeb-Edu's options (`--workload_options KEY=VALUE`)."""

    seq_len: int = SEQ_LEN
    """Tokens per row: windows are seq_len + 1 tokens (tests use a few dozen)."""
    vocab_size: int = VOCAB_SIZE
    """Token ids are below it: fake batches draw from it, and prepared data with a larger
    vocabulary is refused (a test's tiny tokenizer and model set it together)."""

    def __post_init__(self):
        object.__setattr__(self, "seq_len", whole_number_option("seq_len", self.seq_len, 1))
        vocab = whole_number_option("vocab_size", self.vocab_size, 2)
        object.__setattr__(self, "vocab_size", vocab)


class Pipeline(InputPipeline):
    """FineWeb-Edu's prepared token files as windows (see the module docstring)."""

    Options = Options
    data_source = "full"
    """`full`, or why the loaded data is not the benchmark's (set by `load`)."""

    @property
    def window(self) -> int:
        return self.options.seq_len + 1

    def load(self, data_dir: str) -> Dataset:
        dataset = load_dataset(data_dir)
        index = dataset.index
        if int(index["vocab_size"]) > self.options.vocab_size:
            raise ValueError(
                f"the data under {data_dir} has a vocabulary of {index['vocab_size']} tokens, "
                f"more than vocab_size={self.options.vocab_size} (--workload_options)."
            )
        checked = index.get("benchmark", {})
        self.data_source = "full"
        if not checked.get("ok"):
            self.data_source = f"prepared data that is not the benchmark's: {checked.get('why')}"
        for name in SPLITS:
            if dataset[name].num_windows(self.window) < 1:
                raise ValueError(
                    f"the {name} split under {data_dir} holds fewer than {self.window} tokens; "
                    f"rerun `{PREPARE_COMMAND}`."
                )
        return dataset

    def train_batches(self, dataset, global_batch_size, *, seed, shard: Shard, start_step=0):
        windows = dataset["train"].windows(self.window)
        rows = shard.rows(global_batch_size)
        steps = index_rules.global_batch_indices(
            len(windows), global_batch_size, seed=seed, start_step=start_step
        )
        for batch_indices in steps:
            yield window_batch(windows, batch_indices[rows])

    def eval_batches(
        self, dataset, split, global_batch_size, *, seed, shard: Shard, num_eval_train_examples
    ):
        check_split(split)
        if split == "test":
            raise ValueError("finewebedu_lm has no test split (its spec declares none).")
        if split == "eval_train":
            windows = dataset["train"].windows(self.window)
            chosen = index_rules.eval_train_indices(len(windows), num_eval_train_examples, seed)
        else:
            windows = dataset["validation"].windows(self.window)
            chosen = np.arange(min(len(windows), NUM_VALIDATION_WINDOWS))
        return self._eval(windows, chosen, global_batch_size, shard)

    @staticmethod
    def _eval(windows, chosen, global_batch_size, shard):
        for positions in index_rules.eval_batch_indices(len(chosen), global_batch_size, shard):
            rows = np.where(positions >= 0, chosen[np.maximum(positions, 0)], index_rules.PADDING)
            yield window_batch(windows, rows)

    def fake_batch(self, batch_size: int, *, seed: int = 0) -> dict[str, np.ndarray]:
        return fake_batch(
            batch_size, layout=self.layout, seed=seed, seq_len=self.options.seq_len,
            vocab_size=self.options.vocab_size,
        )  # fmt: skip
