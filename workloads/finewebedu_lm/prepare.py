"""Build FineWeb-Edu 10BT's GPT-2 token files from the release's parquet shards.

Usage (the same as `python -m algoperf.workloads.finewebedu_lm.prepare ...`):
  algoperf prepare finewebedu_lm --data_dir ~/data                      # downloads ~27 GB
  algoperf prepare finewebedu_lm --data_dir ~/data --archive_dir DIR    # DIR holds the shards
      [--tokenizer tokenizer.json] [--revision REV] [--num_workers N]

The source is the HF dataset HuggingFaceFW/fineweb-edu, config sample-10BT: the parquet files
under `sample/10BT/` (downloaded at the revision given, recorded with each file's size and
sha256 and checked against them; or read from --archive_dir, which may hold them as
`sample/10BT/*.parquet` or directly). The tokenizer is GPT-2's byte-level BPE: the hub's
`openai-community/gpt2` tokenizer.json, or --tokenizer PATH to that file; it is checked to be
GPT-2's (50,257 tokens, EOS 50256, "Hello world" -> 15496 995).

Steps, each resumable (docs/data.md, "FineWeb-Edu"):
1. Every shard is tokenized in its own worker process into `work/<shard>.tokens` (uint16) and
   `work/<shard>.lengths.npy`; a shard's marker file, written last, makes it done, so a rerun
   redoes only the shards not finished. Each non-empty document gets EOS (50256) appended.
2. Documents are numbered in the order of the sorted shard names. The split orders them by a
   64-bit hash of (seed 0, document number): the first 90% in that order are train, the rest
   validation. It depends on nothing else, so any processing order or rerun gives the same files.
3. `train.bin` (train documents in the release's order) and `validation.bin` (validation
   documents in the hash order, so its first windows are a random sample) are written under
   temporary names and renamed into place; `index.json` is written last. The counts are checked
   first: about 8,749,870 train windows of 1,025 tokens (within 1%), at least 100,000 validation
   windows.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import multiprocessing
import os
import pathlib
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from algoperf.data import preparing
from algoperf.data.download import file_digest
from algoperf.workloads.finewebedu_lm import input_pipeline as pipeline
from algoperf.workloads.finewebedu_lm.release import (
    CONFIG,
    DOWNLOAD_DIR,
    EOS_TOKEN,
    RELEASE_PATH,
    REPO,
    TOKENIZER_REPO,
    SourceFile,
    download_release,
    find_shards,
    get_tokenizer,
    gpt2_mismatch,
    load_tokenizer,
    parquet_rows,
)

SPLIT_SEED = 0
TRAIN_PARTS, PARTS = 9, 10
"""train = the first floor(9 N / 10) documents of the split order."""
WORK_DIR = "work"
DOCUMENTS_PER_BATCH = 1024
Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Expected:
    """The counts a prepared dataset must have (windows of `window` tokens)."""

    window: int = pipeline.SEQ_LEN + 1
    train_windows: int = pipeline.NUM_TRAIN_WINDOWS
    tolerance: float = pipeline.TRAIN_WINDOWS_TOLERANCE
    """Relative deviation of the train windows allowed."""
    validation_windows: int = pipeline.NUM_VALIDATION_WINDOWS
    """The fewest validation windows (the benchmark evaluates this many)."""


BENCHMARK = Expected()


# --- step 1: one shard's tokens (runs in a worker process) -----------------------------------
def tokenize_shard(source: str, tokenizer_path: str, work: str, tokenizer_sha256: str) -> int:
    """Tokenize one shard into `work/<stem>.tokens` and `.lengths.npy` (tokens per document,
    EOS included), then its marker `<stem>.json`; returns its token count."""
    import pyarrow.parquet as pq

    shard, folder = pathlib.Path(source), pathlib.Path(work)
    stem = shard.name.removesuffix(".parquet")
    tokenizer = load_tokenizer(pathlib.Path(tokenizer_path))
    eos = tokenizer.token_to_id(EOS_TOKEN)
    partial = folder / f".{stem}.tokens.partial"
    lengths: list[int] = []
    parquet = pq.ParquetFile(shard)
    if "text" not in parquet.schema_arrow.names:
        raise ValueError(f"{shard} has no `text` column; is it a FineWeb-Edu shard?")
    with open(partial, "wb") as out:
        for batch in parquet.iter_batches(batch_size=DOCUMENTS_PER_BATCH, columns=["text"]):
            texts = [text or "" for text in batch.column(0).to_pylist()]
            encodings = tokenizer.encode_batch_fast(texts, add_special_tokens=False)
            flat: list[int] = []
            for text, encoding in zip(texts, encodings):
                ids = encoding.ids
                if text:  # upstream appends EOS to every non-empty document
                    ids.append(eos)
                flat.extend(ids)
                lengths.append(len(ids))
            out.write(np.asarray(flat, pipeline.TOKEN_DTYPE).tobytes())
    os.replace(partial, folder / f"{stem}.tokens")
    np.save(folder / f"{stem}.lengths.npy", np.asarray(lengths, np.int64))
    marker = {
        "source": shard.name,
        "source_bytes": shard.stat().st_size,
        "tokenizer_sha256": tokenizer_sha256,
        "documents": len(lengths),
        "tokens": int(sum(lengths)),
    }
    _write_json(folder / f"{stem}.json", marker)
    return marker["tokens"]


def shard_done(shard: SourceFile, work: pathlib.Path, tokenizer_sha256: str) -> bool:
    """Whether an earlier run finished this shard with this tokenizer."""
    try:
        marker = json.loads((work / f"{shard.stem}.json").read_text())
        tokens = (work / f"{shard.stem}.tokens").stat().st_size
    except (OSError, ValueError):
        return False
    return (
        marker.get("source_bytes") == shard.path.stat().st_size
        and marker.get("tokenizer_sha256") == tokenizer_sha256
        and marker.get("documents") == shard.documents
        and tokens == marker.get("tokens", -1) * pipeline.TOKEN_DTYPE.itemsize
    )


def tokenize_all(
    shards: list[SourceFile],
    tokenizer: pathlib.Path,
    work: pathlib.Path,
    num_workers: int,
    log: Log,
) -> None:
    """Step 1 for every shard not done yet: `num_workers` processes, one shard each (0: here)."""
    sha = file_digest(tokenizer, "sha256")
    todo = [shard for shard in shards if not shard_done(shard, work, sha)]
    if len(todo) < len(shards):
        log(f"{len(shards) - len(todo)} of {len(shards)} shards already tokenized")
    if not todo:
        return
    work.mkdir(parents=True, exist_ok=True)
    jobs = [(str(s.path), str(tokenizer), str(work), sha) for s in todo]
    start = time.time()
    if num_workers == 0:
        for number, job in enumerate(jobs, 1):
            tokens = tokenize_shard(*job)
            log(f"tokenized {number}/{len(jobs)} {todo[number - 1].path.name}: {tokens:,} tokens")
        return
    context = multiprocessing.get_context("forkserver")
    with concurrent.futures.ProcessPoolExecutor(
        min(num_workers, len(jobs)), mp_context=context, initializer=_single_threaded
    ) as pool:
        futures = {pool.submit(tokenize_shard, *job): shard for job, shard in zip(jobs, todo)}
        pending = set(futures)
        while pending:
            finished, pending = concurrent.futures.wait(
                pending, timeout=30.0, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in finished:
                log(f"tokenized {futures[future].path.name}: {future.result():,} tokens")
            written = _tokens_written(work, todo)
            rate = written / max(time.time() - start, 1e-9)
            log(f"{len(jobs) - len(pending)}/{len(jobs)} shards, {written / 1e6:,.0f} M tokens "
                f"({rate / 1e6:.1f} M/s)")  # fmt: skip


def _tokens_written(work: pathlib.Path, shards: list[SourceFile]) -> int:
    """Tokens the workers have written so far for `shards` (for the progress line)."""
    total = 0
    for shard in shards:
        for name in (f"{shard.stem}.tokens", f".{shard.stem}.tokens.partial"):
            with contextlib.suppress(OSError):  # not there (yet, or any more)
                total += (work / name).stat().st_size // pipeline.TOKEN_DTYPE.itemsize
    return total


def _single_threaded() -> None:
    # Each worker takes a whole shard: no tokenizer threads on top (one core per worker).
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


# --- step 2: the document split ----------------------------------------------------------------
def document_keys(num_documents: int, seed: int = SPLIT_SEED) -> np.ndarray:
    """splitmix64 of (seed << 40) + each document's number: a fixed, platform-independent
    64-bit hash (no RNG whose stream a library version could change)."""
    z = np.arange(num_documents, dtype=np.uint64) + np.uint64(seed << 40)
    z += np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def split_documents(num_documents: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(is_train bool [N], the validation documents in their file order)."""
    order = np.argsort(document_keys(num_documents, seed), kind="stable")
    num_train = num_documents * TRAIN_PARTS // PARTS
    is_train = np.zeros(num_documents, bool)
    is_train[order[:num_train]] = True
    return is_train, order[num_train:]


