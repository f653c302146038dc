"""Build ogbg-molpcba's train/validation/test splits from OGB's own release, without TFDS or RDKit.

Usage (the same as `python -m algoperf.workloads.ogbg.prepare ...`):
  algoperf prepare ogbg --data_dir ~/data                     # downloads pcba.zip
  algoperf prepare ogbg --data_dir ~/data --archive_dir DIR   # DIR holds pcba.zip

The release (`pcba.zip`, the OGB project's download for ogbg-molpcba) holds gzipped CSVs: under
`pcba/raw/` the atom features (9 per atom), the bonds (two atom indices within their graph, one
row per bond), the bond features (3 per bond), atoms and bonds per graph, the 128 task labels per
graph (empty = no label); under `pcba/split/scaffold/` the graph indices of train, valid and test.
The splits are written to `<data_dir>/ogbg_molpcba/<split>/` in the memory-mapped layout that
`workloads/ogbg/input_pipeline.py` describes, each atomically, so a rerun after an interruption
redoes only the splits not yet finished. Bonds stay one row each: the pipeline makes the two
directed edges of every bond when it builds batches.
"""

from __future__ import annotations

import gzip
import io
import pathlib
import sys
import time
import zipfile
from collections.abc import Callable, Mapping

import numpy as np

from algoperf.data import preparing
from algoperf.data.download import fetch
from algoperf.data.packing import ragged_positions
from algoperf.workloads.ogbg import input_pipeline as pipeline

URL = "https://snap.stanford.edu/ogb/data/graphproppred/csv_mol_download/pcba.zip"
ARCHIVE = "pcba.zip"
RELEASE_DIR = "pcba"
RAW_FILES = {
    "num_nodes": "raw/num-node-list.csv.gz",
    "num_bonds": "raw/num-edge-list.csv.gz",
    "node_feat": "raw/node-feat.csv.gz",
    "edge_index": "raw/edge.csv.gz",
    "edge_feat": "raw/edge-feat.csv.gz",
    "labels": "raw/graph-label.csv.gz",
}
SPLIT_FILES = {
    "train": "split/scaffold/train.csv.gz",
    "validation": "split/scaffold/valid.csv.gz",
    "test": "split/scaffold/test.csv.gz",
}
TOTAL_GRAPHS = 437_929


class Release:
    """The release's files, read from the zip or from an extracted `pcba/` folder."""

    def __init__(self, source: pathlib.Path) -> None:
        self.source = source
        self._zip = zipfile.ZipFile(source) if source.is_file() else None

    def open(self, relative: str) -> io.BufferedIOBase:
        path = f"{RELEASE_DIR}/{relative}"
        try:
            if self._zip is not None:
                return gzip.open(self._zip.open(path))
            return gzip.open(self.source / relative)
        except (KeyError, FileNotFoundError):
            raise FileNotFoundError(
                f"{self.source} lacks {path}; is it OGB's pcba.zip (ogbg-molpcba)?"
            ) from None

    def table(self, relative: str, dtype, width: int | None) -> np.ndarray:
        """A headerless CSV as a [rows, width] (or [rows]) array; empty cells are NaN."""
        import pandas as pd

        with self.open(relative) as handle:
            frame = pd.read_csv(handle, header=None, dtype=np.float64 if dtype is None else dtype)
        values = frame.to_numpy()
        if width is not None and values.shape[1] != width:
            raise ValueError(
                f"{self.source}: {relative} has {values.shape[1]} columns, expected {width}."
            )
        return values if width is not None else values[:, 0]


def find_release(archive_dir: str | None) -> pathlib.Path | None:
    """`pcba.zip` or an extracted `pcba/` folder in `archive_dir`, if there."""
    if archive_dir is None:
        return None
    folder = pathlib.Path(archive_dir).expanduser()
    for candidate in (folder / ARCHIVE, folder / RELEASE_DIR, folder):
        if candidate.is_file() or (candidate / RAW_FILES["labels"]).exists():
            return candidate
    raise FileNotFoundError(
        f"no {ARCHIVE} (or extracted {RELEASE_DIR}/ folder) in {folder}; download it from {URL}."
    )


