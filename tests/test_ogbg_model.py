"""ogbg's graph network (docs/workloads.md, "ogbg"), what is specific to it: real small graphs
(networkx's karate club, Les Misérables and Florentine families) packed as the pipeline packs
them, through both frameworks with the same weights, against a per-graph float64 reference
written from the spec; each graph's logits do not depend on its slot or pack, on padding or on
empty slots; the loss and eval outputs in both frameworks.

Counts and types of every variant, init / forward / loss / backward, the dropout contract and
torch <-> JAX parity on random packs are in the registry suite (tests/test_workload_registry.py,
from workloads/ogbg/testing.py).
"""

from __future__ import annotations

import functools

import jax
import networkx as nx
import numpy as np
import pytest
import torch

from algoperf.workloads import parity
from algoperf.workloads.ogbg import model_jax, model_torch, testing

ACTIVATIONS = ("relu", "gelu", "silu")


def real_graphs(seed: int = 0) -> dict[str, dict]:
    """Name -> one graph's arrays (random integer features and labels, edges both ways)."""
    rng = np.random.default_rng(seed)
    graphs = {}
    for name, graph in (
        ("karate", nx.karate_club_graph()),
        ("les_miserables", nx.les_miserables_graph()),
        ("florentine", nx.florentine_families_graph()),
    ):
        graph = nx.convert_node_labels_to_integers(graph)
        pairs = np.asarray(list(graph.edges()), np.int32)
        bond_features = rng.integers(0, 4, (len(pairs), testing.EDGE_FEATURES))
        graphs[name] = testing.graph_from_edges(
            rng.integers(0, 6, (graph.number_of_nodes(), testing.NODE_FEATURES)),
            np.concatenate([bond_features, bond_features]),
            np.concatenate([pairs[:, 0], pairs[:, 1]]),
            np.concatenate([pairs[:, 1], pairs[:, 0]]),
            rng,
        )
    graphs["atom"] = testing.graph_from_edges(  # one atom, no bonds
        rng.integers(0, 6, (1, testing.NODE_FEATURES)), np.zeros((0, 3)), [], [], rng
    )
    return graphs


BUDGETS = {"graphs_per_pack": 3, "node_budget": 160, "edge_budget": 720}
"""Room for Les Misérables (77 atoms, 508 directed edges) with the karate club beside it."""
LAYOUT = [["karate", "les_miserables", "florentine"], ["atom"]]
"""Two packs: a full one, and one with empty slots."""


def packed(layout, graphs, **budgets) -> dict:
    return testing.pack_graphs([[graphs[n] for n in pack] for pack in layout], **budgets)


def logits_by_graph(logits, layout) -> dict[str, np.ndarray]:
    """Name -> its [128] logits, by its (pack, slot) in `layout`."""
    found = {}
    for row, pack in enumerate(layout):
        for slot, name in enumerate(pack):
            found[name] = np.asarray(logits[row, slot])
    return found