# --- step 3: the split files -----------------------------------------------------------------
@dataclasses.dataclass
class ShardTokens:
    tokens: np.ndarray
    lengths: np.ndarray
    starts: np.ndarray


def open_work(shard: SourceFile, work: pathlib.Path) -> ShardTokens:
    path = work / f"{shard.stem}.tokens"
    tokens = np.memmap(path, pipeline.TOKEN_DTYPE, mode="r") if path.stat().st_size else None
    lengths = np.load(work / f"{shard.stem}.lengths.npy")
    tokens = tokens if tokens is not None else np.zeros(0, pipeline.TOKEN_DTYPE)
    return ShardTokens(tokens, lengths, np.r_[0, np.cumsum(lengths)])


def write_tokens(path: pathlib.Path, chunks: Iterable[np.ndarray]) -> str:
    """Write `chunks` to `.<name>.partial`, then rename it to `path`; returns the sha256."""
    partial, digest = path.with_name(f".{path.name}.partial"), hashlib.sha256()
    with open(partial, "wb") as out:
        for chunk in chunks:
            raw = chunk.astype(pipeline.TOKEN_DTYPE, copy=False).tobytes()
            out.write(raw)
            digest.update(raw)
    os.replace(partial, path)
    return digest.hexdigest()


def train_chunks(shards, parts: list[ShardTokens], is_train) -> Iterator[np.ndarray]:
    """Every train document's tokens, in the release's order."""
    offset, step = 0, 1 << 16
    for shard, part in zip(shards, parts):
        keep = is_train[offset : offset + shard.documents]
        for a in range(0, shard.documents, step):
            b = min(a + step, shard.documents)
            segment = part.tokens[part.starts[a] : part.starts[b]]
            yield segment[np.repeat(keep[a:b], part.lengths[a:b])]
        offset += shard.documents