def _check_zip(path: pathlib.Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile as error:
        raise ValueError(f"{path} is not a complete zip ({error})") from None
    if bad is not None:
        raise ValueError(f"{path}: member {bad} is corrupt")


def read_release(release: Release, log: Callable[[str], None]) -> dict[str, np.ndarray]:
    """Every graph of the release, checked for consistency."""
    start = time.time()
    arrays = {}
    for key, dtype, width in (
        ("num_nodes", np.int64, None),
        ("num_bonds", np.int64, None),
        ("node_feat", np.int16, pipeline.NODE_FEATURES),
        ("edge_index", np.int32, 2),
        ("edge_feat", np.int16, pipeline.EDGE_FEATURES),
        ("labels", None, pipeline.NUM_TASKS),
    ):
        arrays[key] = release.table(RAW_FILES[key], dtype, width)
        log(f"read {RAW_FILES[key]}: {len(arrays[key]):,} rows ({time.time() - start:.0f} s)")
    graphs = len(arrays["num_nodes"])
    problems = []
    if len(arrays["num_bonds"]) != graphs or len(arrays["labels"]) != graphs:
        problems.append("the per-graph files disagree on the number of graphs")
    if int(arrays["num_nodes"].sum()) != len(arrays["node_feat"]):
        problems.append("the atom counts do not add up to the atom-feature rows")
    if int(arrays["num_bonds"].sum()) != len(arrays["edge_index"]):
        problems.append("the bond counts do not add up to the bond rows")
    if len(arrays["edge_index"]) != len(arrays["edge_feat"]):
        problems.append("bonds and bond features differ in rows")
    if problems:
        raise ValueError(f"{release.source}: " + "; ".join(problems) + ".")
    atoms = np.repeat(arrays["num_nodes"], arrays["num_bonds"])
    if arrays["edge_index"].min(initial=0) < 0 or (arrays["edge_index"].max(axis=1) >= atoms).any():
        raise ValueError(f"{release.source}: a bond names an atom outside its graph.")
    labels = arrays.pop("labels")
    arrays["labels"] = np.where(np.isnan(labels), -1, labels).astype(np.int8)
    return arrays


def select(arrays: Mapping[str, np.ndarray], graph_ids: np.ndarray) -> pipeline.GraphSplit:
    """The graphs `graph_ids` (in that order) as a split."""
    node_offsets = np.r_[0, np.cumsum(arrays["num_nodes"])]
    edge_offsets = np.r_[0, np.cumsum(arrays["num_bonds"])]
    n_nodes, n_bonds = arrays["num_nodes"][graph_ids], arrays["num_bonds"][graph_ids]
    node_rows = np.repeat(node_offsets[graph_ids], n_nodes) + ragged_positions(n_nodes)
    edge_rows = np.repeat(edge_offsets[graph_ids], n_bonds) + ragged_positions(n_bonds)
    return pipeline.GraphSplit(
        node_feat=arrays["node_feat"][node_rows],
        edge_feat=arrays["edge_feat"][edge_rows],
        edge_index=arrays["edge_index"][edge_rows],
        node_offsets=np.r_[0, np.cumsum(n_nodes)].astype(np.int64),
        edge_offsets=np.r_[0, np.cumsum(n_bonds)].astype(np.int64),
        labels=arrays["labels"][graph_ids],
    )


def prepare(
    data_dir: str | pathlib.Path,
    archive_dir: str | None = None,
    *,
    expected_counts: Mapping[str, int] | None = pipeline.EXPECTED_COUNTS,
    allow_download: bool = True,
    log: Callable[[str], None] = print,
) -> pathlib.Path:
    """Build the three splits under `<data_dir>/ogbg_molpcba/`; returns that folder.

    `expected_counts` (graphs per split) are checked before anything is written; tests pass
    their fixture's counts.

    Raises:
      FileNotFoundError: no release in `archive_dir`, or it lacks a file.
      OSError: the download failed (offline: download pcba.zip by hand, pass --archive_dir).
      ValueError: the release is inconsistent, or a split has the wrong number of graphs.
    """
    root = pathlib.Path(data_dir).expanduser() / pipeline.DATASET_DIR
    todo = [s for s in pipeline.SPLITS if not (root / s / pipeline.SPLIT_FILE).exists()]
    if not todo:
        log(f"ogbg-molpcba is already prepared in {root}")
        return root
    source = find_release(archive_dir)
    if source is None:
        if not allow_download:
            raise FileNotFoundError(f"no --archive_dir given and downloading is off; get {URL}.")
        source = root / "download" / ARCHIVE
        log(f"downloading {URL} to {source}")
        fetch([URL], source, None, timeout_s=60.0, check=_check_zip, progress=_progress(log))
    release = Release(source)
    arrays = read_release(release, log)
    splits = {}
    for name in pipeline.SPLITS:
        ids = release.table(SPLIT_FILES[name], np.int64, None)
        if ids.min(initial=0) < 0 or ids.max(initial=0) >= len(arrays["labels"]):
            raise ValueError(f"{source}: {SPLIT_FILES[name]} names a graph that does not exist.")
        splits[name] = ids
    if expected_counts is not None:
        wrong = {n: len(ids) for n, ids in splits.items() if len(ids) != expected_counts[n]}
        if wrong:
            raise ValueError(
                f"{source}: split sizes {wrong} differ from ogbg-molpcba's "
                f"{dict(expected_counts)}; is this the right release?"
            )
    for name in todo:
        split = select(arrays, splits[name])
        pipeline.write_split(root / name, split)
        log(
            f"wrote {root / name}: {len(split):,} graphs, {int(split.node_offsets[-1]):,} atoms, "
            f"{int(split.edge_offsets[-1]):,} bonds"
        )
    return root


def _progress(log: Callable[[str], None]):
    state = {"next": 0}

    def report(done: int, total: int | None) -> None:
        if done >= state["next"]:
            state["next"] = done + (8 << 20)
            log(f"  {done / 2**20:.0f} MiB" + (f" of {total / 2**20:.0f} MiB" if total else ""))

    return report


def main(argv=None) -> int:
    return preparing.main(
        argv,
        dataset="ogbg",
        title="ogbg-molpcba",
        description=__doc__,
        prepare=lambda args: prepare(args.data_dir, args.archive_dir, log=preparing.progress),
        add_arguments=lambda parser: parser.add_argument(
            "--archive_dir",
            "--archive-dir",
            metavar="DIR",
            help=f"a folder holding {ARCHIVE} (else it is downloaded)",
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
