"""ogbg in PyTorch: the graph network on packed molecule graphs (docs/workloads.md, "ogbg").

A batch holds U packs of static size (N nodes, E edges, G graph slots, the last slot the padding
graph; the pack layout is docs/data.md's). The packs are flattened into one graph of U*N nodes and
U*G graph slots, with each pack's local indices offset by its position, so every gather and
segment sum has a static shape and torch.compile compiles the model once.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from algoperf import spec
from algoperf.torch.init import lecun_init_
from algoperf.torch.workload import TorchWorkload
from algoperf.workloads.ogbg import metrics as ogbg_metrics

LAYER_NORM_EPS = 1e-6
NUM_TASKS = 128
ACTIVATIONS = {
    "relu": F.relu,
    "gelu": functools.partial(F.gelu, approximate="tanh"),
    "silu": F.silu,
}


def activation_fn(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown ogbg activation {name!r}; choose one of {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[name]


class MLP(nn.Module):
    """For each hidden dim: Linear -> LayerNorm -> activation -> dropout (no residual)."""

    def __init__(self, in_dim: int, hidden_dims: tuple[int, ...], activation: str) -> None:
        super().__init__()
        dims = (in_dim, *hidden_dims)
        self.dense = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.layer_norm = nn.ModuleList(
            nn.LayerNorm(dim, eps=LAYER_NORM_EPS) for dim in hidden_dims
        )
        self.activation = activation_fn(activation)

    def forward(self, parts: list[tuple[torch.Tensor, torch.Tensor | None]], dropout_rate: float):
        """The MLP of the concatenation of `parts`' rows, each part `(values, index)` taking
        rows `values[index]` (all of `values` for None). The first Linear of a concatenation is
        the sum of its column blocks applied to each part, so a gathered part is projected
        before the gather: on its own rows (nodes, graphs) rather than on the gathered ones
        (edges, nodes), which takes ~40% of the GEMM work out of a step. The same parameters,
        the same function as Linear(concat), up to float rounding."""
        weight, x, column, i = self.dense[0].weight, None, 0, 0
        while i < len(parts):
            values, index = parts[i]
            if index is None:  # a run of plain parts: one GEMM of their concatenation
                run = [values]
                while i + len(run) < len(parts) and parts[i + len(run)][1] is None:
                    run.append(parts[i + len(run)][0])
                width = sum(part.shape[-1] for part in run)
                block = F.linear(torch.cat(run, -1) if len(run) > 1 else run[0],
                                 weight[:, column : column + width])  # fmt: skip
                blocks, column, i = [block], column + width, i + len(run)
            else:  # gathers of one tensor (senders, receivers): one GEMM for their blocks
                indices = [index]
                while (i + len(indices) < len(parts) and parts[i + len(indices)][0] is values
                       and parts[i + len(indices)][1] is not None):  # fmt: skip
                    indices.append(parts[i + len(indices)][1])
                width, out = values.shape[-1], weight.shape[0]
                stacked = torch.cat(
                    [weight[:, column + k * width : column + (k + 1) * width]
                     for k in range(len(indices))], 0,
                )  # fmt: skip
                projected = F.linear(values, stacked).split(out, dim=-1)
                blocks = [rows[idx] for rows, idx in zip(projected, indices)]
                column, i = column + width * len(indices), i + len(indices)
            for block in blocks:
                x = block if x is None else x + block
        for position, (dense, layer_norm) in enumerate(zip(self.dense, self.layer_norm)):
            x = x + dense.bias if position == 0 else dense(x)
            x = self.activation(layer_norm(x))
            if dropout_rate:
                x = F.dropout(x, dropout_rate, training=self.training)
        return x


def segment_sum(values: torch.Tensor, segment_ids: torch.Tensor, num_segments: int):
    """Σ of `values` rows per segment id, [num_segments, F] (static size, empty segments 0)."""
    return values.new_zeros(num_segments, values.shape[-1]).index_add(0, segment_ids, values)


class GraphIndex:
    """The flattened batch's indices (int64): a pack p's node i is row p*N + i, its slot g is
    row p*G + g; edges belong to their sender's graph."""

    def __init__(self, graph: dict[str, torch.Tensor]) -> None:
        packs, nodes_per_pack = graph["node_graph"].shape
        slots_per_pack = graph["n_node"].shape[1]
        device = graph["node_graph"].device
        pack = torch.arange(packs, device=device).unsqueeze(1)
        self.senders = (graph["senders"].long() + pack * nodes_per_pack).reshape(-1)
        self.receivers = (graph["receivers"].long() + pack * nodes_per_pack).reshape(-1)
        self.node_graph = (graph["node_graph"].long() + pack * slots_per_pack).reshape(-1)
        self.edge_graph = self.node_graph[self.senders]
        self.num_nodes = packs * nodes_per_pack
        self.num_graphs = packs * slots_per_pack