def validation_chunks(shards, parts: list[ShardTokens], order) -> Iterator[np.ndarray]:
    """The tokens of the documents `order` (document numbers), in that order."""
    offsets = np.r_[0, np.cumsum([shard.documents for shard in shards])]
    shard_of = np.searchsorted(offsets, order, side="right") - 1
    row_of = order - offsets[shard_of]
    buffered, pending = 0, []
    for s, row in zip(shard_of.tolist(), row_of.tolist()):
        part = parts[s]
        pending.append(part.tokens[part.starts[row] : part.starts[row + 1]])
        buffered += int(part.lengths[row])
        if buffered >= 1 << 24:
            yield np.concatenate(pending)
            buffered, pending = 0, []
    if pending:
        yield np.concatenate(pending)


def split_counts(parts: list[ShardTokens], is_train) -> dict[str, dict[str, int]]:
    lengths = np.concatenate([part.lengths for part in parts])
    counts = {}
    for name, mask in (("train", is_train), ("validation", ~is_train)):
        counts[name] = {
            "documents": int(mask.sum()),
            "empty_documents": int((mask & (lengths == 0)).sum()),
            "tokens": int(lengths[mask].sum()),
        }
    return counts


def check_counts(counts, expected: Expected) -> str | None:
    """What is wrong with the counts, or None."""
    train = counts["train"]["tokens"] // expected.window
    validation = counts["validation"]["tokens"] // expected.window
    problems = []
    if abs(train - expected.train_windows) > expected.tolerance * expected.train_windows:
        problems.append(
            f"{train:,} train windows of {expected.window} tokens, expected "
            f"{expected.train_windows:,} (within {expected.tolerance:.0%})"
        )
    if validation < expected.validation_windows:
        problems.append(
            f"{validation:,} validation windows, fewer than {expected.validation_windows:,}"
        )
    return "; ".join(problems) or None


