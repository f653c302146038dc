"""ogbg-molpcba's data: prepare from a release in OGB's raw format, greedy packing into static
budgets, exact eval coverage and rank-independent train batches, and the mAP metric against
scikit-learn."""

from __future__ import annotations

import gzip
import http.server
import json
import pathlib
import threading
import zipfile

import numpy as np
import pytest

from algoperf.data.download import fetch
from algoperf.data.packing import greedy_pack, ragged_positions
from algoperf.data.sharding import Shard
from algoperf.workloads.ogbg import fixture, prepare
from algoperf.workloads.ogbg import input_pipeline as pipeline
from algoperf.workloads.ogbg.metrics import average_precision, mean_average_precision


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ogbg")
    fixture.write_fixture(folder)
    return folder


@pytest.fixture(scope="module")
def dataset(prepared):
    return pipeline.Pipeline().load(str(prepared))


def read_gz_csv(archive: pathlib.Path, relative: str) -> list[list[str]]:
    with zipfile.ZipFile(archive) as zipped:
        text = gzip.decompress(zipped.read(f"pcba/{relative}")).decode()
    return [line.split(",") for line in text.splitlines()]


# --- prepare ---------------------------------------------------------------------------------


def test_prepare_keeps_every_graph_of_its_split_exactly(tmp_path):
    archive = fixture.write_release(tmp_path / "archives")
    logged = []
    root = prepare.prepare(
        tmp_path / "data", str(tmp_path / "archives"), expected_counts=fixture.SIZES,
        log=logged.append,
    )  # fmt: skip
    assert any("wrote" in line and "train" in line for line in logged)
    num_nodes = [int(r[0]) for r in read_gz_csv(archive, prepare.RAW_FILES["num_nodes"])]
    num_bonds = [int(r[0]) for r in read_gz_csv(archive, prepare.RAW_FILES["num_bonds"])]
    feats = read_gz_csv(archive, prepare.RAW_FILES["node_feat"])
    bonds = read_gz_csv(archive, prepare.RAW_FILES["edge_index"])
    labels = read_gz_csv(archive, prepare.RAW_FILES["labels"])
    node_start, bond_start = np.r_[0, np.cumsum(num_nodes)], np.r_[0, np.cumsum(num_bonds)]
    for name in pipeline.SPLITS:
        ids = [int(r[0]) for r in read_gz_csv(archive, prepare.SPLIT_FILES[name])]
        split = pipeline.load_split(root / name)
        assert len(split) == fixture.SIZES[name] == len(ids)
        for position, graph in enumerate(ids):
            atoms = split.node_feat[split.node_offsets[position] : split.node_offsets[position + 1]]
            expected = [
                [int(v) for v in row] for row in feats[node_start[graph] : node_start[graph + 1]]
            ]
            assert atoms.tolist() == expected
            got = split.edge_index[split.edge_offsets[position] : split.edge_offsets[position + 1]]
            expected = [
                [int(v) for v in row] for row in bonds[bond_start[graph] : bond_start[graph + 1]]
            ]
            assert got.tolist() == expected  # one row per bond, indices within the graph
            row = [-1 if cell == "" else int(cell) for cell in labels[graph]]
            assert split.labels[position].tolist() == row
        assert json.loads((root / name / "split.json").read_text())["graphs"] == len(ids)


def test_prepare_is_resumable_and_checks_counts(tmp_path):
    fixture.write_release(tmp_path / "archives")
    root = prepare.prepare(
        tmp_path / "data", str(tmp_path / "archives"), expected_counts=fixture.SIZES,
        log=lambda line: None,
    )  # fmt: skip
    # An interrupted run: one split half-written (no split.json) and one never started.
    (root / "test" / "split.json").unlink()
    import shutil

    shutil.rmtree(root / "validation")
    before = (root / "train" / "labels.npy").stat().st_mtime_ns
    prepare.prepare(
        tmp_path / "data", str(tmp_path / "archives"), expected_counts=fixture.SIZES,
        log=lambda line: None,
    )  # fmt: skip
    assert (root / "train" / "labels.npy").stat().st_mtime_ns == before  # finished: kept
    assert pipeline.load_split(root / "validation").labels.shape[0] == fixture.SIZES["validation"]
    assert not list(root.glob(".*partial"))
    with pytest.raises(ValueError, match="differ from ogbg-molpcba"):
        prepare.prepare(tmp_path / "other", str(tmp_path / "archives"), log=lambda line: None)
    assert not (tmp_path / "other" / pipeline.DATASET_DIR / "train").exists()


