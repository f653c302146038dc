"""Build WMT de-en's splits from the WMT releases (no TensorFlow, no TFDS).

  algoperf prepare wmt --data_dir ~/data                     # downloads the release archives
  algoperf prepare wmt --data_dir ~/data --archive_dir DIR   # DIR holds them (or their files)
  (the same as `python -m algoperf.workloads.wmt.prepare ...`; other flags: --tokenizer MODEL,
  --num_threads N)

Sources (the corpora of TFDS's wmt17_translate/de-en and wmt14_translate/de-en):
  train       Europarl v7, Common Crawl, News Commentary v12, Rapid 2016 (plain parallel text, one
              sentence per line), in that order: 5,906,184 pairs
  validation  newstest2013 (plain text, or its SGM files): 3,000 pairs
  test        newstest2014 (SGM: the `<seg id=...>` lines in document order): 3,003 pairs
A pair with an empty side is left out (as TFDS does) before the counts are checked.

Then: the SentencePiece model is trained on the first ~1e7 bytes of the train pairs in a fixed
pseudo-random order (workloads/wmt/tokenizer.py) unless --tokenizer gives one; every sentence
is tokenized with EOS appended; pairs with more than 256 ids on either side are
dropped (also from validation and test, as upstream's pipeline does); each split is written to
`<data_dir>/wmt/<split>/` in the layout of workloads/wmt/input_pipeline.py, atomically (a hidden
folder renamed into place), and `index.json` last. A rerun after an interruption reuses the
downloads, the files already extracted, the tokenizer and the finished splits, and gives the same
files as an uninterrupted run.
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import gzip
import importlib.metadata
import itertools
import json
import os
import pathlib
import re
import shutil
import sys
import tarfile
import time
import zlib
from collections.abc import Callable, Iterator, Mapping

import numpy as np

from algoperf.data import preparing
from algoperf.data.download import fetch
from algoperf.workloads.wmt import input_pipeline as pipeline
from algoperf.workloads.wmt import tokenizer as wmt_tokenizer

EXPECTED_COUNTS = {"train": 5_906_184, "validation": 3_000, "test": 3_003}
"""Pairs per split with both sides non-empty, before the length filter."""
DOWNLOAD_DIR = "downloads"
WORK_DIR = "work"
CHUNK_PAIRS = 20_000
"""Pairs tokenized at once."""
PROGRESS_PAIRS = 500_000
SGM_SEGMENT = re.compile(r'<seg id="\d+">(.*)</seg>')


@dataclasses.dataclass(frozen=True)
class Source:
    """One corpus of the release: the archive that holds it and its (German, English) files."""

    name: str
    archive: str
    urls: tuple[str, ...]
    files: tuple[tuple[str, str], ...]
    """Candidate (German, English) file names, by preference; the first pair found is read."""


def _statmt(path: str) -> tuple[str, ...]:
    return tuple(f"{scheme}://{path}" for scheme in ("https", "http"))


TRAIN_SOURCES = (
    Source(
        "europarl_v7", "training-parallel-europarl-v7.tgz",
        _statmt("www.statmt.org/wmt13/training-parallel-europarl-v7.tgz"),
        (("europarl-v7.de-en.de", "europarl-v7.de-en.en"),),
    ),
    Source(
        "commoncrawl", "training-parallel-commoncrawl.tgz",
        _statmt("www.statmt.org/wmt13/training-parallel-commoncrawl.tgz"),
        (("commoncrawl.de-en.de", "commoncrawl.de-en.en"),),
    ),
    Source(
        "newscommentary_v12", "training-parallel-nc-v12.tgz",
        _statmt("data.statmt.org/wmt17/translation-task/training-parallel-nc-v12.tgz"),
        (("news-commentary-v12.de-en.de", "news-commentary-v12.de-en.en"),),
    ),
    Source(
        "rapid_2016", "rapid2016.tgz",
        _statmt("data.statmt.org/wmt18/translation-task/rapid2016.tgz")
        + _statmt("data.statmt.org/wmt17/translation-task/rapid2016.tgz"),
        (("rapid2016.de-en.de", "rapid2016.de-en.en"),),
    ),
)  # fmt: skip
_DEV_URLS = _statmt("data.statmt.org/wmt19/translation-task/dev.tgz") + _statmt(
    "data.statmt.org/wmt17/translation-task/dev.tgz"
)
EVAL_SOURCES = {
    "validation": Source(
        "newstest2013", "dev.tgz", _DEV_URLS,
        (("newstest2013.de", "newstest2013.en"),
         ("newstest2013-src.de.sgm", "newstest2013-ref.en.sgm")),
    ),
    "test": Source(
        "newstest2014", "dev.tgz", _DEV_URLS,
        (("newstest2014-deen-src.de.sgm", "newstest2014-deen-ref.en.sgm"),
         ("newstest2014-deen-ref.de.sgm", "newstest2014-deen-src.en.sgm")),
    ),
}  # fmt: skip
SOURCES = {"train": TRAIN_SOURCES, **{name: (s,) for name, s in EVAL_SOURCES.items()}}


# --- finding the release's files -----------------------------------------------------------------
def _find_file(name: str, folders: list[pathlib.Path]) -> pathlib.Path | None:
    """`name` in one of `folders` or one level below (an extracted archive's own folder)."""
    for folder in folders:
        for candidate in (folder / name, *sorted(folder.glob(f"*/{name}"))):
            if candidate.is_file():
                return candidate
    return None


def _resolve(source: Source, folders: list[pathlib.Path]) -> tuple[pathlib.Path, ...] | None:
    for names in source.files:
        found = tuple(_find_file(name, folders) for name in names)
        if all(found):
            return found
    return None


def extract(archive: pathlib.Path, names: set[str], work: pathlib.Path) -> None:
    """Write the members of `archive` whose file name is in `names` into `work/`, each
    atomically.

    Raises:
      ValueError: the archive is damaged or truncated.
    """
    work.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                name = pathlib.PurePosixPath(member.name).name
                if not member.isfile() or name not in names:
                    continue
                partial = work / f".{name}.partial"
                with tar.extractfile(member) as source, open(partial, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                os.replace(partial, work / name)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise ValueError(
            f"{archive} is damaged or incomplete ({error}); delete it and run again."
        ) from None


def locate(
    root: pathlib.Path,
    archive_dir: str | None,
    allow_download: bool,
    log: Callable[[str], None],
) -> dict[str, list[tuple[Source, tuple[pathlib.Path, ...]]]]:
    """Every split's sources with their (German, English) files: found in the work folder or
    `archive_dir`, else extracted from the source's archive (in `archive_dir`, or downloaded).

    Raises:
      FileNotFoundError: an archive is missing (downloading off) or lacks the files.
      OSError: a download failed.
    """
    work = root / WORK_DIR
    folders = [work]
    if archive_dir is not None:
        folders.append(pathlib.Path(archive_dir).expanduser())
        if not folders[-1].is_dir():
            raise FileNotFoundError(f"--archive_dir {archive_dir} is not a folder.")
    wanted: dict[str, set[str]] = {}
    corpora: dict[str, list[str]] = {}
    for sources in SOURCES.values():
        for source in sources:
            if _resolve(source, folders) is None:
                wanted.setdefault(source.archive, set()).update(*source.files)
                corpora.setdefault(source.archive, []).append(source.name)
    for archive, names in wanted.items():
        path = _archive(archive, root, archive_dir, allow_download, log)
        log(f"extracting {' and '.join(corpora[archive])} from {path}")
        extract(path, names, work)
    located = {}
    for split, sources in SOURCES.items():
        located[split] = []
        for source in sources:
            files = _resolve(source, folders)
            if files is None:
                options = " or ".join(" + ".join(names) for names in source.files)
                raise FileNotFoundError(
                    f"{source.archive} holds no {options} ({source.name}); is it the release's?"
                )
            located[split].append((source, files))
    return located


def _archive(
    archive: str, root: pathlib.Path, archive_dir: str | None, allow_download: bool, log
) -> pathlib.Path:
    if archive_dir is not None and (pathlib.Path(archive_dir).expanduser() / archive).is_file():
        return pathlib.Path(archive_dir).expanduser() / archive
    destination = root / DOWNLOAD_DIR / archive
    urls = next(s.urls for ss in SOURCES.values() for s in ss if s.archive == archive)
    if not destination.exists():
        if not allow_download:
            raise FileNotFoundError(
                f"no {archive} in --archive_dir and downloading is off; get it from {urls[0]}."
            )
        log(f"downloading {urls[0]} to {destination}")
    fetch(list(urls), destination, None, timeout_s=60.0, progress=_progress(log))
    return destination


def _progress(log: Callable[[str], None]):
    state = {"next": 0}

    def report(done: int, total: int | None) -> None:
        if done >= state["next"]:
            state["next"] = done + (64 << 20)
            log(f"  {done / 2**20:.0f} MiB" + (f" of {total / 2**20:.0f} MiB" if total else ""))

    return report


# --- reading pairs -------------------------------------------------------------------------------
def read_sgm(path: pathlib.Path) -> list[bytes]:
    """An SGM file's sentences: the contents of its `<seg id=...>` lines, in document order
    (read as TFDS reads them: a line-by-line match, no XML parsing, entities left as they are)."""
    text = path.read_bytes().decode("utf-8")
    segments = (SGM_SEGMENT.match(line) for line in text.split("\n"))
    return [match.group(1).encode("utf-8") for match in segments if match]


def raw_pairs(files: tuple[pathlib.Path, pathlib.Path]) -> Iterator[tuple[bytes, bytes]]:
    """The (German, English) line pairs of two parallel files, empty sides included.

    Raises:
      ValueError: the files differ in their number of sentences.
    """
    with contextlib.ExitStack() as stack:
        if files[0].name.endswith(".sgm"):
            sides = [read_sgm(path) for path in files]
        else:  # plain text, streamed (Common Crawl's files are ~0.5 GB each), split at "\n"
            # only: a "\r" stays in its sentence, as TFDS reads these files
            handles = [stack.enter_context(open(path, "rb")) for path in files]
            sides = [(ln[:-1] if ln.endswith(b"\n") else ln for ln in h) for h in handles]
        for number, (german, english) in enumerate(itertools.zip_longest(*sides)):
            if german is None or english is None:
                raise ValueError(
                    f"{files[0]} and {files[1]} differ in length (one ends at sentence "
                    f"{number + 1}); is the download complete?"
                )
            yield german, english


def pairs_of(located: list, log=None) -> Iterator[tuple[str, str]]:
    """The split's pairs with both sides non-empty, decoded, source after source."""
    for source, files in located:
        start, kept, empty = time.time(), 0, 0
        for number, (german, english) in enumerate(raw_pairs(files)):
            if not german or not english:
                empty += 1
                continue
            try:
                yield german.decode("utf-8"), english.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{source.name}: sentence {number + 1} is not UTF-8 ({error}); is the "
                    "file the release's?"
                ) from None
            kept += 1
        if log is not None:
            log(f"read {source.name}: {kept:,} pairs, {empty:,} with an empty side left out "
                f"({time.time() - start:.0f} s)")  # fmt: skip


def byte_lengths(located: list, log) -> np.ndarray:
    """int64 [pairs, 2]: UTF-8 bytes of each non-empty pair's sentences (undecoded, fast)."""
    german, english = array.array("q"), array.array("q")
    for source, files in located:
        start, before = time.time(), len(german)
        for a, b in raw_pairs(files):
            if a and b:
                german.append(len(a))
                english.append(len(b))
        log(f"counted {source.name}: {len(german) - before:,} pairs ({time.time() - start:.0f} s)")
    return np.stack([np.frombuffer(german, np.int64), np.frombuffer(english, np.int64)], axis=1)


def check_counts(counts: Mapping[str, int], expected: Mapping[str, int] | None) -> None:
    if expected is None:
        return
    wrong = {name: count for name, count in counts.items() if count != expected[name]}
    if wrong:
        raise ValueError(
            f"pairs per split {wrong} differ from the release's {dict(expected)}; is every "
            "archive complete and the release's?"
        )


# --- the tokenizer -------------------------------------------------------------------------------
def training_pairs(located: list, lengths: np.ndarray, max_bytes: int) -> list[tuple[str, str]]:
    """The pairs the tokenizer trains on, in `training_order`: those written before the text
    reaches `max_bytes` (each sentence counted with its newline)."""
    order = wmt_tokenizer.training_order(len(lengths))
    pair_bytes = lengths[order].sum(axis=1) + 2
    before = np.cumsum(pair_bytes) - pair_bytes
    chosen = order[: int(np.searchsorted(before, max_bytes, side="left"))]
    rank = np.full(len(lengths), -1, np.int64)
    rank[chosen] = np.arange(len(chosen))
    picked: list = [None] * len(chosen)
    for number, pair in enumerate(pairs_of(located)):
        if rank[number] >= 0:
            picked[rank[number]] = pair
    return picked


def tokenizer_for(
    root: pathlib.Path,
    given: str | None,
    train_text: Callable[[], list[tuple[str, str]]],
    vocab_size: int,
    max_bytes: int,
    log,
) -> tuple[wmt_tokenizer.Tokenizer, str]:
    """The split's tokenizer (written to `root/MODEL_FILE`): `given`, the one a previous run
    trained, or a new one; and how it came about."""
    path = root / wmt_tokenizer.MODEL_FILE
    if given is not None:
        tokenizer = wmt_tokenizer.Tokenizer.from_file(given)
        how = f"given ({pathlib.Path(given).name})"
    elif path.is_file():
        return wmt_tokenizer.Tokenizer.from_file(path), "trained"
    else:
        start = time.time()
        lines = list(wmt_tokenizer.training_lines(train_text(), max_bytes))
        size = sum(len(line.encode("utf-8")) + 1 for line in lines)
        log(f"training the SentencePiece model ({vocab_size:,} pieces) on {len(lines) // 2:,} "
            f"pairs, {size:,} bytes")  # fmt: skip
        tokenizer = wmt_tokenizer.Tokenizer(wmt_tokenizer.train(lines, vocab_size))
        log(f"trained the tokenizer ({time.time() - start:.0f} s)")
        how = "trained"
    if tokenizer.vocab_size > np.iinfo(pipeline.TOKEN_DTYPE).max + 1:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} pieces; at most 65,536 fit.")
    if not path.is_file() or path.read_bytes() != tokenizer.model_bytes:
        partial = root / f".{path.name}.partial"
        partial.write_bytes(tokenizer.model_bytes)
        os.replace(partial, path)
    return tokenizer, how


