"""The workload registry: every upstream workload and variant name -> its spec and its model.

`workloads.load("ogbg_gelu", "pytorch")` imports only `workloads/ogbg/model_torch.py` and the
input pipeline of the workload's dataset, `workloads/<SPEC.dataset>/input_pipeline.py` (a
workload's own folder, or a folder of data several workloads share: `imagenet`). Base workloads'
`__init__.py` files hold data only (`SPEC`, `VARIANTS`), so listing names and reading specs
imports no model framework. Names match upstream exactly; nothing is matched by substring.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from typing import Any

from algoperf import versions
from algoperf.workload_spec import Variant, WorkloadSpec

# Registration order: the development workloads, then upstream's BASE_WORKLOADS order (v1.0).
BASE_WORKLOADS: tuple[str, ...] = (
    "mnist",
    "cifar",
    "criteo1tb",
    "fastmri",
    "imagenet_resnet",
    "imagenet_vit",
    "librispeech_conformer",
    "librispeech_deepspeech",
    "finewebedu_lm",
    "ogbg",
    "wmt",
)
DEV_WORKLOADS: tuple[str, ...] = ("mnist", "cifar", "criteo1tb_test")

_EIGHT = (
    "criteo1tb",
    "fastmri",
    "imagenet_resnet",
    "imagenet_vit",
    "librispeech_conformer",
    "librispeech_deepspeech",
    "ogbg",
    "wmt",
)
# Which workloads each benchmark version scores (docs/rules.md, "Benchmark versions").
SCORED_WORKLOADS: dict[str, tuple[str, ...]] = {
    "v0.5": _EIGHT,
    "v0.6": _EIGHT,
    "v1.0": (
        "criteo1tb",
        "fastmri",
        "imagenet_resnet",
        "imagenet_vit",
        "librispeech_conformer",
        "librispeech_deepspeech",
        "finewebedu_lm",
        "ogbg",
        "wmt",
    ),
}
HELD_OUT_WORKLOADS: dict[str, tuple[str, ...]] = {
    "v0.5": (
        "librispeech_conformer_layernorm",
        "imagenet_resnet_large_bn_init",
        "ogbg_model_size",
        "wmt_glu_tanh",
        "fastmri_tanh",
        "criteo1tb_embed_init",
    ),
    "v0.6": (),
    "v1.0": (),
}
DEFAULT_WORKLOAD = "mnist"
"""What `algoperf run` trains without --workload: its data works offline."""
FRAMEWORKS: tuple[str, ...] = ("pytorch", "jax")
_MODEL_FILE = {"pytorch": "model_torch", "jax": "model_jax"}


@functools.cache
def _table() -> dict[str, tuple[str, Variant | None]]:
    table: dict[str, tuple[str, Variant | None]] = {}
    for base in BASE_WORKLOADS:
        module = importlib.import_module(f"{__name__}.{base}")
        table[base] = (base, None)
        for variant_name, variant in getattr(module, "VARIANTS", {}).items():
            table[variant_name] = (base, variant)
    return table


def names() -> list[str]:
    """Every registered workload and variant name, in registration order."""
    return list(_table())


def _check_name(name: str) -> None:
    if name not in _table():
        raise ValueError(
            f"unknown workload {name!r}; valid names: {', '.join(names())}. "
            "Run `algoperf list` to see them with their targets."
        )


def base_name(name: str) -> str:
    """The base workload of a workload or variant name."""
    _check_name(name)
    return _table()[name][0]


@functools.cache
def get_spec(name: str) -> WorkloadSpec:
    """The `WorkloadSpec` of a workload or variant (a variant's overrides applied)."""
    _check_name(name)
    base, variant = _table()[name]
    module = importlib.import_module(f"{__name__}.{base}")
    base_spec: WorkloadSpec = module.SPEC
    if variant is None:
        variants = tuple(n for n, (b, v) in _table().items() if b == base and v is not None)
        return dataclasses.replace(base_spec, variants=variants)
    return base_spec.with_variant(name, variant)


def load(
    name: str,
    framework: str = "pytorch",
    *,
    benchmark_version: str = versions.DEFAULT_VERSION,
    **workload_kwargs: Any,
):
    """Build the framework-specific `spec.Workload` for a workload or variant name.

    Raises:
      ValueError: unknown name or framework, or a workload not part of `benchmark_version`.
      NotImplementedError: the workload's model in this framework is not written yet.
    """
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; choose one of {', '.join(FRAMEWORKS)}.")
    workload_spec = get_spec(name)
    versions.get_version(benchmark_version)
    workload_spec.budget(benchmark_version)  # clear error if the version lacks this workload
    module_name = f"{__name__}.{workload_spec.base}.{_MODEL_FILE[framework]}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name == module_name:
            raise NotImplementedError(
                f"workload {name!r} has no {framework} model in this release yet "
                f"(workloads/{workload_spec.base}/{_MODEL_FILE[framework]}.py is missing); "
                "its spec and targets are registered. Available models: "
                + ", ".join(available(framework))
            ) from None
        extra = "pytorch" if framework == "pytorch" else "jax"
        raise ModuleNotFoundError(
            f"{error}; install the framework with `pip install -e .[{extra}]`."
        ) from error
    return module.Workload(
        workload_spec,
        pipeline_class=pipeline_class(name),
        benchmark_version=benchmark_version,
        **workload_kwargs,
    )


def pipeline_class(name: str):
    """The `InputPipeline` class of a workload's dataset (`SPEC.dataset`'s input_pipeline)."""
    dataset = get_spec(name).dataset
    module = importlib.import_module(f"{__name__}.{dataset}.input_pipeline")
    return module.Pipeline


def option_names(name: str) -> list[str]:
    """The keys `--workload_options` may set for a workload (model_kwargs and its pipeline's)."""
    return ["model_kwargs", *pipeline_class(name).option_names()]


def available(framework: str) -> list[str]:
    """Names whose model exists for `framework` (found without importing the model file)."""
    import importlib.util

    def has_model(base: str) -> bool:
        return importlib.util.find_spec(f"{__name__}.{base}.{_MODEL_FILE[framework]}") is not None

    return [name for name, (base, _) in _table().items() if has_model(base)]
