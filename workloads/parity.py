"""What the model tests share: `ModelTests` (what a workload's `testing.py` declares for
tests/test_workload_registry.py), the by-name PyTorch -> flax weight copier, and one training
step written for each framework (the same computation), for parity tests.

Torch module paths map to flax paths by joining a numeric part to the one before it
(`layer1.0.conv1` -> `layer1_0/conv1`), as the model files name their flax modules. torch and jax
are imported inside the functions, so reading a workload's declarations needs no framework.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

Leaves = Mapping[str, Mapping[str, Any]]
"""One torch module's flax leaves: {collection: {leaf name: torch tensor}}."""
ModuleRule = Callable[[Any], "Leaves | None"]
"""A workload's extra mapping for a module type the generic copier does not know (e.g. a bare
`nn.Parameter` on a custom module); None: not this rule's module."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelTests:
    """A model workload's declarations for the registry suite (tests/test_workload_registry.py):
    a tiny configuration that keeps every check fast on two CPU cores, its fixture data, and its
    PyTorch -> flax weight map. The full-size parameter counts are in the spec
    (`WorkloadSpec.num_params`)."""

    model_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """The tiny model: overrides of the spec's model_kwargs (the same module code, fewer or
    narrower layers)."""
    workload_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Pipeline options for the tiny configuration (`workloads.load(..., **workload_options)`),
    e.g. a small image size."""
    batch_size: int = 4
    """Rows of the fake batches (BN in TRAIN mode needs a few values per channel)."""
    output_shape: tuple[int, ...] = ()
    """Per-example shape of the model's output (classifiers: (num_classes,))."""
    batch_norm_layers: int = 0
    """BatchNorm layers of the full-size model (0: the model has no BN, so no BN checks)."""
    param_types: Mapping[Any, int] = dataclasses.field(default_factory=dict)
    """`spec.ParameterType` -> count in the base workload's full-size model, in upstream's
    categories (algoperf/param_types.py); both frameworks must give these."""
    has_dropout: bool = False
    """Whether the model takes a dropout rate (then the dropout contract is checked)."""
    label_smoothing: bool = True
    """Whether `loss_fn` uses `label_smoothing` (a regression loss takes and ignores it, as
    upstream's: then smoothing must change nothing)."""
    output_params: tuple[str, ...] = ()
    """Torch names of the output layer's parameters where they are not the model's last weight
    and bias (a tied embedding: `("embed.weight",)`); empty: the last two parameters."""
    zero_output_init: bool = False
    """Whether the output layer starts at zero (then a fresh model's outputs are all 0)."""
    randomize: Callable[[Any], None] | None = None
    """Gives a freshly initialised torch model non-trivial values where its init is degenerate
    (zero heads, unit BN), in place, so parity and dropout checks prove something."""
    torch_to_flax: Callable[..., dict] | None = None
    """The weight map: torch model -> flax variables, taking `convert=` (None: the generic
    `torch_to_flax`; a workload binds its `rules` or `strip_prefix` with functools.partial)."""
    make_batch: Callable[[Any, int, int], Any] | None = None
    """(workload, batch_size, seed) -> the numpy batch of the checks, where the pipeline's
    `fake_batch` would hide a bug (e.g. a non-square image for a transposed token grid)."""
    slow_jax: bool = True
    """Whether its JAX checks compile for seconds (then they are marked slow; mnist's are not)."""
    forward_twins: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Variant -> the workload whose JAX forward it shares (it differs in its init only); the
    suite reuses that compiled program instead of compiling the same one again."""
    logits_rtol: float = 1e-5
    """Parity: max |torch - jax| of the logits over max |logits| (float32, CPU)."""
    step_atol: float = 1e-5
    """Parity: max |torch - jax| of the loss and of every parameter after one SGD step."""
    write_fixture: Callable[[pathlib.Path], pathlib.Path] | None = None
    """Writes small format-exact data files under a folder; returns the --data_dir to pass."""
    fixture_sizes: Mapping[str, int] = dataclasses.field(default_factory=dict)
    """Examples per eval split (`validation`, `test`) in that fixture."""
    cli_options: str = ""
    """`--workload_options` of the CLI run on the fixture (a small model and pipeline)."""
    cli_metrics: tuple[str, ...] = ()
    """Metric names every eval row of that run holds per split (`train/<name>`, ...)."""

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError("ModelTests: batch_size must be positive.")
        if not self.output_shape:
            raise ValueError("ModelTests: give output_shape, e.g. (10,) for 10 classes.")


# --- the by-name copier ---------------------------------------------------------------------
def flax_path(torch_module_name: str, strip_prefix: str = "") -> tuple[str, ...]:
    """`layer2.0.shortcut.conv` -> ("layer2_0", "shortcut", "conv")."""
    if strip_prefix and torch_module_name.startswith(strip_prefix):
        torch_module_name = torch_module_name[len(strip_prefix) :]
    path: list[str] = []
    for part in filter(None, torch_module_name.split(".")):
        if part.isdigit() and path:
            path[-1] = f"{path[-1]}_{part}"
        else:
            path.append(part)
    return tuple(path)


def generic_leaves(module) -> Leaves | None:
    """Linear weight [out, in] -> kernel [in, out]; ConvNd [O, I, *K] -> [*K, I, O];
    BatchNorm weight/bias -> scale/bias and running_mean/var -> batch_stats mean/var;
    LayerNorm weight/bias -> scale/bias. None for other module types."""
    from torch import nn

    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    if isinstance(module, nn.Linear):
        params["kernel"] = module.weight.T
    elif isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        ndim = module.weight.ndim
        params["kernel"] = module.weight.permute(*range(2, ndim), 1, 0)
    elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d):
        params["scale"] = module.weight
        stats = {"mean": module.running_mean, "var": module.running_var}
    elif isinstance(module, nn.LayerNorm):
        params["scale"] = module.weight
    else:
        return None
    if getattr(module, "bias", None) is not None:
        params["bias"] = module.bias
    params = {key: value for key, value in params.items() if value is not None}
    return {"params": params, "batch_stats": stats} if stats else {"params": params}


def to_numpy(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().copy()


def to_shape(tensor) -> tuple[int, ...]:
    """For `torch_to_flax(..., convert=to_shape)`: works on meta-device models (no values)."""
    return tuple(tensor.shape)


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    assert path[-1] not in tree, f"two torch tensors map to {'/'.join(path)}"
    tree[path[-1]] = value


def torch_to_flax(
    model,
    *,
    rules: tuple[ModuleRule, ...] = (),
    strip_prefix: str = "",
    convert: Callable[[Any], Any] = to_numpy,
) -> dict[str, dict]:
    """Flax variables {"params": ..., ["batch_stats": ...]} holding the torch model's values.

    Each module is mapped by the first of `rules` that knows it, else by `generic_leaves`. A
    module whose own parameters are not all mapped raises, so a forgotten tensor cannot pass
    silently.

    Args:
      model: the torch model.
      rules: a workload's extra module rules (`ModelTests.flax_rules`).
      strip_prefix: a torch name prefix the flax model does not have (e.g. `net.`).
      convert: tensor -> leaf (numpy copies; `to_shape` for a shape tree).
    """
    variables: dict[str, dict] = {"params": {}}
    for name, module in model.named_modules():
        found = next((leaves for rule in rules if (leaves := rule(module)) is not None), None)
        if found is None:
            found = generic_leaves(module)
        own = sum(1 for _ in module.parameters(recurse=False))
        mapped = len(found["params"]) if found is not None else 0
        if mapped != own:
            raise TypeError(
                f"no flax mapping for {own - mapped} parameter(s) of {type(module).__name__} at "
                f"{name!r}; give the workload's testing.py a rule (ModelTests.torch_to_flax)"
            )
        path = flax_path(name, strip_prefix)
        for collection, leaves in (found or {}).items():
            for leaf, tensor in leaves.items():
                _set(variables.setdefault(collection, {}), (*path, leaf), convert(tensor))
    return variables


# --- comparing trees ------------------------------------------------------------------------
def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {"a/b/c": leaf}."""
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if hasattr(value, "items"):
            flat.update(flatten(dict(value), path))
        else:
            flat[path] = value
    return flat