# --- writing the splits --------------------------------------------------------------------------
def write_split(
    folder: pathlib.Path,
    pairs: Iterator[tuple[str, str]],
    tokenizer: wmt_tokenizer.Tokenizer,
    num_threads: int,
    log,
    total_pairs: int | None = None,
) -> dict:
    """Tokenize `pairs`, drop those with more than MAX_LEN ids on a side, and write the split
    into `folder` atomically (a hidden sibling renamed into place, `split.json` last)."""
    partial = folder.with_name(f".{folder.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    kept_lengths, seen, too_long, start, report = [], 0, 0, time.time(), PROGRESS_PAIRS
    with open(partial / "inputs.bin", "wb") as inputs, open(partial / "targets.bin", "wb") as tgts:
        files = (inputs, tgts)
        while chunk := list(itertools.islice(pairs, CHUNK_PAIRS)):
            sides = [tokenizer.encode_batch([p[i] for p in chunk], num_threads) for i in (0, 1)]
            lengths = np.stack([np.fromiter(map(len, ids), np.int64) for ids in sides], axis=1)
            keep = (lengths <= pipeline.MAX_LEN).all(axis=1)
            for column, (ids, out) in enumerate(zip(sides, files)):
                flat = itertools.chain.from_iterable(itertools.compress(ids, keep))
                total = int(lengths[keep, column].sum())
                out.write(np.fromiter(flat, pipeline.TOKEN_DTYPE, count=total).tobytes())
            kept_lengths.append(lengths[keep])
            too_long += int((~keep).sum())
            seen += len(chunk)
            if total_pairs is not None and report <= seen < total_pairs:
                report += PROGRESS_PAIRS
                log(f"  tokenized {seen:,} of {total_pairs:,} {folder.name} pairs "
                    f"({time.time() - start:.0f} s)")  # fmt: skip
    lengths = np.concatenate([np.zeros((0, 2), np.int64), *kept_lengths])
    offsets = np.zeros((len(lengths) + 1, 2), np.int64)
    offsets[1:] = np.cumsum(lengths, axis=0)
    np.save(partial / "offsets.npy", offsets)
    counts = {
        "pairs": len(lengths),
        "read": seen,
        "too_long": too_long,
        "tokens": {"inputs": int(offsets[-1, 0]), "targets": int(offsets[-1, 1])},
        "tokenizer_sha256": tokenizer.sha256,
    }
    (partial / pipeline.SPLIT_FILE).write_text(json.dumps(counts, indent=2) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(partial, folder)
    log(f"wrote {folder}: {len(lengths):,} pairs, {too_long:,} longer than "
        f"{pipeline.MAX_LEN} ids left out ({time.time() - start:.0f} s)")  # fmt: skip
    return counts


def split_done(folder: pathlib.Path, tokenizer: wmt_tokenizer.Tokenizer) -> bool:
    path = folder / pipeline.SPLIT_FILE
    if not path.is_file():
        return False
    return json.loads(path.read_text()).get("tokenizer_sha256") == tokenizer.sha256


# --- the whole preparation -----------------------------------------------------------------------
def prepare(
    data_dir: str | pathlib.Path,
    archive_dir: str | None = None,
    *,
    tokenizer: str | None = None,
    expected_counts: Mapping[str, int] | None = EXPECTED_COUNTS,
    vocab_size: int = wmt_tokenizer.VOCAB_SIZE,
    max_training_bytes: int = wmt_tokenizer.MAX_TRAINING_BYTES,
    num_threads: int | None = None,
    allow_download: bool = True,
    log: Callable[[str], None] = print,
) -> pathlib.Path:
    """Build `<data_dir>/wmt/` (see the module docstring); returns that folder.

    `expected_counts` (non-empty pairs per split) are checked before anything is written; tests
    pass their fixture's, with a small `vocab_size` and `max_training_bytes`.

    Raises:
      FileNotFoundError: an archive or a file in it is missing.
      OSError: a download failed (offline: download the archives by hand, pass --archive_dir).
      ValueError: counts differ, files are damaged, or the tokenizer cannot be used or trained.
    """
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"--num_threads must be at least 1, got {num_threads}.")
    if tokenizer is not None:  # a bad file is refused before a finished dataset is touched
        wmt_tokenizer.Tokenizer.from_file(tokenizer)
    root = pathlib.Path(data_dir).expanduser() / pipeline.DATASET_DIR
    if (root / pipeline.INDEX_FILE).is_file() and tokenizer is None:
        log(f"WMT is already prepared in {root}")
        return root
    root.mkdir(parents=True, exist_ok=True)
    (root / pipeline.INDEX_FILE).unlink(missing_ok=True)  # redone below, with another tokenizer
    threads = num_threads or os.cpu_count() or 1
    located = locate(root, archive_dir, allow_download, log)
    eval_pairs = {name: list(pairs_of(located[name])) for name in EVAL_SOURCES}
    lengths = byte_lengths(located["train"], log)
    counts = {"train": len(lengths), **{name: len(p) for name, p in eval_pairs.items()}}
    try:
        check_counts(counts, expected_counts)
    except ValueError:  # files from a wrong archive are not kept for the next run
        shutil.rmtree(root / WORK_DIR, ignore_errors=True)
        raise
    model, how = tokenizer_for(
        root, tokenizer, lambda: training_pairs(located["train"], lengths, max_training_bytes),
        vocab_size, max_training_bytes, log,
    )  # fmt: skip
    written = {}
    for name in pipeline.SPLITS:
        folder = root / name
        if split_done(folder, model):
            written[name] = json.loads((folder / pipeline.SPLIT_FILE).read_text())
            continue
        pairs = iter(eval_pairs[name]) if name in eval_pairs else pairs_of(located[name], log)
        written[name] = write_split(folder, pairs, model, threads, log, counts[name])
    write_index(root, written, model, how, located, expected_counts, max_training_bytes)
    shutil.rmtree(root / WORK_DIR, ignore_errors=True)
    return root


def write_index(root, written, model, how, located, expected_counts, max_training_bytes) -> None:
    """index.json (atomically, last): what the splits hold and whether it is the benchmark's."""
    problems = []
    if dict(expected_counts or {}) != EXPECTED_COUNTS:
        problems.append(f"pair counts {expected_counts} are not the release's")
    if model.vocab_size != wmt_tokenizer.VOCAB_SIZE:
        problems.append(f"a vocabulary of {model.vocab_size}, not {wmt_tokenizer.VOCAB_SIZE}")
    if how == "trained" and max_training_bytes != wmt_tokenizer.MAX_TRAINING_BYTES:
        problems.append(f"a tokenizer trained on {max_training_bytes:,} bytes, not 1e7")
    index = {
        "format": pipeline.FORMAT,
        "vocab_size": model.vocab_size,
        "tokenizer": how,
        "sentencepiece": importlib.metadata.version("sentencepiece"),
        "tokenizer_sha256": model.sha256,
        "max_len": pipeline.MAX_LEN,
        "splits": written,
        "sources": {
            split: {source.name: [path.name for path in files] for source, files in sources}
            for split, sources in located.items()
        },
        "benchmark": {"ok": not problems, "why": "; ".join(problems) or None},
    }
    partial = root / f".{pipeline.INDEX_FILE}.partial"
    partial.write_text(json.dumps(index, indent=2) + "\n")
    os.replace(partial, root / pipeline.INDEX_FILE)


def _add_arguments(parser) -> None:
    parser.add_argument(
        "--archive_dir", "--archive-dir", metavar="DIR",
        help="a folder holding the release archives (training-parallel-europarl-v7.tgz, "
        "training-parallel-commoncrawl.tgz, training-parallel-nc-v12.tgz, rapid2016.tgz, "
        "dev.tgz) or the files extracted from them; what is missing is downloaded",
    )  # fmt: skip
    parser.add_argument(
        "--tokenizer", metavar="MODEL",
        help="use this SentencePiece model (e.g. upstream's wmt_sentencepiece_model) instead "
        "of training one",
    )  # fmt: skip
    parser.add_argument(
        "--num_threads", "--num-threads", type=int, metavar="N",
        help="threads that tokenize (default: one per core)",
    )  # fmt: skip


def main(argv=None) -> int:
    return preparing.main(
        argv,
        dataset="wmt",
        title="WMT",
        description=__doc__,
        prepare=lambda args: prepare(
            args.data_dir,
            args.archive_dir,
            tokenizer=args.tokenizer,
            num_threads=args.num_threads,
            log=preparing.progress,
        ),
        add_arguments=_add_arguments,
    )


if __name__ == "__main__":
    sys.exit(main())
