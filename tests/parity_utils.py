"""Helpers for torch <-> JAX parity tests: copy torch weights into a flax variable tree by name.

Torch module paths map to flax paths by joining a numeric part to the part before it
(`layer1.0.conv1` -> `layer1_0/conv1`); value layouts are converted per module type.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def flax_path(torch_module_name: str, strip_prefix: str = "") -> tuple[str, ...]:
    """`layer2.0.shortcut.conv` -> ("layer2_0", "shortcut", "conv")."""
    if strip_prefix and torch_module_name.startswith(strip_prefix):
        torch_module_name = torch_module_name[len(strip_prefix) :]
    path: list[str] = []
    for part in torch_module_name.split("."):
        if part.isdigit() and path:
            path[-1] = f"{path[-1]}_{part}"
        else:
            path.append(part)
    return tuple(path)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().copy()


def _set(tree: dict, path: tuple[str, ...], value: np.ndarray) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    assert path[-1] not in tree, f"two torch tensors map to {'/'.join(path)}"
    tree[path[-1]] = value


def torch_to_flax(model: nn.Module, *, strip_prefix: str = "") -> dict[str, dict]:
    """Flax variables {"params": ..., "batch_stats": ...} holding the torch model's values.

    Linear weight [out, in] -> kernel [in, out]; Conv2d OIHW -> HWIO; BatchNorm weight/bias ->
    scale/bias and running_mean/var -> batch_stats mean/var. Modules of other types with
    parameters raise, so a forgotten tensor cannot pass silently.
    """
    params: dict = {}
    batch_stats: dict = {}
    for name, module in model.named_modules():
        path = flax_path(name, strip_prefix)
        if isinstance(module, nn.Linear):
            _set(params, (*path, "kernel"), _numpy(module.weight).T)
        elif isinstance(module, nn.Conv2d):
            _set(params, (*path, "kernel"), _numpy(module.weight).transpose(2, 3, 1, 0))
        elif isinstance(module, _BATCH_NORMS):
            _set(params, (*path, "scale"), _numpy(module.weight))
            _set(batch_stats, (*path, "mean"), _numpy(module.running_mean))
            _set(batch_stats, (*path, "var"), _numpy(module.running_var))
        elif any(True for _ in module.parameters(recurse=False)):
            raise TypeError(f"no flax mapping for {type(module).__name__} at {name!r}")
        else:
            continue
        if getattr(module, "bias", None) is not None:
            _set(params, (*path, "bias"), _numpy(module.bias))
    variables = {"params": params}
    if batch_stats:
        variables["batch_stats"] = batch_stats
    return variables


def flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """Nested dict -> {"a/b/c": leaf}."""
    flat = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict) or hasattr(value, "items"):
            flat.update(flatten(dict(value), path))
        else:
            flat[path] = value
    return flat


def assert_same_structure(copied: dict, reference: dict) -> None:
    """Same paths and shapes (a copied tree against the flax model's own tree)."""
    copied_shapes = {k: tuple(np.shape(v)) for k, v in flatten(copied).items()}
    reference_shapes = {k: tuple(np.shape(v)) for k, v in flatten(reference).items()}
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


def randomize_batch_norm_(model: nn.Module, seed: int = 0) -> None:
    """Give every BN a non-trivial scale, bias and running statistics.

    A fresh ResNet has BN scale 1 (0 for each block's last BN), bias 0, mean 0 and var 1, so an
    EVAL forward would not exercise the residual branches or the running-stat mapping at all.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _BATCH_NORMS):
                shape = module.weight.shape
                module.weight.copy_(0.5 + torch.rand(shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(shape, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(shape, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(shape, generator=generator))
