"""ogbg in JAX/flax: the graph network on packed molecule graphs (docs/workloads.md, "ogbg").

The same model as model_torch.py. Module names mirror it (`node_encoder`,
`message_passing_2/edge_mlp/dense_0`, `.../layer_norm_0`, `decoder`) so weights map by name and
parameter types agree.

The dense layers act on the packed arrays [U, N|E|G, F] as they are; only the gathers and
segment sums are per pack, vmapped over the pack axis U (each with a static number of segments,
N or G). Flattening the packs as the torch model does would give the same numbers, but a gather
or scatter over the flattened rows crosses packs, so when U is sharded over a device mesh XLA
would have to gather the whole batch; a vmapped (batched) gather/scatter keeps each pack's
indexing on the device that holds it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from algoperf import spec
from algoperf.jax.layers import dropout
from algoperf.jax.workload import JaxWorkload
from algoperf.workloads.ogbg import metrics as ogbg_metrics

LAYER_NORM_EPS = 1e-6
NUM_TASKS = 128
ACTIVATIONS = {
    "relu": nn.relu,
    "gelu": functools.partial(nn.gelu, approximate=True),  # tanh approximation
    "silu": nn.silu,
}


def activation_fn(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown ogbg activation {name!r}; choose one of {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[name]


def gather(values_UXF, indices_UY):
    """Per pack: values[p, indices[p, y]] -> [U, Y, F]."""
    return jnp.take_along_axis(values_UXF, indices_UY[..., None], axis=1)


def segment_sum(values_UYF, segment_ids_UY, num_segments: int):
    """Per pack: Σ of values rows per segment id -> [U, num_segments, F]."""
    per_pack = functools.partial(jax.ops.segment_sum, num_segments=num_segments)
    return jax.vmap(per_pack)(values_UYF, segment_ids_UY)


class PartsDense(nn.Module):
    """A Dense layer of the concatenation of `parts` (`(values, indices)`, rows
    `gather(values, indices)`, or all of `values` for None), with nn.Dense's parameters
    (`kernel` [in, out], `bias`) and init. A gathered part is projected on its own rows before
    the gather, as in the torch model (~40% less GEMM work; the same function up to rounding)."""

    features: int

    @nn.compact
    def __call__(self, parts):
        width = sum(values.shape[-1] for values, _ in parts)
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (width, self.features), jnp.float32
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        x, column, i = None, 0, 0
        while i < len(parts):
            values, indices = parts[i]
            if indices is None:  # a run of plain parts: one matmul of their concatenation
                run = [values]
                while i + len(run) < len(parts) and parts[i + len(run)][1] is None:
                    run.append(parts[i + len(run)][0])
                run_width = sum(part.shape[-1] for part in run)
                joined = jnp.concatenate(run, -1) if len(run) > 1 else run[0]
                blocks = [joined @ kernel[column : column + run_width]]
                column, i = column + run_width, i + len(run)
            else:  # gathers of one array (senders, receivers): one matmul for their blocks
                gathers = [indices]
                while (i + len(gathers) < len(parts) and parts[i + len(gathers)][0] is values
                       and parts[i + len(gathers)][1] is not None):  # fmt: skip
                    gathers.append(parts[i + len(gathers)][1])
                part_width = values.shape[-1]
                stacked = jnp.concatenate(
                    [kernel[column + k * part_width : column + (k + 1) * part_width]
                     for k in range(len(gathers))], axis=1,
                )  # fmt: skip
                projected = jnp.split(values @ stacked, len(gathers), axis=-1)
                blocks = [gather(rows, idx) for rows, idx in zip(projected, gathers)]
                column, i = column + part_width * len(gathers), i + len(gathers)
            for block in blocks:
                x = block if x is None else x + block
        return x + bias


class MLP(nn.Module):
    """For each hidden dim: Dense -> LayerNorm -> activation -> dropout (no residual); the first
    Dense takes the input as parts (`PartsDense`)."""

    hidden_dims: tuple[int, ...]
    activation: str

    @nn.compact
    def __call__(self, parts, train: bool, dropout_rate):
        act = activation_fn(self.activation)
        x = None
        for i, dim in enumerate(self.hidden_dims):
            if i == 0:
                x = PartsDense(dim, name="dense_0")(parts)
            else:
                x = nn.Dense(
                    dim, kernel_init=nn.initializers.lecun_normal(),
                    bias_init=nn.initializers.zeros, name=f"dense_{i}",
                )(x)  # fmt: skip
            x = nn.LayerNorm(epsilon=LAYER_NORM_EPS, name=f"layer_norm_{i}")(x)
            x = dropout(self, act(x), dropout_rate, train)
        return x


class MessagePassingStep(nn.Module):
    """One graph-network step: edges, then nodes, then globals (see the torch model)."""

    hidden_dims: tuple[int, ...]
    activation: str

    @nn.compact
    def __call__(self, nodes, edges, globals_, graph, train: bool, dropout_rate):
        num_nodes, num_slots = nodes.shape[1], globals_.shape[1]
        senders, receivers = graph["senders"], graph["receivers"]
        node_graph = graph["node_graph"]
        edge_graph = gather(node_graph[..., None], senders)[..., 0]

        def mlp(name):
            return MLP(self.hidden_dims, self.activation, name=name)

        edge_parts = [(edges, None), (nodes, senders), (nodes, receivers), (globals_, edge_graph)]
        edges = mlp("edge_mlp")(edge_parts, train, dropout_rate)
        sent = segment_sum(edges, senders, num_nodes)
        received = segment_sum(edges, receivers, num_nodes)
        node_parts = [(nodes, None), (sent, None), (received, None), (globals_, node_graph)]
        nodes = mlp("node_mlp")(node_parts, train, dropout_rate)
        graph_nodes = segment_sum(nodes, node_graph, num_slots)
        graph_edges = segment_sum(edges, edge_graph, num_slots)
        global_parts = [(graph_nodes, None), (graph_edges, None), (globals_, None)]
        globals_ = mlp("global_mlp")(global_parts, train, dropout_rate)
        return nodes, edges, globals_


class GraphNetwork(nn.Module):
    """Node and edge encoders (Dense, no activation), message-passing steps without weight
    sharing, a Dense decoder of the final globals. Globals start at zero with `num_outputs`
    features. Init: lecun-normal kernels, zero biases, LayerNorm 1/0."""

    latent_dim: int = 256
    hidden_dims: tuple[int, ...] = (256,)
    num_message_passing_steps: int = 5
    activation: str = "relu"
    num_outputs: int = NUM_TASKS

    @nn.compact
    def __call__(self, graph, train: bool = False, dropout_rate=0.0):
        """`graph`: the batch's `inputs` (nodes [U,N,9], edges [U,E,3], senders, receivers
        [U,E], node_graph [U,N], n_node [U,G]); returns logits [U, G, num_outputs]."""
        hidden_dims = tuple(self.hidden_dims)
        if not hidden_dims or self.num_message_passing_steps < 1:
            raise ValueError("ogbg GraphNetwork: give hidden_dims and >= 1 message-passing step.")

        def dense(features, name):
            return nn.Dense(
                features, kernel_init=nn.initializers.lecun_normal(),
                bias_init=nn.initializers.zeros, name=name,
            )  # fmt: skip

        packs, num_slots = graph["n_node"].shape
        nodes = dense(self.latent_dim, "node_encoder")(graph["nodes"])
        edges = dense(self.latent_dim, "edge_encoder")(graph["edges"])
        globals_ = jnp.zeros((packs, num_slots, self.num_outputs), nodes.dtype)
        for step in range(self.num_message_passing_steps):
            nodes, edges, globals_ = MessagePassingStep(
                hidden_dims, self.activation, name=f"message_passing_{step}"
            )(nodes, edges, globals_, graph, train, dropout_rate)
        return dense(self.num_outputs, "decoder")(globals_)


# --- loss and eval outputs --------------------------------------------------------------------
def sigmoid_binary_cross_entropy(label_batch, logits_batch, mask_batch=None, label_smoothing=0.0):
    """Per (graph, task) stable sigmoid BCE of labels smoothed to y(1-ls) + ls/num_tasks, masked
    by `mask_batch`; upstream's contract. `label_smoothing` may be traced (no branch on it)."""
    num_tasks = logits_batch.shape[-1]
    smoothed = label_batch * (1.0 - label_smoothing) + label_smoothing / num_tasks
    per_example = optax.sigmoid_binary_cross_entropy(logits_batch, smoothed)
    if mask_batch is not None:
        per_example = per_example * mask_batch
        n_valid = mask_batch.sum()
    else:
        n_valid = jnp.asarray(per_example.size, dtype=per_example.dtype)
    return {"summed": per_example.sum(), "n_valid_examples": n_valid, "per_example": per_example}


