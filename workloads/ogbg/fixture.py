"""A small ogbg-molpcba release in OGB's raw format (`pcba.zip`), for tests: what
`workloads.ogbg.prepare` reads, with real small graphs from networkx among random molecules."""

from __future__ import annotations

import gzip
import io
import pathlib
import zipfile

import numpy as np

from algoperf.workloads.ogbg import input_pipeline as pipeline
from algoperf.workloads.ogbg import prepare

SIZES = {"train": 40, "validation": 26, "test": 21}
"""Graphs per split of the default fixture (validation and test not a multiple of a pack).
Labels are rare positives (5%, about molpcba's rate is 1.4%) among ~25 graphs per eval split,
so an untrained model's mean average precision stays well under the 0.28 target."""
POSITIVE_RATE = 0.05


def real_graphs() -> list[tuple[int, list[tuple[int, int]]]]:
    """(atoms, bonds) of small real graphs that networkx ships (social networks, not molecules,
    but real irregular structure: hubs, cycles, a star)."""
    import networkx as nx

    graphs = []
    for graph in (
        nx.karate_club_graph(),
        nx.florentine_families_graph(),
        nx.davis_southern_women_graph(),
        nx.les_miserables_graph(),
    ):
        graph = nx.convert_node_labels_to_integers(graph)
        graphs.append((graph.number_of_nodes(), [tuple(edge) for edge in graph.edges()]))
    return graphs


def _csv(rows: np.ndarray, missing: np.ndarray | None = None) -> bytes:
    lines = []
    for i, row in enumerate(np.atleast_2d(rows) if rows.ndim > 1 else rows[:, None]):
        cells = [str(int(v)) for v in row]
        if missing is not None:
            cells = ["" if missing[i, j] else cell for j, cell in enumerate(cells)]
        lines.append(",".join(cells))
    return gzip.compress(("\n".join(lines) + "\n").encode())


def write_release(
    folder: pathlib.Path, sizes: dict[str, int] = SIZES, seed: int = 0, *, with_real: bool = True
) -> pathlib.Path:
    """Write `folder/pcba.zip` holding sum(sizes) graphs (the networkx ones first, in train when
    `with_real`), scaffold splits of `sizes` (shuffled graph ids), and return the zip's path."""
    rng = np.random.default_rng(seed)
    total = sum(sizes.values())
    graphs = real_graphs() if with_real else []
    random_part = pipeline.random_split(total - len(graphs), seed)
    for g in range(len(random_part)):
        lo, hi = random_part.edge_offsets[g], random_part.edge_offsets[g + 1]
        graphs.append(
            (int(random_part.num_nodes[g]), [tuple(e) for e in random_part.edge_index[lo:hi]])
        )
    num_nodes = np.asarray([n for n, _ in graphs])
    num_bonds = np.asarray([len(b) for _, b in graphs])
    bonds = np.asarray([b for _, bs in graphs for b in bs], np.int64).reshape(-1, 2)
    node_feat = rng.integers(0, 36, (int(num_nodes.sum()), pipeline.NODE_FEATURES))
    edge_feat = rng.integers(0, 5, (len(bonds), pipeline.EDGE_FEATURES))
    labels = (rng.random((total, pipeline.NUM_TASKS)) < POSITIVE_RATE).astype(np.int64)
    missing = rng.random(labels.shape) < 0.1
    missing[:, 0] = True  # a task with no label at all
    labels[:, 1] = 0  # a task with no positive
    order = np.concatenate(
        [
            np.arange(len(real_graphs()) if with_real else 0),
            len(graphs) - len(random_part) + rng.permutation(len(random_part)),
        ]
    )
    files = {
        prepare.RAW_FILES["num_nodes"]: _csv(num_nodes),
        prepare.RAW_FILES["num_bonds"]: _csv(num_bonds),
        prepare.RAW_FILES["node_feat"]: _csv(node_feat),
        prepare.RAW_FILES["edge_index"]: _csv(bonds),
        prepare.RAW_FILES["edge_feat"]: _csv(edge_feat),
        prepare.RAW_FILES["labels"]: _csv(labels, missing),
    }
    start = 0
    for name in pipeline.SPLITS:
        files[prepare.SPLIT_FILES[name]] = _csv(np.sort(order[start : start + sizes[name]]))
        start += sizes[name]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / prepare.ARCHIVE
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for relative, content in files.items():
            archive.writestr(f"{prepare.RELEASE_DIR}/{relative}", content)
    path.write_bytes(buffer.getvalue())
    return path


def write_fixture(folder: pathlib.Path, sizes: dict[str, int] = SIZES) -> pathlib.Path:
    """The prepared fixture: a release written and run through `prepare`; returns --data_dir."""
    archives = folder / "archives"
    write_release(archives, sizes)
    prepare.prepare(folder, str(archives), expected_counts=sizes, log=lambda line: None)
    return folder
