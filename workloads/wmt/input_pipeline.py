"""WMT de-en as packed train rows and padded eval rows: the data protocol of wmt (no TensorFlow).

Prepared layout (what `algoperf prepare wmt` writes; docs/data.md, "WMT"):

  <data_dir>/wmt/
    wmt_sentencepiece_model   the SentencePiece model (workloads/wmt/tokenizer.py)
    <split>/                  split = train, validation, test
      inputs.bin    uint16 (little-endian) ids of the German sentences, each followed by EOS (2),
                    back to back in the split's order
      targets.bin   the same for the English sentences
      offsets.npy   int64 [pairs + 1, 2]: pair i is inputs.bin[offsets[i, 0]:offsets[i + 1, 0]]
                    and targets.bin[offsets[i, 1]:offsets[i + 1, 1]]
      split.json    counts; written last, in a folder renamed into place when complete
    index.json      counts, the tokenizer's sha256, the source files; written last of all, so a
                    folder without it is not a finished dataset

Every pair has at most MAX_LEN (256) ids on each side, EOS included (prepare drops longer pairs).

Batches (L = the `max_len` option, 256; B rows; all int32 except `weights`):

  train: {"inputs", "targets",                        [B, L] ids, 0 = padding
          "inputs_segmentation", "targets_segmentation",  [B, L] 1, 2, ... for the 1st, 2nd, ...
                                                      pair of the row (the same number on both
                                                      sides), 0 on padding
          "inputs_position", "targets_position",      [B, L] each id's position within its own
                                                      sentence (0 at its first id), 0 on padding
          "weights"}                                  float32 [B, L]: 1 on the target ids of
                                                      every packed pair (EOS included), else 0
  eval:  {"inputs", "targets"                         [B, L] one pair per row from position 0,
                                                      EOS included, 0 after it; rows past the
                                                      end of the split are all 0
          "weights"}                                  float32 [B, L]: 1 on the target ids of a
                                                      real row (EOS included), else 0

- train: each epoch is a permutation of the pairs seeded by (seed, epoch) (`indices.epoch_order`),
  packed greedily in that order into rows: a pair joins the current row when both of its
  sentences fit the row's remaining room on their side, else it starts the next row (never
  split, never dropped, order kept; `algoperf.data.packing.greedy_pack`). The rows of all epochs
  form one stream and global batch s is its rows [s·B, (s + 1)·B); rank r reads its rows
  `shard.rows(B)` only. So batch s is a pure function of (seed, s): the same on any number of
  ranks, and a resumed trial continues the stream exactly.
- eval: validation and test in split order, eval_train the index rules' fixed random subset of
  the train pairs (`num_eval_train_examples`, seeded), one pair per row; global batches of B
  rows, the last one padded with rows of weight 0, so every pair counts exactly once on any
  number of ranks.
- `weights` count a target id by its place, not its value: an id 0 inside a sentence (unk) is a
  real token (upstream's `targets > 0` left those out of the loss and the metrics).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
from collections.abc import Mapping

import numpy as np

from algoperf.data import indices as index_rules
from algoperf.data.packing import greedy_pack, ragged_positions, starts_within_packs
from algoperf.data.pipeline import (
    LAYOUTS,
    InputPipeline,
    PipelineOptions,
    check_split,
    whole_number_option,
)
from algoperf.data.sharding import Shard
from algoperf.workloads.wmt import tokenizer as wmt_tokenizer

DATASET_DIR = "wmt"
SPLITS = ("train", "validation", "test")
INDEX_FILE = "index.json"
SPLIT_FILE = "split.json"
FORMAT = "algoperf-wmt-1"
TOKEN_DTYPE = np.dtype("<u2")
SIDES = ("inputs", "targets")
MAX_LEN = 256
VOCAB_SIZE = wmt_tokenizer.VOCAB_SIZE
EOS_ID = wmt_tokenizer.EOS_ID
PAD_ID = wmt_tokenizer.PAD_ID
TRAIN_KEYS = (
    "inputs", "targets", "inputs_segmentation", "targets_segmentation", "inputs_position",
    "targets_position", "weights",
)  # fmt: skip
EVAL_KEYS = ("inputs", "targets", "weights")
PREPARE_COMMAND = "algoperf prepare wmt --data_dir DIR"


# --- the prepared splits -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PairSplit:
    """One split's sentence pairs: token arrays (memory-mapped) and offsets (in memory)."""

    inputs: np.ndarray
    targets: np.ndarray
    offsets: np.ndarray
    """int64 [pairs + 1, 2]: each pair's start in inputs (column 0) and targets (column 1)."""

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @functools.cached_property
    def lengths(self) -> np.ndarray:
        """int64 [pairs, 2]: ids per sentence (EOS included), inputs then targets."""
        return np.diff(self.offsets, axis=0)

    def pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Pair `index`'s ids (EOS included): (inputs, targets)."""
        (a, b), (c, d) = self.offsets[index], self.offsets[index + 1]
        return np.asarray(self.inputs[a:c]), np.asarray(self.targets[b:d])


