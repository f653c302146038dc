"""ogbg's declarations for the registry suite (tests/test_workload_registry.py): a narrow two-step
graph network, and batches of random molecule-like graphs packed as the input pipeline packs them
(varied sizes, an empty slot, a one-atom graph), so a wrong gather, segment or pack offset shows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from algoperf.spec import ParameterType as T
from algoperf.workloads import parity
from algoperf.workloads.ogbg import fixture

NUM_TASKS = 128
NODE_FEATURES, EDGE_FEATURES = 9, 3
GRAPHS_PER_PACK = 3
"""Real graph slots per pack in the test batches (G = GRAPHS_PER_PACK + 1 with the padding slot)."""
NODE_BUDGET = 26 * GRAPHS_PER_PACK + 1
EDGE_BUDGET = 56 * GRAPHS_PER_PACK


def random_graph(rng: np.random.Generator, num_nodes: int, extra_edges: int = 2) -> dict:
    """A connected molecule-like graph: a random tree plus a few ring-closing bonds, each bond
    as two directed edges; integer-valued features (as OGB's categorical atom and bond features);
    labels with about a third missing."""
    bonds = {(int(rng.integers(0, i)), i) for i in range(1, num_nodes)}
    for _ in range(extra_edges if num_nodes > 2 else 0):
        a, b = sorted(int(v) for v in rng.choice(num_nodes, 2, replace=False))
        bonds.add((a, b))
    pairs = np.asarray(sorted(bonds), np.int32).reshape(-1, 2)
    senders = np.concatenate([pairs[:, 0], pairs[:, 1]])
    receivers = np.concatenate([pairs[:, 1], pairs[:, 0]])
    bond_features = rng.integers(0, 4, (len(pairs), EDGE_FEATURES))
    return graph_from_edges(
        rng.integers(0, 6, (num_nodes, NODE_FEATURES)),
        np.concatenate([bond_features, bond_features]),
        senders,
        receivers,
        rng,
    )


def graph_from_edges(nodes, edges, senders, receivers, rng: np.random.Generator) -> dict:
    """One graph's arrays (float32 features, int32 local indices) with random 0/1 labels."""
    return {
        "nodes": np.asarray(nodes, np.float32).reshape(-1, NODE_FEATURES),
        "edges": np.asarray(edges, np.float32).reshape(-1, EDGE_FEATURES),
        "senders": np.asarray(senders, np.int32),
        "receivers": np.asarray(receivers, np.int32),
        "targets": rng.integers(0, 2, NUM_TASKS).astype(np.float32),
        "weights": (rng.random(NUM_TASKS) < 0.7).astype(np.float32),
    }


def pack_graphs(
    packs: Sequence[Sequence[dict]],
    *,
    graphs_per_pack: int = GRAPHS_PER_PACK,
    node_budget: int | None = None,
    edge_budget: int | None = None,
) -> dict:
    """The batch contract (docs/data.md, "ogbg"): pack p holds `packs[p]`'s graphs in slots
    0..k-1, empty slots up to G-2, and the padding graph in slot G-1 owning the remaining nodes
    (node N-1 always among them) and edges (sender = receiver = N-1); padding features 0."""
    node_budget = node_budget or 26 * graphs_per_pack + 1
    edge_budget = edge_budget or 56 * graphs_per_pack
    slots = graphs_per_pack + 1
    rows = len(packs)
    batch = {
        "nodes": np.zeros((rows, node_budget, NODE_FEATURES), np.float32),
        "edges": np.zeros((rows, edge_budget, EDGE_FEATURES), np.float32),
        "senders": np.full((rows, edge_budget), node_budget - 1, np.int32),
        "receivers": np.full((rows, edge_budget), node_budget - 1, np.int32),
        "node_graph": np.full((rows, node_budget), slots - 1, np.int32),
        "n_node": np.zeros((rows, slots), np.int32),
        "n_edge": np.zeros((rows, slots), np.int32),
    }
    targets = np.zeros((rows, slots, NUM_TASKS), np.float32)
    weights = np.zeros((rows, slots, NUM_TASKS), np.float32)
    for row, graphs in enumerate(packs):
        if len(graphs) > graphs_per_pack:
            raise ValueError(f"pack {row}: {len(graphs)} graphs, at most {graphs_per_pack}")
        node_start = edge_start = 0
        for slot, graph in enumerate(graphs):
            n, e = len(graph["nodes"]), len(graph["edges"])
            if node_start + n > node_budget - 1 or edge_start + e > edge_budget:
                raise ValueError(f"pack {row}: graphs over the node or edge budget")
            nodes, edges = slice(node_start, node_start + n), slice(edge_start, edge_start + e)
            batch["nodes"][row, nodes] = graph["nodes"]
            batch["edges"][row, edges] = graph["edges"]
            batch["senders"][row, edges] = graph["senders"] + node_start
            batch["receivers"][row, edges] = graph["receivers"] + node_start
            batch["node_graph"][row, nodes] = slot
            batch["n_node"][row, slot], batch["n_edge"][row, slot] = n, e
            targets[row, slot], weights[row, slot] = graph["targets"], graph["weights"]
            node_start, edge_start = node_start + n, edge_start + e
        batch["n_node"][row, -1] = node_budget - node_start
        batch["n_edge"][row, -1] = edge_budget - edge_start
    return {"inputs": batch, "targets": targets, "weights": weights}


def random_packs(workload, batch_size: int, seed: int) -> dict:
    """`batch_size` packs of GRAPHS_PER_PACK slots: full packs, packs with empty slots, a
    one-atom graph without bonds, graph sizes 1 to 24 atoms."""
    del workload  # the same numpy batch in both frameworks
    rng = np.random.default_rng(seed)
    packs = []
    for row in range(batch_size):
        count = GRAPHS_PER_PACK - row % GRAPHS_PER_PACK  # 3, 2, 1, 3, ...
        sizes = [int(rng.integers(2, 25)) for _ in range(count)]
        if row == 1:
            sizes[-1] = 1
        packs.append([random_graph(rng, size) for size in sizes])
    return pack_graphs(packs)


def randomize_(model, seed: int = 0) -> None:
    """Non-trivial LayerNorm scales and biases and Linear biases (init: LN 1/0, biases 0), so
    the parity checks prove the scale/bias mapping too."""
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.add_(0.2 * torch.randn(module.weight.shape, generator=generator))
            if isinstance(module, nn.LayerNorm | nn.Linear):
                module.bias.add_(0.1 * torch.randn(module.bias.shape, generator=generator))


TINY = {"latent_dim": 8, "hidden_dims": (16, 12), "num_message_passing_steps": 2}
"""Every module type of both full-size models, narrow: encoders, the first step (reading the
latent width) and a later one (reading the hidden width), two-layer MLPs, the decoder. It
overrides every size ogbg_model_size changes, so that variant's tiny model is the base's."""

TESTS = parity.ModelTests(
    model_kwargs=TINY,
    batch_size=4,  # packs
    output_shape=(GRAPHS_PER_PACK + 1, NUM_TASKS),  # per pack: one row of logits per slot
    # Full-size base: 2 encoders + 5 steps x 3 one-layer MLPs + decoder (upstream's categories:
    # the encoders are plain weights).
    param_types={
        T.WEIGHT: 18,
        T.BIAS: 18,
        T.LAYER_NORM_SCALE: 15,
        T.LAYER_NORM_BIAS: 15,
    },
    has_dropout=True,
    randomize=randomize_,
    make_batch=random_packs,
    forward_twins={"ogbg_model_size": "ogbg"},  # the same tiny model (see TINY)
    # Measured on a 2-core x86 CPU, tiny model, 4 packs, randomised LN and biases, the three
    # activations: EVAL and TRAIN logits 1.1e-6 to 2.0e-6 abs at max |logit| 1.7 to 1.9 (6e-7 to
    # 1.0e-6 relative; 2.1e-6 relative with one-layer MLPs of width 16); loss <= 1.2e-7; params
    # after the SGD step <= 6e-8 abs (they move by 4e-3 to 3e-2). Segment sums add in different
    # orders (index_add vs XLA's scatter) and tanh-GELU differs in its last bits; the bounds leave
    # ~5x (logits) and >100x (params) for other CPUs, while a wrong index or weight map is O(1).
    logits_rtol=1e-5,
    step_atol=1e-5,
    write_fixture=fixture.write_fixture,
    fixture_sizes={"validation": fixture.SIZES["validation"], "test": fixture.SIZES["test"]},
    cli_options="model_kwargs={'latent_dim':8,'hidden_dims':[16,12],'num_message_passing_steps':2}",
    cli_metrics=("accuracy", "loss", "mean_average_precision"),
)
