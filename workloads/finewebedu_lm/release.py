"""The FineWeb-Edu release and GPT-2's tokenizer: finding the parquet shards in a folder, listing
and downloading them from the hub (resumable, each checked against the hub's size and sha256),
and getting and checking the tokenizer (docs/data.md, "FineWeb-Edu")."""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable

from algoperf.data.download import fetch, file_digest
from algoperf.workloads.finewebedu_lm import input_pipeline as pipeline

REPO = "HuggingFaceFW/fineweb-edu"
CONFIG = "sample-10BT"
RELEASE_PATH = "sample/10BT"
DOWNLOAD_DIR = "downloads"
TOKENIZER_REPO = "openai-community/gpt2"
TOKENIZER_FILE = "tokenizer.json"
EOS_TOKEN = "<|endoftext|>"
GPT2_PROBE = ("Hello world", [15496, 995])
Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class SourceFile:
    """One parquet shard of the release."""

    path: pathlib.Path
    documents: int
    size: int
    sha256: str | None = None

    @property
    def stem(self) -> str:
        return self.path.name.removesuffix(".parquet")


def one_line(error: BaseException) -> str:
    """An error's message on one line (the hub's and pyarrow's span several)."""
    return " ".join(str(error).split())


# --- the tokenizer ---------------------------------------------------------------------------
def load_tokenizer(path: pathlib.Path):
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # the Rust side raises a bare Exception on a bad file
        raise ValueError(f"{path} is not a tokenizers tokenizer.json ({one_line(error)})") from None
    if tokenizer.token_to_id(EOS_TOKEN) is None:
        raise ValueError(f"{path}: the tokenizer has no {EOS_TOKEN} token.")
    if tokenizer.get_vocab_size(with_added_tokens=True) > 1 << 16:
        raise ValueError(f"{path}: more than 65,536 tokens do not fit the uint16 token files.")
    return tokenizer


def gpt2_mismatch(tokenizer) -> str | None:
    """Why `tokenizer` is not GPT-2's byte-level BPE, or None when it is."""
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    eos = tokenizer.token_to_id(EOS_TOKEN)
    probe = tokenizer.encode(GPT2_PROBE[0], add_special_tokens=False).ids
    if (vocab, eos, probe) != (pipeline.VOCAB_SIZE, pipeline.EOS_ID, GPT2_PROBE[1]):
        return (
            f"its vocabulary is {vocab} tokens, EOS {eos}, {GPT2_PROBE[0]!r} -> {probe} "
            f"(GPT-2's: {pipeline.VOCAB_SIZE}, {pipeline.EOS_ID}, {GPT2_PROBE[1]})"
        )
    return None


def get_tokenizer(root: pathlib.Path, tokenizer_path: str | None, log: Log) -> pathlib.Path:
    """The tokenizer.json to use: `tokenizer_path`, or GPT-2's, downloaded into `root`."""
    if tokenizer_path is not None:
        path = pathlib.Path(tokenizer_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"--tokenizer {path}: no such file.")
        return path
    from huggingface_hub import hf_hub_url

    destination = root / TOKENIZER_FILE
    if not destination.exists():
        log(f"downloading GPT-2's {TOKENIZER_FILE} from {TOKENIZER_REPO}")
    url = hf_hub_url(TOKENIZER_REPO, TOKENIZER_FILE)
    fetch([url], destination, None, check=_check_gpt2_file)
    return destination


def _check_gpt2_file(path: pathlib.Path) -> None:
    why = gpt2_mismatch(load_tokenizer(path))
    if why is not None:
        raise ValueError(f"{path} is not GPT-2's tokenizer: {why}")


# --- the release -----------------------------------------------------------------------------
def parquet_rows(path: pathlib.Path) -> int:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception as error:  # pyarrow's ArrowInvalid and friends
        raise ValueError(
            f"{path} is not a readable parquet file ({one_line(error)}); delete it and rerun."
        ) from None


def find_shards(archive_dir: str) -> list[pathlib.Path]:
    """The parquet shards in `archive_dir` (`sample/10BT/*.parquet` or `*.parquet`), sorted."""
    folder = pathlib.Path(archive_dir).expanduser()
    for candidate in (folder / RELEASE_PATH, folder):
        found = sorted(candidate.glob("*.parquet"))
        if found:
            return found
    raise FileNotFoundError(
        f"no .parquet files in {folder} or {folder / RELEASE_PATH}; download {REPO}'s "
        f"{RELEASE_PATH}/*.parquet, e.g. `hf download {REPO} --repo-type dataset --include "
        f"'{RELEASE_PATH}/*' --local-dir {folder}`."
    )


def list_release(revision: str) -> tuple[str, list[tuple[str, int, str | None]]]:
    """The release's commit and its shards (hub path, bytes, sha256), listed by the hub."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        commit = api.dataset_info(REPO, revision=revision).sha
        entries = api.list_repo_tree(
            REPO, path_in_repo=RELEASE_PATH, revision=commit, repo_type="dataset"
        )
        files = [
            (entry.path, int(entry.size), entry.lfs.sha256 if entry.lfs else None)
            for entry in entries
            if entry.path.endswith(".parquet")
        ]
    except Exception as error:  # huggingface_hub's HTTP errors are no OSError subclasses
        raise OSError(
            f"could not list {REPO} {RELEASE_PATH} at {revision} ({one_line(error)}); offline, "
            "download the shards by hand and pass --archive_dir."
        ) from None
    if not files:
        raise OSError(f"{REPO} has no {RELEASE_PATH}/*.parquet at revision {revision}.")
    return commit, sorted(files)


def download_release(root: pathlib.Path, revision: str, log: Log) -> tuple[str, list[SourceFile]]:
    """Download every shard (resumable; each checked against the hub's size and sha256)."""
    from huggingface_hub import hf_hub_url

    commit, files = list_release(revision)
    total = sum(size for _, size, _ in files)
    log(f"{REPO} {CONFIG} at {commit}: {len(files)} shards, {total / 2**30:.1f} GiB")
    shards = []
    for number, (hub_path, size, sha256) in enumerate(files, 1):
        destination = root / DOWNLOAD_DIR / pathlib.PurePosixPath(hub_path).name
        if not destination.exists():
            log(f"downloading shard {number}/{len(files)}: {hub_path}")
        url = hf_hub_url(REPO, hub_path, repo_type="dataset", revision=commit)
        fetch(
            [url], destination, None, timeout_s=60.0, check=_file_check(size, sha256),
            progress=_download_progress(log),
        )  # fmt: skip
        shards.append(SourceFile(destination, parquet_rows(destination), size, sha256))
    return commit, shards


def _file_check(size: int, sha256: str | None) -> Callable[[pathlib.Path], None]:
    def check(path: pathlib.Path) -> None:
        if path.stat().st_size != size:
            raise ValueError(f"{path} has {path.stat().st_size} bytes, the hub says {size}")
        if sha256 is not None and file_digest(path, "sha256") != sha256:
            raise ValueError(f"{path}: its sha256 differs from the hub's {sha256}")

    return check


def _download_progress(log: Log):
    state = {"next": 0}

    def report(done: int, total: int | None) -> None:
        if done >= state["next"]:
            state["next"] = done + (256 << 20)
            log(f"  {done / 2**20:,.0f} MiB" + (f" of {total / 2**20:,.0f} MiB" if total else ""))

    return report