def split_of(pairs: list[tuple[list[int], list[int]]]) -> PairSplit:
    """An in-memory split of `(input ids, target ids)` pairs (tests, fake batches)."""
    lengths = np.asarray([[len(a), len(b)] for a, b in pairs], np.int64).reshape(-1, 2)
    offsets = np.zeros((len(pairs) + 1, 2), np.int64)
    offsets[1:] = np.cumsum(lengths, axis=0)
    inputs = np.asarray([i for a, _ in pairs for i in a], TOKEN_DTYPE)
    targets = np.asarray([i for _, b in pairs for i in b], TOKEN_DTYPE)
    return PairSplit(inputs=inputs, targets=targets, offsets=offsets)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """The prepared splits, the pairs the pipeline uses of each, and the tokenizer."""

    splits: Mapping[str, PairSplit]
    pairs: Mapping[str, np.ndarray]
    """Per split, the pair indices whose sentences fit `max_len` (all of them at 256)."""
    index: Mapping
    root: pathlib.Path | None = None

    def __getitem__(self, split: str) -> PairSplit:
        return self.splits[split]

    @functools.cached_property
    def tokenizer(self) -> wmt_tokenizer.Tokenizer:
        """The SentencePiece model the splits were tokenized with (`decode` detokenises)."""
        return wmt_tokenizer.Tokenizer.from_file(self.root / wmt_tokenizer.MODEL_FILE)


def find_root(data_dir: str | os.PathLike) -> pathlib.Path:
    """The prepared folder: `<data_dir>/wmt`, or `data_dir` itself."""
    base = pathlib.Path(data_dir).expanduser()
    for root in (base / DATASET_DIR, base):
        if (root / INDEX_FILE).is_file():
            return root
    raise FileNotFoundError(
        f"WMT is not prepared under {base} (no {DATASET_DIR}/{INDEX_FILE}); run "
        f"`{PREPARE_COMMAND}` (it downloads the WMT17 de-en release, or reads it from "
        "--archive_dir)."
    )


def read_index(root: pathlib.Path) -> dict:
    path = root / INDEX_FILE
    try:
        index = json.loads(path.read_text())
        if index["format"] != FORMAT:
            raise ValueError(f"format {index['format']!r}")
        for name in SPLITS:
            int(index["splits"][name]["pairs"])
        if int(index["vocab_size"]) < 1 or not isinstance(index["tokenizer_sha256"], str):
            raise ValueError("no vocabulary size or tokenizer hash")
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path} is malformed ({error}); rerun `{PREPARE_COMMAND}`.") from None
    return index


def load_split(folder: pathlib.Path, tokenizer_sha256: str) -> PairSplit:
    """A prepared split, memory-mapped and checked against its split.json.

    Raises:
      FileNotFoundError: the split is missing or incomplete.
      ValueError: its files disagree with each other or were made with another tokenizer.
    """
    if not (folder / SPLIT_FILE).is_file():
        raise FileNotFoundError(
            f"{folder} is missing or incomplete (no {SPLIT_FILE}); rerun `{PREPARE_COMMAND}`."
        )
    counts = json.loads((folder / SPLIT_FILE).read_text())
    if counts.get("tokenizer_sha256") != tokenizer_sha256:
        raise ValueError(
            f"{folder} was tokenized with another SentencePiece model than {DATASET_DIR}/"
            f"{wmt_tokenizer.MODEL_FILE}; rerun `{PREPARE_COMMAND}`."
        )
    offsets = np.load(folder / "offsets.npy")
    pairs = int(counts["pairs"])
    arrays = {}
    for column, side in enumerate(SIDES):
        path = folder / f"{side}.bin"
        tokens = int(counts["tokens"][side])
        if not path.is_file() or path.stat().st_size != tokens * TOKEN_DTYPE.itemsize:
            raise ValueError(
                f"{path} is missing or not the {tokens} ids its {SPLIT_FILE} says; rerun "
                f"`{PREPARE_COMMAND}`."
            )
        if offsets.shape != (pairs + 1, 2) or offsets[-1, column] != tokens:
            raise ValueError(f"{folder}/offsets.npy disagrees with {SPLIT_FILE}; rerun it.")
        arrays[side] = np.memmap(path, TOKEN_DTYPE, mode="r") if tokens else np.zeros(0, "<u2")
    return PairSplit(inputs=arrays["inputs"], targets=arrays["targets"], offsets=offsets)