# --- the whole preparation -------------------------------------------------------------------
def prepare(
    data_dir: str | pathlib.Path,
    archive_dir: str | None = None,
    *,
    tokenizer: str | None = None,
    revision: str = "main",
    num_workers: int | None = None,
    expected: Expected | None = BENCHMARK,
    require_gpt2: bool = True,
    log: Log = print,
) -> pathlib.Path:
    """Build `<data_dir>/fineweb_edu_10B/`; returns that folder (see the module docstring).

    `expected=None` does not stop on counts that differ from the benchmark's (the index then
    says the data is not the benchmark's); tests pass their fixture's counts and
    `require_gpt2=False` with a tiny tokenizer.

    Raises:
      FileNotFoundError: no shards in `archive_dir`, or no tokenizer file.
      OSError: a download failed (a rerun continues it).
      ValueError: a bad shard or tokenizer, or counts that differ from `expected`.
    """
    root = pathlib.Path(data_dir).expanduser() / pipeline.DATASET_DIR
    if (root / pipeline.INDEX_FILE).is_file():
        log(f"FineWeb-Edu is already prepared in {root}")
        return root
    if num_workers is not None and num_workers < 0:
        raise ValueError(f"--num_workers must be 0 or more, got {num_workers}.")
    tokenizer_path, commit, shards = _sources(root, archive_dir, tokenizer, revision, log)
    not_gpt2 = gpt2_mismatch(load_tokenizer(tokenizer_path))
    if not_gpt2 is not None and require_gpt2:
        raise ValueError(f"{tokenizer_path} is not GPT-2's tokenizer: {not_gpt2}")
    log(f"{len(shards)} shards, {sum(shard.documents for shard in shards):,} documents")
    work = root / WORK_DIR
    workers = min(len(shards), os.cpu_count() or 1) if num_workers is None else num_workers
    tokenize_all(shards, tokenizer_path, work, workers, log)
    index = make_index(tokenizer_path, shards, commit, archive_dir)
    parts = [open_work(shard, work) for shard in shards]
    index.update(write_splits(root, parts, shards, expected, log))
    vocab = index["vocab_size"]
    reasons = [
        not_gpt2 and f"a tokenizer other than GPT-2's ({vocab:,} tokens)",
        index.pop("problem"),
        expected not in (None, BENCHMARK)
        and f"counts checked for {expected.train_windows:,} train windows of {expected.window}",
    ]
    why = "; ".join(reason for reason in reasons if reason) or None
    index["benchmark"] = {"ok": why is None, "why": why}
    _write_json(root / pipeline.INDEX_FILE, index)  # last: the dataset is finished
    shutil.rmtree(work, ignore_errors=True)
    if commit is not None:
        log(f"the downloaded shards in {root / DOWNLOAD_DIR} are no longer needed")
    return root


def _sources(root, archive_dir, tokenizer, revision, log) -> tuple[pathlib.Path, str | None, list]:
    """The tokenizer file, the release's commit (None for --archive_dir) and its shards; the
    shards in `archive_dir` are found before anything is downloaded."""
    local = find_shards(archive_dir) if archive_dir is not None else None
    root.mkdir(parents=True, exist_ok=True)
    tokenizer_path = get_tokenizer(root, tokenizer, log)
    if local is not None:
        return (
            tokenizer_path,
            None,
            [SourceFile(p, parquet_rows(p), p.stat().st_size) for p in local],
        )
    commit, shards = download_release(root, revision, log)
    return tokenizer_path, commit, shards


