"""wmt's SentencePiece tokenizer: how prepare.py trains it, text -> ids (EOS appended) for the
prepared splits, and ids -> text (detokenisation) for BLEU (docs/data.md, "WMT").

The model is a unigram SentencePiece model of 32,000 pieces with the library's default special
ids: unk 0 (which the batches also use as padding), bos 1 (never added), eos 2 (appended to every
sentence). It is trained with character coverage 1.0 and the default normaliser on the first
~1e7 bytes of the training text: pairs taken in a fixed pseudo-random order of the train split
(`training_order`), each pair's German line and then its English line, until the lines
written reach MAX_TRAINING_BYTES. Training runs on TRAINING_THREADS threads whatever the machine:
SentencePiece's unigram trainer gives a different model for a different thread count.
"""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

VOCAB_SIZE = 32_000
UNK_ID = 0
PAD_ID = 0
"""Padding in batches; the same id as unk (upstream's choice, kept so its model files work)."""
BOS_ID = 1
EOS_ID = 2
MODEL_FILE = "wmt_sentencepiece_model"
"""The model's file name under the prepared folder (the name upstream's setup gives it)."""
MAX_TRAINING_BYTES = 10_000_000
TRAINING_THREADS = 16
"""SentencePiece's default; fixed, because the trained model depends on it."""


class Tokenizer:
    """A SentencePiece model: `encode` appends EOS, `decode` turns ids back into text."""

    def __init__(self, model: bytes) -> None:
        import sentencepiece

        self.model_bytes = bytes(model)
        self._processor = sentencepiece.SentencePieceProcessor(model_proto=self.model_bytes)
        self.vocab_size = int(self._processor.vocab_size())
        ids = (self._processor.unk_id(), self._processor.bos_id(), self._processor.eos_id())
        if ids != (UNK_ID, BOS_ID, EOS_ID):
            raise ValueError(
                f"the SentencePiece model has unk/bos/eos ids {ids}, not ({UNK_ID}, {BOS_ID}, "
                f"{EOS_ID}) as wmt's batches and decoding assume."
            )

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Tokenizer:
        """Load a model file.

        Raises:
          FileNotFoundError: no such file.
          ValueError: the file is not a SentencePiece model, or has other special ids.
        """
        data = pathlib.Path(path).expanduser().read_bytes()
        try:
            return cls(data)
        except (RuntimeError, OSError) as error:  # sentencepiece's parse failure
            raise ValueError(f"{path} is not a SentencePiece model ({error}).") from None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.model_bytes).hexdigest()

    def encode(self, text: str) -> list[int]:
        """The ids of `text` followed by EOS."""
        return self._processor.encode(text, add_eos=True)

    def encode_batch(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        """`encode` of each text (SentencePiece's threads; the ids do not depend on them)."""
        if not texts:
            return []
        return self._processor.encode(list(texts), add_eos=True, num_threads=num_threads)

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """Detokenise: the text of `ids` (EOS and bos decode to nothing; cut at EOS and drop
        padding first, as `algoperf.workloads.wmt.decode.cut_at_eos` does)."""
        return self._processor.decode([int(i) for i in np.asarray(ids).reshape(-1)])


def training_order(num_pairs: int) -> np.ndarray:
    """The order in which the train pairs feed the trainer: by the splitmix64 hash of each
    pair's number in the prepared train split (a rule of its own, not NumPy's generator, so it
    never changes with a library). TFDS's train files hold the pairs in an order of its own
    hashing, a mix of the four corpora, and upstream's tokenizer read them from the start; this
    order takes its place (the corpus order would train on Europarl alone)."""
    with np.errstate(over="ignore"):
        z = np.arange(num_pairs, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return np.argsort(z, kind="stable")


def training_lines(pairs: Iterable[tuple[str, str]], max_bytes: int) -> Iterator[str]:
    """The trainer's text: each pair's German line and then its English line, until the lines
    (counted in UTF-8 bytes, one newline each) reach `max_bytes`; the pair that crosses the
    limit is the last one."""
    written = 0
    for german, english in pairs:
        if written >= max_bytes:
            return
        for line in (german, english):
            written += len(line.encode("utf-8")) + 1
            yield line


def train(lines: Iterable[str], vocab_size: int = VOCAB_SIZE) -> bytes:
    """Train the unigram model on `lines` (one sentence each); returns the model's bytes.

    Raises:
      ValueError: SentencePiece refused (e.g. too little text for `vocab_size` pieces).
    """
    import sentencepiece

    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=model,
            model_type="unigram",
            vocab_size=vocab_size,
            character_coverage=1.0,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            pad_id=-1,
            num_threads=TRAINING_THREADS,
            minloglevel=2,  # errors only: prepare reports its own progress
        )
    except RuntimeError as error:
        raise ValueError(f"SentencePiece could not train the tokenizer: {error}") from None
    return model.getvalue()