def load_dataset(data_dir: str | os.PathLike, max_len: int = MAX_LEN) -> Dataset:
    """The prepared splits and the pairs of each that fit `max_len`."""
    root = find_root(data_dir)
    index = read_index(root)
    if not (root / wmt_tokenizer.MODEL_FILE).is_file():
        raise FileNotFoundError(
            f"{root / wmt_tokenizer.MODEL_FILE} is missing; rerun `{PREPARE_COMMAND}`."
        )
    splits = {name: load_split(root / name, index["tokenizer_sha256"]) for name in SPLITS}
    pairs = {
        name: np.flatnonzero((split.lengths <= max_len).all(axis=1))
        for name, split in splits.items()
    }
    return Dataset(splits=splits, pairs=pairs, index=index, root=root)


# --- rows ----------------------------------------------------------------------------------------
def assemble(
    split: PairSplit, ids: np.ndarray, counts: np.ndarray, max_len: int, *, packed: bool = True
) -> dict[str, np.ndarray]:
    """The rows holding the pairs `ids` (listed row by row, `counts[r]` of them in row r; a row
    of 0 pairs is padding), in the batch format of the module docstring (`packed`: the train
    keys, else the eval keys)."""
    ids, counts = np.asarray(ids, np.int64), np.asarray(counts, np.int64)
    rows = len(counts)
    row_of = np.repeat(np.arange(rows), counts)
    segment = ragged_positions(counts) + 1
    batch = {}
    for column, side in enumerate(SIDES):
        starts = split.offsets[ids, column]
        lengths = split.offsets[ids + 1, column] - starts
        position = ragged_positions(lengths)
        within_row = starts_within_packs(lengths, counts)
        destination = np.repeat(row_of * max_len + within_row, lengths) + position
        tokens = np.zeros(rows * max_len, np.int32)
        tokens[destination] = getattr(split, side)[np.repeat(starts, lengths) + position]
        segmentation = np.zeros(rows * max_len, np.int32)
        segmentation[destination] = np.repeat(segment, lengths)
        batch[side] = tokens.reshape(rows, max_len)
        batch[f"{side}_segmentation"] = segmentation.reshape(rows, max_len)
        if packed:
            positions = np.zeros(rows * max_len, np.int32)
            positions[destination] = position
            batch[f"{side}_position"] = positions.reshape(rows, max_len)
    batch["weights"] = (batch["targets_segmentation"] > 0).astype(np.float32)
    if not packed:
        del batch["inputs_segmentation"], batch["targets_segmentation"]
    return batch