class MessagePassingStep(nn.Module):
    """One graph-network step: edges, then nodes, then globals, each by its own MLP over the
    concatenation of its own features and what it reads from the others."""

    def __init__(
        self,
        node_dim: int,
        edge_dim: int,
        global_dim: int,
        hidden_dims: tuple[int, ...],
        activation: str,
    ) -> None:
        super().__init__()
        out_dim = hidden_dims[-1]
        self.edge_mlp = MLP(edge_dim + 2 * node_dim + global_dim, hidden_dims, activation)
        self.node_mlp = MLP(node_dim + 2 * out_dim + global_dim, hidden_dims, activation)
        self.global_mlp = MLP(2 * out_dim + global_dim, hidden_dims, activation)

    def forward(self, nodes, edges, globals_, index: GraphIndex, dropout_rate: float):
        edge_parts = [
            (edges, None),
            (nodes, index.senders),
            (nodes, index.receivers),
            (globals_, index.edge_graph),
        ]
        edges = self.edge_mlp(edge_parts, dropout_rate)
        sent = segment_sum(edges, index.senders, index.num_nodes)
        received = segment_sum(edges, index.receivers, index.num_nodes)
        node_parts = [(nodes, None), (sent, None), (received, None), (globals_, index.node_graph)]
        nodes = self.node_mlp(node_parts, dropout_rate)
        graph_nodes = segment_sum(nodes, index.node_graph, index.num_graphs)
        graph_edges = segment_sum(edges, index.edge_graph, index.num_graphs)
        globals_ = self.global_mlp(
            [(graph_nodes, None), (graph_edges, None), (globals_, None)], dropout_rate
        )
        return nodes, edges, globals_


class GraphNetwork(nn.Module):
    """Node and edge encoders (Linear, no activation), message-passing steps without weight
    sharing, and a Linear decoder of the final globals into one logit per task. Globals start
    at zero with `num_outputs` features. Init: lecun-normal weights, zero biases, LN 1/0."""

    def __init__(
        self,
        latent_dim: int = 256,
        hidden_dims: tuple[int, ...] = (256,),
        num_message_passing_steps: int = 5,
        activation: str = "relu",
        num_outputs: int = NUM_TASKS,
        node_features: int = 9,
        edge_features: int = 3,
    ) -> None:
        super().__init__()
        hidden_dims = tuple(hidden_dims)
        if not hidden_dims or num_message_passing_steps < 1:
            raise ValueError("ogbg GraphNetwork: give hidden_dims and >= 1 message-passing step.")
        activation_fn(activation)  # a clear error now, not at the first forward
        self.num_outputs = num_outputs
        # "encoder", not "embed": these are linear maps of features, typed WEIGHT as upstream's.
        self.node_encoder = nn.Linear(node_features, latent_dim)
        self.edge_encoder = nn.Linear(edge_features, latent_dim)
        steps = []
        dims = (latent_dim, latent_dim, num_outputs)
        for _ in range(num_message_passing_steps):
            steps.append(MessagePassingStep(*dims, hidden_dims, activation))
            dims = (hidden_dims[-1],) * 3
        self.message_passing = nn.ModuleList(steps)
        self.decoder = nn.Linear(hidden_dims[-1], num_outputs)
        lecun_init_(self)  # LayerNorm keeps torch's 1/0

    def forward(self, graph: dict[str, torch.Tensor], dropout_rate: float = 0.0) -> torch.Tensor:
        """`graph`: the batch's `inputs` (nodes [U,N,9], edges [U,E,3], senders, receivers
        [U,E], node_graph [U,N], n_node [U,G]); returns logits [U, G, num_outputs]."""
        packs, slots_per_pack = graph["n_node"].shape
        index = GraphIndex(graph)
        nodes = self.node_encoder(graph["nodes"].reshape(index.num_nodes, -1))
        edges = self.edge_encoder(graph["edges"].reshape(index.senders.shape[0], -1))
        globals_ = nodes.new_zeros(index.num_graphs, self.num_outputs)
        for step in self.message_passing:
            nodes, edges, globals_ = step(nodes, edges, globals_, index, dropout_rate)
        return self.decoder(globals_).reshape(packs, slots_per_pack, self.num_outputs)


