"""ogbg-molpcba as packed graph batches with static shapes, without TensorFlow or jraph.

Prepared layout (what `python -m algoperf.workloads.ogbg.prepare` writes; each split is
memory-mapped):

  <data_dir>/ogbg_molpcba/<split>/   split = train, validation, test
    node_feat.npy    int16 [nodes, 9]      OGB's atom features
    edge_feat.npy    int16 [bonds, 3]      OGB's bond features, one row per bond
    edge_index.npy   int32 [bonds, 2]      the bond's two atoms, indexed within the graph
    node_offsets.npy int64 [graphs + 1]    graph g's atoms are rows node_offsets[g]:[g + 1]
    edge_offsets.npy int64 [graphs + 1]
    labels.npy       int8  [graphs, 128]   1, 0, or -1 where the task has no label
    split.json       counts; written last, so a split without it is incomplete

Batches (docs/workloads.md, "ogbg"). Graphs are packed greedily, in order, into *packs* of at most
u real graphs with fixed budgets: u = gcd(B / D, 16) for a global batch of B graphs on D devices
(16 whenever 16 divides B / D, so packs are the same on any number of devices), 26·u + 1 node
slots and 56·u directed-edge slots (raised to fit the dataset's largest graph), and one padding
graph slot. A graph that does not fit a pack's remaining budget starts the next pack. A global
batch is B / u consecutive packs of the train stream; rank r reads its rows (packs) only. So a
step trains on at most B graphs: fewer where packs close early on their node or edge budget
(upstream's per-device dynamic batching does the same with budgets of 26·b + 1 nodes, 56·b edges
and b + 1 graphs per device). Both frameworks get the same numpy batches.

- train: each epoch a permutation of the graphs seeded by (seed, epoch), packed; the packs of all
  epochs form one stream, and step s takes packs [s·P, (s + 1)·P) of it (P = B / u), so a resumed
  trial continues it exactly.
- eval: the split (or the eval_train subset) packed in order; global batches of P packs; the last
  one holds D·2^k packs (the fewest that hold what is left, `last_batch_packs`), filled with
  empty packs; every graph counts exactly once on any number of ranks.
- edges: each bond becomes two directed edges (both directions), as upstream does.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from collections.abc import Iterator, Mapping

import numpy as np

from algoperf.data import indices as index_rules
from algoperf.data.packing import greedy_pack, ragged_positions
from algoperf.data.pipeline import InputPipeline, PipelineOptions, check_split
from algoperf.data.sharding import Shard

DATASET_DIR = "ogbg_molpcba"
SPLITS = ("train", "validation", "test")
EXPECTED_COUNTS = {"train": 350_343, "validation": 43_793, "test": 43_793}
NUM_TASKS = 128
NODE_FEATURES = 9
EDGE_FEATURES = 3
NODES_PER_GRAPH = 26
"""Node budget per graph slot of a pack (upstream's 26·b + 1 per device)."""
EDGES_PER_GRAPH = 56
"""Directed-edge budget per graph slot (upstream's 56·b per device)."""
ARRAYS = ("node_feat", "edge_feat", "edge_index", "node_offsets", "edge_offsets", "labels")
SPLIT_FILE = "split.json"
PREPARE_COMMAND = "algoperf prepare ogbg --data_dir DIR"


@dataclasses.dataclass(frozen=True)
class GraphSplit:
    """One split's graphs (memory-mapped arrays, see the module docstring)."""

    node_feat: np.ndarray
    edge_feat: np.ndarray
    edge_index: np.ndarray
    node_offsets: np.ndarray
    edge_offsets: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_nodes(self) -> np.ndarray:
        return np.diff(self.node_offsets)

    @property
    def num_edges(self) -> np.ndarray:
        """Directed edges per graph (two per bond)."""
        return 2 * np.diff(self.edge_offsets)


@dataclasses.dataclass(frozen=True)
class PackShape:
    """The static shape of a pack."""

    graphs: int
    """Real graph slots u (the pack has u + 1 slots: the last one is the padding graph)."""
    nodes: int
    """Node slots N (the last one is always padding)."""
    edges: int
    """Directed-edge slots E."""


def pack_graphs(global_batch_size: int, shard: Shard, max_graphs: int) -> int:
    """u: the real graphs per pack for a global batch on `shard.total_devices` devices."""
    devices = shard.total_devices
    if global_batch_size % devices:
        raise ValueError(
            f"the batch size {global_batch_size} is not divisible by the {devices} devices; "
            "choose a multiple of the device count."
        )
    return math.gcd(global_batch_size // devices, max_graphs)


def pack_shape(graphs: int, largest: tuple[int, int]) -> PackShape:
    """Budgets of a pack of `graphs` real graphs, raised to fit the largest graph
    (`largest` = its nodes and directed edges) so that every graph fits an empty pack."""
    nodes = max(NODES_PER_GRAPH * graphs, largest[0]) + 1
    edges = max(EDGES_PER_GRAPH * graphs, largest[1])
    return PackShape(graphs=graphs, nodes=nodes, edges=edges)


def last_batch_packs(remaining: int, packs_per_batch: int, devices: int) -> int:
    """Packs in an eval batch when `remaining` packs of the split are left: a full batch, or
    for the split's last batch the smallest of `devices`·2^k that holds them (at most a full
    batch). A last batch padded to the full 32,768 graphs would be mostly empty packs; buckets
    of powers of two keep that waste under 2x while giving the compiled eval only a few
    shapes, the same ones for every split and every eval."""
    if remaining >= packs_per_batch:
        return packs_per_batch
    size = devices
    while size < remaining:
        size *= 2
    return min(size, packs_per_batch)


def pack_bounds(split: GraphSplit, order: np.ndarray, shape: PackShape) -> np.ndarray:
    """Boundaries (into `order`) of the greedy packs of the graphs `order`."""
    sizes = np.stack([split.num_nodes[order], split.num_edges[order]], axis=1)
    return greedy_pack(sizes, (shape.nodes - 1, shape.edges), max_items=shape.graphs)


def assemble(split: GraphSplit, packs: list[np.ndarray], shape: PackShape) -> dict[str, object]:
    """The batch of `packs` (each an array of graph ids, in slot order; an empty array is an
    empty pack), in the batch layout the models take (docs/workloads.md, "ogbg")."""
    num_packs, slots = len(packs), shape.graphs + 1
    ids = np.concatenate([np.asarray(p, np.int64) for p in packs]) if packs else np.zeros(0, int)
    counts = np.asarray([len(p) for p in packs], np.int64)
    pack_of = np.repeat(np.arange(num_packs), counts)
    slot_of = ragged_positions(counts)
    n_nodes = split.num_nodes[ids]
    n_bonds = np.diff(split.edge_offsets)[ids]
    # Each graph's first node and first edge within its pack.
    node_base = _within_pack_starts(n_nodes, counts)
    edge_base = _within_pack_starts(2 * n_bonds, counts)

    nodes = np.zeros((num_packs * shape.nodes, NODE_FEATURES), np.float32)
    node_graph = np.full(num_packs * shape.nodes, shape.graphs, np.int32)
    node_src = np.repeat(split.node_offsets[ids], n_nodes) + ragged_positions(n_nodes)
    node_dst = np.repeat(pack_of * shape.nodes + node_base, n_nodes) + ragged_positions(n_nodes)
    nodes[node_dst] = split.node_feat[node_src]
    node_graph[node_dst] = np.repeat(slot_of, n_nodes)

    edges = np.zeros((num_packs * shape.edges, EDGE_FEATURES), np.float32)
    padding_node = shape.nodes - 1
    senders = np.full(num_packs * shape.edges, padding_node, np.int32)
    receivers = np.full(num_packs * shape.edges, padding_node, np.int32)
    bond = ragged_positions(n_bonds)
    bond_src = np.repeat(split.edge_offsets[ids], n_bonds) + bond
    # Bond k of a graph is its edges k (forward) and n_bonds + k (reverse).
    forward = np.repeat(pack_of * shape.edges + edge_base, n_bonds) + bond
    reverse = forward + np.repeat(n_bonds, n_bonds)
    ends = split.edge_index[bond_src].astype(np.int32) + np.repeat(node_base, n_bonds)[:, None]
    features = split.edge_feat[bond_src]
    for dst, (a, b) in ((forward, (0, 1)), (reverse, (1, 0))):
        edges[dst] = features
        senders[dst] = ends[:, a]
        receivers[dst] = ends[:, b]

    n_node = np.zeros((num_packs, slots), np.int32)
    n_edge = np.zeros((num_packs, slots), np.int32)
    n_node[pack_of, slot_of] = n_nodes
    n_edge[pack_of, slot_of] = 2 * n_bonds
    n_node[:, -1] = shape.nodes - n_node[:, :-1].sum(axis=1)
    n_edge[:, -1] = shape.edges - n_edge[:, :-1].sum(axis=1)

    labels = np.full((num_packs, slots, NUM_TASKS), -1, np.int8)
    labels[pack_of, slot_of] = split.labels[ids]
    return {
        "inputs": {
            "nodes": nodes.reshape(num_packs, shape.nodes, NODE_FEATURES),
            "edges": edges.reshape(num_packs, shape.edges, EDGE_FEATURES),
            "senders": senders.reshape(num_packs, shape.edges),
            "receivers": receivers.reshape(num_packs, shape.edges),
            "node_graph": node_graph.reshape(num_packs, shape.nodes),
            "n_node": n_node,
            "n_edge": n_edge,
        },
        "targets": (labels == 1).astype(np.float32),
        "weights": (labels >= 0).astype(np.float32),
    }


def _within_pack_starts(sizes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Each item's offset within its pack, for items grouped by pack (`counts` per pack)."""
    running = np.cumsum(sizes) - sizes
    pack_start = np.repeat(np.cumsum(counts) - counts, counts)
    first_of_pack = running[pack_start] if len(sizes) else running
    return running - first_of_pack


# --- loading ---------------------------------------------------------------------------------
def find_root(data_dir: str | os.PathLike) -> pathlib.Path:
    """The prepared dataset folder: `<data_dir>/ogbg_molpcba`, or `data_dir` itself."""
    base = pathlib.Path(data_dir).expanduser()
    for root in (base / DATASET_DIR, base):
        if (root / "train" / SPLIT_FILE).exists():
            return root
    raise FileNotFoundError(
        f"ogbg-molpcba is not prepared under {base} (no {DATASET_DIR}/train/{SPLIT_FILE}); "
        f"run `{PREPARE_COMMAND}` (it downloads OGB's release, or reads it from --archive_dir)."
    )


def load_split(folder: pathlib.Path) -> GraphSplit:
    """A prepared split, memory-mapped.

    Raises:
      FileNotFoundError: the split is missing or incomplete.
      ValueError: its arrays disagree with each other.
    """
    if not (folder / SPLIT_FILE).exists():
        raise FileNotFoundError(
            f"{folder} is missing or incomplete (no {SPLIT_FILE}); rerun `{PREPARE_COMMAND}`."
        )
    arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
    split = GraphSplit(**arrays)
    graphs = len(split.labels)
    checks = (
        split.node_offsets.shape == (graphs + 1,) and split.edge_offsets.shape == (graphs + 1,),
        split.node_feat.shape == (int(split.node_offsets[-1]), NODE_FEATURES),
        split.edge_feat.shape == (int(split.edge_offsets[-1]), EDGE_FEATURES),
        split.edge_index.shape == (int(split.edge_offsets[-1]), 2),
        split.labels.shape == (graphs, NUM_TASKS),
    )
    if not all(checks):
        raise ValueError(f"{folder}: its arrays disagree in size; rerun `{PREPARE_COMMAND}`.")
    # The offsets are small and read on every batch: keep them in memory.
    return dataclasses.replace(
        split,
        node_offsets=np.asarray(split.node_offsets),
        edge_offsets=np.asarray(split.edge_offsets),
    )


@dataclasses.dataclass(frozen=True)
class Dataset:
    splits: Mapping[str, GraphSplit]
    largest: tuple[int, int]
    """The most nodes and directed edges of any graph in any split (the packs' minimum)."""

    def __getitem__(self, split: str) -> GraphSplit:
        return self.splits[split]


def dataset_of(splits: Mapping[str, GraphSplit]) -> Dataset:
    largest = (
        max(int(s.num_nodes.max(initial=0)) for s in splits.values()),
        max(int(s.num_edges.max(initial=0)) for s in splits.values()),
    )
    return Dataset(splits=dict(splits), largest=largest)


# --- the pipeline ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class Options(PipelineOptions):
    max_graphs_per_pack: int = 16
    """The most real graphs in one pack (u is the gcd of this and the per-device batch)."""


class Pipeline(InputPipeline):
    """ogbg-molpcba's prepared splits as packed graph batches (see the module docstring)."""

    Options = Options

    def load(self, data_dir: str) -> Dataset:
        root = find_root(data_dir)
        return dataset_of({name: load_split(root / name) for name in SPLITS})

    def _shape(self, dataset: Dataset, global_batch_size: int, shard: Shard) -> PackShape:
        graphs = pack_graphs(global_batch_size, shard, self.options.max_graphs_per_pack)
        return pack_shape(graphs, dataset.largest)

    def train_batches(
        self,
        dataset: Dataset,
        global_batch_size: int,
        *,
        seed: int,
        shard: Shard,
        start_step: int = 0,
    ) -> Iterator[dict]:
        split = dataset["train"]
        shape = self._shape(dataset, global_batch_size, shard)
        packs_per_batch = global_batch_size // shape.graphs
        rows = shard.rows(packs_per_batch)
        stream = _train_packs(split, shape, seed, start=start_step * packs_per_batch)
        while True:
            packs = [next(stream) for _ in range(packs_per_batch)]
            yield assemble(split, packs[rows], shape)

    def eval_batches(
        self,
        dataset: Dataset,
        split: str,
        global_batch_size: int,
        *,
        seed: int,
        shard: Shard,
        num_eval_train_examples: int,
    ) -> Iterator[dict]:
        check_split(split)
        graphs = dataset["train" if split == "eval_train" else split]
        if split == "eval_train":
            order = index_rules.eval_train_indices(len(graphs), num_eval_train_examples, seed)
        else:
            order = np.arange(len(graphs))
        shape = self._shape(dataset, global_batch_size, shard)
        bounds = pack_bounds(graphs, order, shape)
        num_packs, packs_per_batch = len(bounds) - 1, global_batch_size // shape.graphs
        empty = np.zeros(0, np.int64)
        for start in range(0, num_packs, packs_per_batch):
            size = last_batch_packs(num_packs - start, packs_per_batch, shard.total_devices)
            pack_indices = np.arange(start, start + size)[shard.rows(size)]
            packs = [
                order[bounds[p] : bounds[p + 1]] if p < num_packs else empty
                for p in pack_indices.tolist()
            ]
            yield assemble(graphs, packs, shape)

    def fake_batch(self, batch_size: int, *, seed: int = 0) -> dict:
        """Random molecules-like graphs (1-30 atoms, ~1.1 bonds per atom, features of OGB's
        ranges, some labels missing), packed for a global batch of `batch_size` graphs."""
        split = random_split(2 * batch_size, seed)
        dataset = dataset_of({"train": split})
        shape = self._shape(dataset, batch_size, Shard())
        bounds = pack_bounds(split, np.arange(len(split)), shape)
        packs = [np.arange(bounds[p], bounds[p + 1]) for p in range(len(bounds) - 1)]
        return assemble(split, packs[: batch_size // shape.graphs], shape)


def fake_batch(batch_size: int, *, layout: str = "NCHW", seed: int = 0) -> dict:
    """`Pipeline.fake_batch` (the module-level form the benchmarks call; no image layout)."""
    del layout
    return Pipeline().fake_batch(batch_size, seed=seed)


def _train_packs(split: GraphSplit, shape: PackShape, seed: int, start: int) -> Iterator:
    """The train stream's packs (graph-id arrays) from pack `start` on (infinite)."""
    epoch = 0
    while True:
        order = index_rules.epoch_order(len(split), seed, epoch)
        bounds = pack_bounds(split, order, shape)
        num_packs = len(bounds) - 1
        if start >= num_packs:  # resuming past this epoch: skip it whole
            start -= num_packs
            epoch += 1
            continue
        for p in range(start, num_packs):
            yield order[bounds[p] : bounds[p + 1]]
        start = 0
        epoch += 1


def random_split(num_graphs: int, seed: int) -> GraphSplit:
    """A split of random graphs with OGB's feature ranges (tests and fake batches)."""
    rng = np.random.default_rng(seed)
    n_nodes = rng.integers(1, 31, num_graphs)
    edge_index, n_bonds = [], []
    for n in n_nodes.tolist():
        # A chain (a molecule's backbone) plus a few ring-closing bonds.
        bonds = [(i, i + 1) for i in range(n - 1)]
        for _ in range(int(rng.integers(0, 3)) if n > 3 else 0):
            a, b = sorted(rng.choice(n, 2, replace=False).tolist())
            if b - a > 1:
                bonds.append((a, b))
        edge_index += bonds
        n_bonds.append(len(bonds))
    total_nodes, total_bonds = int(n_nodes.sum()), len(edge_index)
    labels = rng.integers(0, 2, (num_graphs, NUM_TASKS)).astype(np.int8)
    labels[rng.random(labels.shape) < 0.3] = -1
    return GraphSplit(
        node_feat=rng.integers(0, 10, (total_nodes, NODE_FEATURES)).astype(np.int16),
        edge_feat=rng.integers(0, 4, (total_bonds, EDGE_FEATURES)).astype(np.int16),
        edge_index=np.asarray(edge_index, np.int32).reshape(-1, 2),
        node_offsets=np.r_[0, np.cumsum(n_nodes)].astype(np.int64),
        edge_offsets=np.r_[0, np.cumsum(n_bonds)].astype(np.int64),
        labels=labels,
    )


def write_split(folder: pathlib.Path, split: GraphSplit) -> None:
    """Write a split in the prepared layout, atomically: into a temporary sibling folder that is
    renamed into place once complete (`split.json` last)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    tmp.mkdir()
    for name in ARRAYS:
        np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(split, name)))
    counts = {
        "graphs": len(split),
        "nodes": int(split.node_offsets[-1]),
        "bonds": int(split.edge_offsets[-1]),
    }
    (tmp / SPLIT_FILE).write_text(json.dumps(counts, indent=2) + "\n")
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    os.replace(tmp, folder)