class RowStream:
    """The train stream's packed rows: epoch e's pairs in `epoch_order(n, seed, e)`, packed
    greedily; the epochs follow one another. `take` must be called with rising `first`."""

    def __init__(self, lengths: np.ndarray, pairs: np.ndarray, max_len: int, seed: int) -> None:
        if len(pairs) == 0:
            raise ValueError(f"no train pair fits max_len={max_len}.")
        self.lengths, self.pairs, self.max_len, self.seed = lengths, pairs, max_len, seed
        self.epoch, self.epoch_first_row = -1, 0
        self.order = self.bounds = np.zeros(0, np.int64)
        self.num_rows = 0

    def _next_epoch(self) -> None:
        self.epoch += 1
        self.epoch_first_row += self.num_rows
        order = self.pairs[index_rules.epoch_order(len(self.pairs), self.seed, self.epoch)]
        self.order = order
        self.bounds = greedy_pack(self.lengths[order], (self.max_len, self.max_len))
        self.num_rows = len(self.bounds) - 1

    def take(self, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows [first, first + count) of the stream: (pair ids row by row, pairs per row)."""
        if first < self.epoch_first_row:
            raise ValueError("RowStream.take: rows must be taken in rising order.")
        ids, counts = [], []
        while count:
            while first >= self.epoch_first_row + self.num_rows:
                self._next_epoch()
            local = first - self.epoch_first_row
            size = min(count, self.num_rows - local)
            bounds = self.bounds[local : local + size + 1]
            ids.append(self.order[bounds[0] : bounds[-1]])
            counts.append(np.diff(bounds))
            first, count = first + size, count - size
        if len(ids) == 1:
            return ids[0], counts[0]
        return np.concatenate(ids), np.concatenate(counts)


def random_split(num_pairs: int, max_len: int, vocab_size: int, seed: int) -> PairSplit:
    """Random pairs of 2 to max(2, max_len // 4) ids each side (EOS last; other ids from 3 up),
    for fake batches and tests."""
    if vocab_size < 4:
        raise ValueError(f"vocab_size must be at least 4 for random pairs, got {vocab_size}.")
    rng = np.random.default_rng(seed)
    longest = max(2, max_len // 4)
    pairs = []
    for _ in range(num_pairs):
        sides = []
        for _ in SIDES:
            length = int(rng.integers(2, longest + 1))
            sides.append([*rng.integers(3, vocab_size, length - 1).tolist(), EOS_ID])
        pairs.append((sides[0], sides[1]))
    return split_of(pairs)


def fake_batch(
    batch_size: int,
    *,
    layout: str = "NCHW",
    seed: int = 0,
    max_len: int = MAX_LEN,
    vocab_size: int = VOCAB_SIZE,
    packed: bool = True,
) -> dict[str, np.ndarray]:
    """Random pairs in the real batch format: packed train rows (`packed`) or padded eval rows
    with the last one padding. `layout` is checked but changes nothing (there are no images)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
    if not packed:
        split = random_split(batch_size, max_len, vocab_size, seed)
        counts = np.ones(batch_size, np.int64)
        if batch_size > 1:
            counts[-1] = 0  # a padding row, as the last eval batch has
        return assemble(split, np.arange(int(counts.sum())), counts, max_len, packed=False)
    num_pairs = 4 * batch_size + 4
    while True:
        split = random_split(num_pairs, max_len, vocab_size, seed)
        bounds = greedy_pack(split.lengths, (max_len, max_len))
        if len(bounds) - 1 >= batch_size:
            counts = np.diff(bounds[: batch_size + 1])
            return assemble(split, np.arange(int(counts.sum())), counts, max_len)
        num_pairs *= 2


# --- the data protocol ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class Options(PipelineOptions):
    """wmt's options (`--workload_options KEY=VALUE`)."""

    max_len: int = MAX_LEN
    """Ids per row: train rows are packed to it, eval rows padded to it, and pairs with a longer
    sentence are left out of every split (none at 256; tests use a few dozen)."""
    vocab_size: int = VOCAB_SIZE
    """Token ids are below it: fake batches draw from it, and prepared data with a larger
    vocabulary is refused (a test's tiny tokenizer and model set it together)."""

    def __post_init__(self):
        object.__setattr__(self, "max_len", whole_number_option("max_len", self.max_len, 2))
        vocab = whole_number_option("vocab_size", self.vocab_size, 4)
        object.__setattr__(self, "vocab_size", vocab)


class Pipeline(InputPipeline):
    """WMT's prepared splits as packed train rows and padded eval rows (module docstring)."""

    Options = Options
    data_source = "full"
    """`full`, or why the loaded data is not the benchmark's (set by `load`)."""

    def load(self, data_dir: str) -> Dataset:
        dataset = load_dataset(data_dir, self.options.max_len)
        vocab = int(dataset.index["vocab_size"])
        if vocab > self.options.vocab_size:
            raise ValueError(
                f"the data under {data_dir} has a vocabulary of {vocab} ids, more than "
                f"vocab_size={self.options.vocab_size} (--workload_options)."
            )
        checked = dataset.index.get("benchmark", {})
        self.data_source = "full"
        if not checked.get("ok"):
            self.data_source = f"prepared data that is not the benchmark's: {checked.get('why')}"
        return dataset

    def train_batches(self, dataset, global_batch_size, *, seed, shard: Shard, start_step=0):
        split = dataset["train"]
        pairs = dataset.pairs["train"]
        stream = RowStream(split.lengths, pairs, self.options.max_len, seed)
        rows = shard.rows(global_batch_size)
        step = start_step
        while True:
            first = step * global_batch_size + rows.start
            ids, counts = stream.take(first, rows.stop - rows.start)
            yield assemble(split, ids, counts, self.options.max_len)
            step += 1

    def eval_batches(
        self, dataset, split, global_batch_size, *, seed, shard: Shard, num_eval_train_examples
    ):
        check_split(split)
        source = "train" if split == "eval_train" else split
        chosen = dataset.pairs[source]
        if split == "eval_train":
            chosen = chosen[
                index_rules.eval_train_indices(len(chosen), num_eval_train_examples, seed)
            ]
        return self._eval(dataset[source], chosen, global_batch_size, shard)

    def _eval(self, split, chosen, global_batch_size, shard):
        for positions in index_rules.eval_batch_indices(len(chosen), global_batch_size, shard):
            valid = positions != index_rules.PADDING
            yield assemble(
                split, chosen[positions[valid]], valid.astype(np.int64), self.options.max_len,
                packed=False,
            )  # fmt: skip

    def fake_batch(self, batch_size: int, *, seed: int = 0) -> dict[str, np.ndarray]:
        return fake_batch(
            batch_size, layout=self.layout, seed=seed, max_len=self.options.max_len,
            vocab_size=self.options.vocab_size,
        )  # fmt: skip