def test_prepare_refuses_bad_releases(tmp_path):
    with pytest.raises(FileNotFoundError, match="pcba.zip"):
        prepare.prepare(tmp_path / "data", str(tmp_path), log=lambda line: None)
    archive = fixture.write_release(tmp_path / "a")
    with zipfile.ZipFile(archive) as zipped, zipfile.ZipFile(tmp_path / "b.zip", "w") as out:
        for item in zipped.namelist():
            if not item.endswith("edge-feat.csv.gz"):
                out.writestr(item, zipped.read(item))
    (tmp_path / "b").mkdir()
    (tmp_path / "b.zip").rename(tmp_path / "b" / "pcba.zip")
    with pytest.raises(FileNotFoundError, match="edge-feat"):
        prepare.prepare(tmp_path / "data", str(tmp_path / "b"), expected_counts=None,
                        log=lambda line: None)  # fmt: skip
    assert (
        prepare.main(["--data_dir", str(tmp_path / "data"), "--archive_dir", str(tmp_path / "b")])
        == 1
    )


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one payload, honouring `Range: bytes=N-`; fails once mid-file if asked."""

    payload = b""
    cut_once = [False]

    def do_GET(self):  # noqa: N802 - the http.server API
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
        body = self.payload[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.cut_once[0]:
            self.cut_once[0] = False
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)  # the connection drops mid-file
            return
        self.wfile.write(body)

    def log_message(self, *args):
        del args


def test_download_continues_where_it_stopped_and_checks_the_zip(tmp_path):
    archive = fixture.write_release(tmp_path / "src")
    RangeHandler.payload = archive.read_bytes()
    RangeHandler.cut_once[0] = True
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/pcba.zip"
    target = tmp_path / "out" / "pcba.zip"
    try:
        with pytest.raises(OSError):
            fetch([url], target, None, check=prepare._check_zip)
        partial = target.with_name(".pcba.zip.partial")
        assert 0 < partial.stat().st_size < len(RangeHandler.payload) and not target.exists()
        fetch([url], target, None, check=prepare._check_zip)  # continues with a Range request
        assert target.read_bytes() == RangeHandler.payload and not partial.exists()
        RangeHandler.payload = b"not a zip"
        with pytest.raises(OSError, match="not a complete zip"):
            fetch([url], tmp_path / "out" / "bad.zip", None, check=prepare._check_zip)
        assert sorted(p.name for p in target.parent.iterdir()) == ["pcba.zip"]
    finally:
        server.shutdown()


# --- packing ---------------------------------------------------------------------------------


def test_greedy_pack_keeps_order_and_budgets():
    rng = np.random.default_rng(0)
    sizes = np.stack([rng.integers(0, 30, 500), rng.integers(0, 70, 500)], axis=1)
    bounds = greedy_pack(sizes, (100, 200), max_items=5)
    assert bounds[0] == 0 and bounds[-1] == 500 and (np.diff(bounds) >= 1).all()
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        assert hi - lo <= 5 and (sizes[lo:hi].sum(axis=0) <= (100, 200)).all()
        if hi < 500:  # closed only because the next example did not fit
            grown = sizes[lo : hi + 1].sum(axis=0)
            assert hi - lo == 5 or (grown > (100, 200)).any()
    assert greedy_pack(np.zeros((0, 2)), (1, 1)).tolist() == [0]
    with pytest.raises(ValueError, match="example 2 .* larger than a pack's budget"):
        greedy_pack(np.asarray([[1, 1], [1, 1], [5, 1]]), (4, 4))
    assert ragged_positions(np.asarray([2, 0, 3])).tolist() == [0, 1, 0, 1, 2]


def graphs_of(batch) -> list[tuple]:
    """Each real graph of a batch as a hashable (features, edges, labels) record."""
    inputs = batch["inputs"]
    records = []
    for pack in range(inputs["n_node"].shape[0]):
        slots = inputs["n_node"].shape[1]
        for slot in range(slots - 1):
            if inputs["n_node"][pack, slot] == 0:
                continue
            nodes = np.flatnonzero(inputs["node_graph"][pack] == slot)
            edge_mask = inputs["node_graph"][pack][inputs["senders"][pack]] == slot
            senders = inputs["senders"][pack][edge_mask] - nodes[0]
            receivers = inputs["receivers"][pack][edge_mask] - nodes[0]
            records.append((
                inputs["nodes"][pack][nodes].tobytes(),
                tuple(sorted(zip(senders.tolist(), receivers.tolist()))),
                batch["targets"][pack, slot].tobytes() + batch["weights"][pack, slot].tobytes(),
            ))  # fmt: skip
    return records


def split_records(split: pipeline.GraphSplit) -> list[tuple]:
    records = []
    for g in range(len(split)):
        nodes = np.asarray(split.node_feat[split.node_offsets[g] : split.node_offsets[g + 1]])
        bonds = split.edge_index[split.edge_offsets[g] : split.edge_offsets[g + 1]]
        edges = [(int(a), int(b)) for a, b in bonds] + [(int(b), int(a)) for a, b in bonds]
        labels = split.labels[g]
        records.append((
            nodes.astype(np.float32).tobytes(), tuple(sorted(edges)),
            (labels == 1).astype(np.float32).tobytes() + (labels >= 0).astype(np.float32).tobytes(),
        ))  # fmt: skip
    return records


def check_layout(batch, shape: pipeline.PackShape) -> None:
    """The contract the models rely on (docs/workloads.md, "ogbg")."""
    inputs = batch["inputs"]
    packs = inputs["nodes"].shape[0]
    assert inputs["nodes"].shape == (packs, shape.nodes, 9) and inputs["nodes"].dtype == np.float32
    assert inputs["edges"].shape == (packs, shape.edges, 3)
    assert inputs["n_node"].shape == (packs, shape.graphs + 1) == inputs["n_edge"].shape
    assert batch["targets"].shape == (packs, shape.graphs + 1, 128) == batch["weights"].shape
    for p in range(packs):
        graph_of_node = inputs["node_graph"][p]
        assert graph_of_node[-1] == shape.graphs  # the last node is always padding
        assert (np.bincount(graph_of_node, minlength=shape.graphs + 1) == inputs["n_node"][p]).all()
        edge_graph = graph_of_node[inputs["senders"][p]]
        assert (graph_of_node[inputs["receivers"][p]] == edge_graph).all()  # within one graph
        assert (np.bincount(edge_graph, minlength=shape.graphs + 1) == inputs["n_edge"][p]).all()
        assert not batch["weights"][p, -1].any()  # the padding graph has no labels
        real = inputs["n_node"][p, :-1] > 0
        assert not real[np.argmin(real) :].any() or real.all()  # real slots come first


@pytest.mark.parametrize("split_name", ["validation", "test", "eval_train"])
@pytest.mark.parametrize("ranks", [1, 2, 4])
def test_eval_visits_every_graph_once_on_any_number_of_ranks(dataset, split_name, ranks):
    source = dataset["train" if split_name == "eval_train" else split_name]
    pipe = pipeline.Pipeline()
    seen = []
    for rank in range(ranks):
        shard = Shard(rank, ranks)
        shape = pipeline.pack_shape(pipeline.pack_graphs(8, shard, 16), dataset.largest)
        batches = list(pipe.eval_batches(dataset, split_name, 8, seed=3, shard=shard,
                                         num_eval_train_examples=43_793))  # fmt: skip
        for batch in batches:
            check_layout(batch, shape)
            seen += graphs_of(batch)
    assert sorted(seen) == sorted(split_records(source))


def test_train_batches_are_the_same_on_any_number_of_ranks_and_after_a_resume(dataset):
    pipe = pipeline.Pipeline()
    one = pipe.train_batches(dataset, 64, seed=5, shard=Shard())
    first = [next(one) for _ in range(6)]
    shape = pipeline.pack_shape(16, dataset.largest)  # 16 | 64 / D for D = 1, 2, 4
    for batch in first:
        check_layout(batch, shape)
    for ranks in (2, 4):
        streams = [
            pipe.train_batches(dataset, 64, seed=5, shard=Shard(r, ranks)) for r in range(ranks)
        ]
        for batch in first:
            parts = [next(stream) for stream in streams]
            for key in ("nodes", "senders", "node_graph", "n_node"):
                joined = np.concatenate([part["inputs"][key] for part in parts])
                np.testing.assert_array_equal(joined, batch["inputs"][key])
    resumed = next(pipe.train_batches(dataset, 64, seed=5, shard=Shard(), start_step=4))
    np.testing.assert_array_equal(resumed["inputs"]["nodes"], first[4]["inputs"]["nodes"])
    np.testing.assert_array_equal(resumed["targets"], first[4]["targets"])
    # JAX: one process feeding 2 devices packs alike (u = 16 on 1, 2 or 4 devices).
    jax_like = next(pipe.train_batches(dataset, 64, seed=5, shard=Shard(0, 1, 2)))
    np.testing.assert_array_equal(jax_like["inputs"]["nodes"], first[0]["inputs"]["nodes"])


def test_each_epoch_trains_on_every_graph_once(dataset):
    pipe = pipeline.Pipeline()
    split = dataset["train"]
    stream = pipe.train_batches(dataset, 8, seed=1, shard=Shard())
    seen = []
    while len(seen) < 3 * len(split):
        seen += graphs_of(next(stream))
    expected = sorted(split_records(split))
    for epoch in range(2):  # packs never straddle epochs
        assert sorted(seen[epoch * len(split) : (epoch + 1) * len(split)]) == expected


def test_a_pack_that_cannot_take_the_next_graph_closes(dataset):
    """Packs fill to their budgets: a pack closes only when the next graph would not fit."""
    split = dataset["train"]
    shape = pipeline.pack_shape(2, dataset.largest)
    order = np.arange(len(split))
    bounds = pipeline.pack_bounds(split, order, shape)
    for lo, hi in zip(bounds[:-2], bounds[1:-1]):
        nodes = split.num_nodes[lo : hi + 1].sum()
        edges = split.num_edges[lo : hi + 1].sum()
        assert hi - lo == 2 or nodes > shape.nodes - 1 or edges > shape.edges


def test_missing_data_names_the_prepare_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="algoperf prepare ogbg --data_dir DIR"):
        pipeline.Pipeline().load(str(tmp_path))


def test_fake_batch_has_the_layout():
    batch = pipeline.Pipeline().fake_batch(32, seed=2)
    assert batch["inputs"]["nodes"].shape[0] == 2  # 32 graphs in packs of 16
    check_layout(batch, pipeline.PackShape(16, batch["inputs"]["nodes"].shape[1],
                                           batch["inputs"]["edges"].shape[1]))  # fmt: skip


# --- the metric ------------------------------------------------------------------------------


def test_mean_average_precision_matches_scikit_learn():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(0)
    for trial in range(60):
        n, tasks = int(rng.integers(2, 80)), int(rng.integers(1, 6))
        logits = rng.normal(size=(n, tasks)) * 3
        if trial % 3 == 0:
            logits = np.round(logits)  # ties: one threshold each, as scikit-learn
        targets = (rng.random((n, tasks)) < rng.random(tasks)).astype(np.float32)
        weights = (rng.random((n, tasks)) < 0.7).astype(np.float32)
        weights[:, 0] = 0 if trial % 4 == 0 else weights[:, 0]  # a task without labels
        expected = []
        for t in range(tasks):
            mask = weights[:, t] > 0
            labels = targets[mask, t]
            if 0 < labels.sum() < len(labels):
                expected.append(average_precision_score(labels, 1 / (1 + np.exp(-logits[mask, t]))))
        got = mean_average_precision(logits, targets, weights)
        if expected:
            assert got == pytest.approx(np.mean(expected), abs=1e-12)
        else:
            assert np.isnan(got)
    assert average_precision(np.asarray([0.9, 0.1]), np.asarray([1.0, 0.0])) == 1.0


def test_tasks_without_both_classes_are_left_out():
    targets = np.asarray([[1, 0, 1], [0, 0, 1], [1, 0, 1]], np.float32)
    weights = np.ones_like(targets)
    logits = np.asarray([[2.0, 1, 1], [-1, 1, 1], [0.5, 1, 1]])
    # Only task 0 has both classes; its AP is 1 (positives ranked first).
    assert mean_average_precision(logits, targets, weights) == 1.0
    weights[0, 0] = 0  # unlabelled entries are ignored, not counted as negatives
    assert mean_average_precision(logits, targets, weights) == 1.0


def test_the_last_eval_batch_is_a_power_of_two_of_packs_not_a_full_batch():
    assert pipeline.last_batch_packs(3, 2048, 1) == 4
    assert pipeline.last_batch_packs(3, 2048, 2) == 4
    assert pipeline.last_batch_packs(5, 2048, 2) == 8
    assert pipeline.last_batch_packs(1500, 2048, 8) == 2048
    assert pipeline.last_batch_packs(3000, 2048, 8) == 2048  # a full batch
    assert pipeline.last_batch_packs(1, 6, 6) == 6  # never more than a full batch