# --- loss and eval outputs --------------------------------------------------------------------
def sigmoid_binary_cross_entropy(
    label_batch: torch.Tensor,
    logits_batch: torch.Tensor,
    mask_batch: torch.Tensor | None = None,
    label_smoothing: float | torch.Tensor = 0.0,
) -> dict[str, torch.Tensor]:
    """Per (graph, task) stable sigmoid BCE of labels smoothed to y(1-ls) + ls/num_tasks, masked
    by `mask_batch`; upstream's contract (`summed`, `n_valid_examples` = valid labels,
    `per_example` [..., num_tasks])."""
    num_tasks = logits_batch.shape[-1]
    smoothed = label_batch * (1.0 - label_smoothing) + label_smoothing / num_tasks
    per_example = F.binary_cross_entropy_with_logits(logits_batch, smoothed, reduction="none")
    if mask_batch is not None:
        per_example = per_example * mask_batch
        n_valid = mask_batch.sum()
    else:
        n_valid = per_example.new_full((), float(per_example.numel()))
    return {"summed": per_example.sum(), "n_valid_examples": n_valid, "per_example": per_example}


def real_graph_slots(n_node: torch.Tensor) -> torch.Tensor:
    """[U, G] 1.0 where a slot holds a real graph: not the last (padding) slot, n_node > 0."""
    valid = n_node > 0
    valid[:, -1] = False
    return valid.to(torch.float32)


def graph_eval_outputs(logits, batch) -> dict[str, torch.Tensor]:
    """One eval batch's sums over labelled entries and per-graph rows (workloads/ogbg/metrics.py
    reads them)."""
    targets, weights = batch["targets"], batch["weights"]
    losses = sigmoid_binary_cross_entropy(targets, logits, weights)["per_example"]
    correct = ((logits > 0) == (targets > 0.5)).to(weights.dtype) * weights
    valid = real_graph_slots(batch["inputs"]["n_node"])
    num_tasks = logits.shape[-1]
    return {
        "loss_sum": losses.sum(),
        "num_labels": weights.sum(),
        "correct": correct.sum(),
        "num_examples": valid.sum(),
        "logits": logits.reshape(-1, num_tasks),
        "targets": targets.reshape(-1, num_tasks),
        "weights": weights.reshape(-1, num_tasks),
        "valid": valid.reshape(-1),
    }


class Workload(TorchWorkload):
    """Rows of a batch are packs of graphs; the model's output per row is [G, 128] logits."""

    eval_metrics = ogbg_metrics.METRICS
    output_param_prefixes = ("decoder.",)

    def build_model(self, **model_kwargs) -> nn.Module:
        return GraphNetwork(**model_kwargs)

    def loss_fn(
        self,
        label_batch: spec.Tensor,
        logits_batch: spec.Tensor,
        mask_batch: spec.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, spec.Tensor]:
        return sigmoid_binary_cross_entropy(label_batch, logits_batch, mask_batch, label_smoothing)

    def eval_outputs(self, logits, batch) -> dict[str, torch.Tensor]:
        return graph_eval_outputs(logits, batch)