def shapes(tree: Mapping) -> dict[str, tuple[int, ...]]:
    """{"a/b/c": shape} of a tree of arrays, shape structs or shape tuples."""
    return {
        key: tuple(value) if isinstance(value, tuple) else tuple(np.shape(value))
        for key, value in flatten(tree).items()
    }


def assert_same_structure(copied: Mapping, reference: Mapping) -> None:
    """Same paths and shapes (a copied tree against the flax model's own tree)."""
    copied_shapes, reference_shapes = shapes(copied), shapes(reference)
    mismatched = [
        key
        for key, shape in copied_shapes.items()
        if key in reference_shapes and reference_shapes[key] != shape
    ]
    assert copied_shapes == reference_shapes, (
        f"only in torch: {sorted(set(copied_shapes) - set(reference_shapes))}; "
        f"only in flax: {sorted(set(reference_shapes) - set(copied_shapes))}; "
        f"shape mismatches: {mismatched}"
    )


def randomize_batch_norm_(model, seed: int = 0) -> None:
    """Give every BN a non-trivial scale, bias and running statistics, in place.

    A fresh ResNet has BN scale 1 (0 for each block's last BN), bias 0, mean 0 and var 1, so an
    EVAL forward would not exercise the residual branches or the running-stat mapping at all.
    """
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d):
                shape = module.weight.shape
                module.weight.copy_(0.5 + torch.rand(shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(shape, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(shape, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(shape, generator=generator))


# --- one training step in each framework (the same computation) ----------------------------
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
"""XLA CPU options for test programs: the same HLO, less LLVM optimisation; a small model's
train step compiles in ~3 s instead of 7-13 s on a 2-core CPU (the results agree to rounding)."""


def jax_train_step(workload, *, learning_rate: float, compiler_options=FAST_COMPILE):
    """A jitted `run(params, model_state, batch, rng, label_smoothing, dropout_rate)` -> dict:
    EVAL logits and state, the state of a TRAIN forward without BN update (BN models), and of a
    TRAIN forward with BN update the logits, loss, grads and the flax variables after one SGD
    step. Upstream's submissions jit their step with `label_smoothing` and `dropout_rate` as
    traced arguments; so does this."""
    import jax

    from algoperf.spec import ForwardPassMode

    train, eval_ = ForwardPassMode.TRAIN, ForwardPassMode.EVAL

    def run(params, model_state, batch, rng, label_smoothing, dropout_rate):
        eval_logits, eval_state = workload.model_fn(params, batch, model_state, eval_, rng, False)
        out = {"eval_logits": eval_logits, "eval_state": eval_state}
        if model_state:
            frozen = workload.model_fn(params, batch, model_state, train, rng, False, dropout_rate)
            out["frozen_state"] = frozen[1]

        def loss(params):
            logits, new_state = workload.model_fn(
                params, batch, model_state, train, rng, True, dropout_rate
            )
            result = workload.loss_fn(batch["targets"], logits, batch["weights"], label_smoothing)
            return result["summed"] / result["n_valid_examples"], (logits, new_state)

        (value, (logits, new_state)), grads = jax.value_and_grad(loss, has_aux=True)(params)
        new_params = jax.tree.map(lambda p, g: p - learning_rate * g, params, grads)
        variables = {"params": new_params, **(new_state or {})}
        out.update(train_logits=logits, loss=value, grads=grads, variables=variables)
        return out

    return jax.jit(run, compiler_options=compiler_options)


def torch_train_step(
    workload, model, batch, *, learning_rate: float, label_smoothing: float, to_flax=torch_to_flax
) -> dict:
    """The torch side of `jax_train_step` (dropout off): EVAL logits; TRAIN logits (BN running
    stats updated), loss and one SGD step; the flax variables after the step (`to_flax`)."""
    import torch

    from algoperf.spec import ForwardPassMode

    eval_logits, _ = workload.model_fn(model, batch, None, ForwardPassMode.EVAL, None, False, 0.0)
    logits, _ = workload.model_fn(model, batch, None, ForwardPassMode.TRAIN, None, True, 0.0)
    out = workload.loss_fn(batch["targets"], logits, batch["weights"], label_smoothing)
    loss = out["summed"] / out["n_valid_examples"]
    loss.backward()
    with torch.no_grad():
        for param in model.parameters():
            param -= learning_rate * param.grad
    return {
        "eval_logits": eval_logits.numpy(),
        "train_logits": logits.detach().numpy(),
        "loss": loss.item(),
        "variables": to_flax(model),
    }