def write_splits(root, parts: list[ShardTokens], shards, expected: Expected | None, log) -> dict:
    """Split the documents, check the counts, write both token files; returns the index's
    `split` and `splits` entries and `problem` (what differs from the benchmark's counts)."""
    is_train, validation_order = split_documents(sum(shard.documents for shard in shards))
    counts = split_counts(parts, is_train)
    for name, entry in counts.items():
        log(f"{name}: {entry['documents']:,} documents, {entry['tokens']:,} tokens")
    problem = check_counts(counts, expected or BENCHMARK)
    if problem is not None and expected is not None:
        raise ValueError(f"the prepared counts are off: {problem}. Is every shard there?")
    hashes = {
        "train": write_tokens(root / "train.bin", train_chunks(shards, parts, is_train)),
        "validation": write_tokens(
            root / "validation.bin", validation_chunks(shards, parts, validation_order)
        ),
    }
    return {
        "split": {
            "seed": SPLIT_SEED,
            "train_fraction": TRAIN_PARTS / PARTS,
            "rule": "documents numbered in sorted shard order, ordered by splitmix64((seed << 40)"
            " + number); the first floor(9N/10) are train (kept in release order), the rest "
            "validation (in that order)",
        },
        "splits": {
            name: {"file": f"{name}.bin", **counts[name], "sha256": hashes[name]}
            for name in pipeline.SPLITS
        },
        "problem": problem,
    }


def make_index(tokenizer_path, shards, commit, archive_dir) -> dict:
    """index.json's tokenizer and source entries: what the pipeline reads, and where the data
    came from."""
    tokenizer = load_tokenizer(tokenizer_path)
    return {
        "format": pipeline.FORMAT,
        "dtype": "uint16",
        "eos_id": tokenizer.token_to_id(EOS_TOKEN),
        "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
        "tokenizer": {
            "file": str(tokenizer_path),
            "sha256": file_digest(tokenizer_path, "sha256"),
            "gpt2": gpt2_mismatch(tokenizer) is None,
        },
        "source": {
            "repo": REPO,
            "config": CONFIG,
            "revision": commit,
            "archive_dir": None if archive_dir is None else str(archive_dir),
            "shards": [
                {"name": s.path.name, "documents": s.documents, "bytes": s.size, "sha256": s.sha256}
                for s in shards
            ],
        },
    }


def _write_json(path: pathlib.Path, content: dict) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(partial, path)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--archive_dir",
        "--archive-dir",
        metavar="DIR",
        help=f"a folder holding the {CONFIG} parquet shards ({RELEASE_PATH}/*.parquet or "
        "*.parquet; else they are downloaded)",
    )
    parser.add_argument(
        "--tokenizer",
        metavar="PATH",
        help=f"GPT-2's tokenizer.json (default: downloaded from {TOKENIZER_REPO})",
    )
    parser.add_argument(
        "--revision",
        default="main",
        help=f"the {REPO} revision to download (a branch, tag or commit; default main)",
    )
    parser.add_argument(
        "--num_workers",
        "--num-workers",
        type=int,
        metavar="N",
        help="tokenizing processes, one shard each (default: one per core; 0: this process)",
    )


def main(argv=None) -> int:
    return preparing.main(
        argv,
        dataset="finewebedu_lm",
        title="FineWeb-Edu 10BT",
        description=__doc__,
        prepare=lambda args: prepare(
            args.data_dir,
            args.archive_dir,
            tokenizer=args.tokenizer,
            revision=args.revision,
            num_workers=args.num_workers,
            log=preparing.progress,
        ),  # fmt: skip
        add_arguments=_add_arguments,
    )


if __name__ == "__main__":
    sys.exit(main())