def real_graph_slots(n_node):
    """[U, G] 1.0 where a slot holds a real graph: not the last (padding) slot, n_node > 0."""
    not_padding = jnp.arange(n_node.shape[1]) < n_node.shape[1] - 1
    return ((n_node > 0) & not_padding).astype(jnp.float32)


def graph_eval_outputs(logits, batch) -> dict[str, jnp.ndarray]:
    """One eval batch's sums over labelled entries and per-graph rows (workloads/ogbg/metrics.py
    reads them)."""
    targets, weights = batch["targets"], batch["weights"]
    losses = sigmoid_binary_cross_entropy(targets, logits, weights)["per_example"]
    correct = ((logits > 0) == (targets > 0.5)).astype(weights.dtype) * weights
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


class Workload(JaxWorkload):
    """Rows of a batch are packs of graphs; the model's output per row is [G, 128] logits."""

    eval_metrics = ogbg_metrics.METRICS
    output_param_prefixes = ("decoder/",)

    def build_model(self, **model_kwargs) -> nn.Module:
        if "hidden_dims" in model_kwargs:  # a list from --workload_options: flax wants a tuple
            model_kwargs = {**model_kwargs, "hidden_dims": tuple(model_kwargs["hidden_dims"])}
        return GraphNetwork(**model_kwargs)

    def init_inputs(self):
        # One pack of one graph slot plus the padding slot: the parameters do not depend on
        # the budgets.
        return {
            "nodes": jnp.zeros((1, 2, 9), jnp.float32),
            "edges": jnp.zeros((1, 1, 3), jnp.float32),
            "senders": jnp.zeros((1, 1), jnp.int32),
            "receivers": jnp.zeros((1, 1), jnp.int32),
            "node_graph": jnp.zeros((1, 2), jnp.int32),
            "n_node": jnp.ones((1, 2), jnp.int32),
            "n_edge": jnp.ones((1, 2), jnp.int32),
        }

    def loss_fn(
        self,
        label_batch: spec.Tensor,
        logits_batch: spec.Tensor,
        mask_batch: spec.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, spec.Tensor]:
        return sigmoid_binary_cross_entropy(label_batch, logits_batch, mask_batch, label_smoothing)

    def eval_outputs(self, logits, batch) -> dict[str, jnp.ndarray]:
        return graph_eval_outputs(logits, batch)
