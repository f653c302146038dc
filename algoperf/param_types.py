"""Parameter types (spec.ParameterType) inferred from parameter names, for both frameworks.

Torch names (`layer1.0.bn1.weight`) and flax paths (`BatchNorm_0/scale`) map to the same
categories, so a submission that branches on types behaves the same in either framework.
"""

from __future__ import annotations

import re

from algoperf.spec import ParameterType

_BIAS_LEAVES = ("bias", "b")
_SHORT_NORM = re.compile(r"^(bn|ln|norm)(\d+|_.*)?$")
_ATTENTION_MODULES = ("attn", "attention")
_ATTENTION_KINDS = (
    ("in_proj", ParameterType.ATTENTION_QKV),
    ("qkv", ParameterType.ATTENTION_QKV),
    ("kv_proj", ParameterType.ATTENTION_KV),
    ("q_proj", ParameterType.ATTENTION_Q),
    ("query", ParameterType.ATTENTION_Q),
    ("k_proj", ParameterType.ATTENTION_K),
    ("key", ParameterType.ATTENTION_K),
    ("v_proj", ParameterType.ATTENTION_V),
    ("value", ParameterType.ATTENTION_V),
    ("out_proj", ParameterType.ATTENTION_OUT),
    ("out", ParameterType.ATTENTION_OUT),
)


def _is_batch_norm(module: str) -> bool:
    return (
        "batchnorm" in module or "batch_norm" in module or bool(re.match(r"^bn(\d+|_.*)?$", module))
    )


def _is_layer_norm(module: str) -> bool:
    return (
        "layernorm" in module
        or "layer_norm" in module
        or bool(re.match(r"^ln(\d+|_.*)?$", module))
        or module.endswith("norm")
    )


def _attention_type(modules: list[str], leaf: str, is_bias: bool) -> ParameterType | None:
    if not any(a in m for m in modules for a in _ATTENTION_MODULES):
        return None
    names = [*modules, leaf]
    for token, kind in _ATTENTION_KINDS:
        if any(part == token or part.startswith(token + "_") for part in names):
            return ParameterType.ATTENTION_BIAS if is_bias else kind
    return None


def infer_parameter_type(name: str, ndim: int) -> ParameterType:
    """The type of one parameter from its dotted (torch) or slashed (flax) name and its rank."""
    parts = [p for p in re.split(r"[./]", name.lower()) if p]
    leaf, modules = parts[-1], parts[:-1]
    is_bias = leaf in _BIAS_LEAVES or leaf.endswith("_bias")
    if any(_is_batch_norm(m) for m in modules):
        return ParameterType.BATCH_NORM_BIAS if is_bias else ParameterType.BATCH_NORM_SCALE
    if any(_is_layer_norm(m) for m in modules):
        return ParameterType.LAYER_NORM_BIAS if is_bias else ParameterType.LAYER_NORM_SCALE
    attention = _attention_type(modules, leaf, is_bias)
    if attention is not None:
        return attention
    if any("embed" in m for m in modules) and not is_bias:
        return ParameterType.EMBEDDING
    if is_bias:
        return ParameterType.BIAS
    if ndim >= 3 or any("conv" in m for m in modules):
        return ParameterType.CONV_WEIGHT
    return ParameterType.WEIGHT