@functools.cache
def torch_model(activation: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = model_torch.GraphNetwork(**testing.TINY, activation=activation)
    testing.randomize_(model)
    return model.eval()


def torch_logits(activation: str, batch) -> np.ndarray:
    inputs = {k: torch.from_numpy(v) for k, v in batch["inputs"].items()}
    with torch.no_grad():
        return torch_model(activation)(inputs).numpy()


@functools.cache
def jax_apply(activation: str):
    model = model_jax.GraphNetwork(**testing.TINY, activation=activation)
    variables = parity.torch_to_flax(torch_model(activation))
    return jax.jit(lambda inputs: model.apply(variables, inputs, train=False))


def jax_logits(activation: str, batch) -> np.ndarray:
    with jax.default_matmul_precision("highest"):
        return np.asarray(jax_apply(activation)(batch["inputs"]))


# --- a per-graph reference in float64, written from the spec --------------------------------
def _reference_mlp(mlp, x, activation: str):
    for dense, norm in zip(mlp.dense, mlp.layer_norm):
        x = x @ dense.weight.detach().double().numpy().T + dense.bias.detach().double().numpy()
        x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
        x = x * norm.weight.detach().double().numpy() + norm.bias.detach().double().numpy()
        if activation == "relu":
            x = np.maximum(x, 0.0)
        elif activation == "gelu":  # tanh approximation
            x = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
        else:
            x = x / (1 + np.exp(-x))
    return x


def reference_logits(model, graph, activation: str) -> np.ndarray:
    """One graph alone, edge by edge: [128] logits."""

    def linear(layer, x):
        return x @ layer.weight.detach().double().numpy().T + layer.bias.detach().double().numpy()

    senders, receivers = graph["senders"], graph["receivers"]
    nodes = linear(model.node_encoder, graph["nodes"].astype(np.float64))
    edges = linear(model.edge_encoder, graph["edges"].astype(np.float64))
    globals_ = np.zeros(testing.NUM_TASKS)
    for step in model.message_passing:
        per_edge = [edges, nodes[senders], nodes[receivers], np.tile(globals_, (len(edges), 1))]
        edges = _reference_mlp(step.edge_mlp, np.concatenate(per_edge, 1), activation)
        sent, received = (
            np.zeros((len(nodes), edges.shape[1])),
            np.zeros((len(nodes), edges.shape[1])),
        )
        np.add.at(sent, senders, edges)
        np.add.at(received, receivers, edges)
        per_node = [nodes, sent, received, np.tile(globals_, (len(nodes), 1))]
        nodes = _reference_mlp(step.node_mlp, np.concatenate(per_node, 1), activation)
        per_graph = [nodes.sum(0), edges.sum(0), globals_]
        globals_ = _reference_mlp(step.global_mlp, np.concatenate(per_graph)[None], activation)[0]
    return linear(model.decoder, globals_)


# --- tests ----------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_real_graphs_match_the_reference_in_both_frameworks(activation):
    graphs = real_graphs()
    batch = packed(LAYOUT, graphs, **BUDGETS)
    torch_out, jax_out = torch_logits(activation, batch), jax_logits(activation, batch)
    assert torch_out.shape == jax_out.shape == (2, 4, testing.NUM_TASKS)
    scale = np.abs(torch_out).max()
    assert scale > 0.1
    # float32 against float64, sums over up to 508 edges: measured <= 4.3e-7 of max |logit|
    # (JAX against torch <= 8.8e-7); a swapped sender/receiver or a wrong segment is O(1).
    for name, logits in logits_by_graph(torch_out, LAYOUT).items():
        expected = reference_logits(torch_model(activation), graphs[name], activation)
        np.testing.assert_allclose(logits, expected, atol=2e-5 * scale, err_msg=name)
    np.testing.assert_allclose(jax_out, torch_out, atol=1e-5 * scale)


def test_logits_do_not_depend_on_slot_pack_padding_or_empty_slots():
    graphs = real_graphs()
    base = logits_by_graph(torch_logits("relu", packed(LAYOUT, graphs, **BUDGETS)), LAYOUT)
    # Other slots and packs; more graph slots (empty ones), more padding nodes and edges, and
    # padding features that are not 0 (the pipeline writes 0; the model must not read them).
    moved = [["atom", "florentine"], [], ["les_miserables", "karate"]]
    batch = packed(moved, graphs, graphs_per_pack=4, node_budget=200, edge_budget=800)
    rng = np.random.default_rng(1)
    inputs = batch["inputs"]
    padding_nodes = inputs["node_graph"] == 4
    inputs["nodes"][padding_nodes] = rng.normal(size=(padding_nodes.sum(), 9))
    padding_edges = inputs["senders"] == 199
    inputs["edges"][padding_edges] = rng.normal(size=(padding_edges.sum(), 3))
    for framework_logits in (torch_logits, jax_logits):
        other = logits_by_graph(framework_logits("relu", batch), moved)
        for name, logits in base.items():
            np.testing.assert_allclose(other[name], logits, rtol=1e-5, atol=1e-5, err_msg=name)


def _loss_reference(targets, logits, weights, label_smoothing):
    smoothed = targets * (1 - label_smoothing) + label_smoothing / targets.shape[-1]
    x = logits.astype(np.float64)
    per = np.maximum(x, 0) - x * smoothed + np.log1p(np.exp(-np.abs(x)))
    return per * weights


def test_loss_and_eval_outputs_in_both_frameworks():
    batch = testing.random_packs(None, 3, seed=5)
    rng = np.random.default_rng(0)
    # Logits up to ~100: the stable form must not overflow.
    logits = (30 * rng.standard_normal(batch["targets"].shape)).astype(np.float32)
    targets, weights = batch["targets"], batch["weights"]
    torch_batch = jax.tree.map(torch.from_numpy, batch)
    for smoothing in (0.0, 0.1):
        expected = _loss_reference(targets, logits, weights, smoothing)
        for loss_fn, convert in (
            (model_torch.sigmoid_binary_cross_entropy, torch.from_numpy),
            (model_jax.sigmoid_binary_cross_entropy, jax.numpy.asarray),
        ):
            out = loss_fn(convert(targets), convert(logits), convert(weights), smoothing)
            np.testing.assert_allclose(
                np.asarray(out["per_example"]), expected, rtol=1e-5, atol=1e-5
            )
            np.testing.assert_allclose(float(out["summed"]), expected.sum(), rtol=1e-5)
            assert float(out["n_valid_examples"]) == weights.sum()
    torch_out = model_torch.graph_eval_outputs(torch.from_numpy(logits), torch_batch)
    jax_out = model_jax.graph_eval_outputs(jax.numpy.asarray(logits), batch)
    # Packs of 3, 2 and 1 graphs (random_packs): 6 real graphs among 3 x 4 slots.
    valid = np.asarray([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], np.float32)
    correct = ((logits > 0) == (targets > 0.5)) * weights
    expected = {
        "loss_sum": _loss_reference(targets, logits, weights, 0.0).sum(),
        "num_labels": weights.sum(),
        "correct": correct.sum(),
        "num_examples": 6,
        "logits": logits.reshape(12, 128),
        "targets": targets.reshape(12, 128),
        "weights": weights.reshape(12, 128),
        "valid": valid.reshape(12),
    }
    for out in (torch_out, jax_out):
        assert set(out) == set(expected)
        for key, value in expected.items():
            np.testing.assert_allclose(np.asarray(out[key]), value, rtol=1e-5, err_msg=key)
    assert weights[valid == 0].sum() == 0  # empty and padding slots carry no labels


def test_unknown_activation_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown ogbg activation 'tanh'"):
        model_torch.GraphNetwork(activation="tanh")
