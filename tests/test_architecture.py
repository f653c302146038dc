"""Architecture guard: the framework boundary and the rule that algoperf/ never names a workload.

Imports are read with `ast` (nested imports included), so a leak fails here before it ships.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import workloads

ROOT = pathlib.Path(__file__).resolve().parent.parent
FRAMEWORKS = (
    "torch",
    "torchvision",
    "torchaudio",
    "torchrec",
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "chex",
    "tensorflow",
    "tensorflow_datasets",
)
# Input pipelines may use torch's data utilities in both frameworks (STYLE.md §4).
DATA_ALLOWED = ("torch.utils.data", "torchdata")
COMPAT_SHIMS = {"pytorch_utils.py", "jax_sharding_utils.py"}


def imported_modules(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def framework_imports(path: pathlib.Path, allowed=()) -> list[str]:
    return sorted(
        m
        for m in imported_modules(path)
        if m.split(".")[0] in FRAMEWORKS and not any(m.startswith(a) for a in allowed)
    )


def core_files() -> list[pathlib.Path]:
    files = [p for p in (ROOT / "algoperf").glob("*.py") if p.name not in COMPAT_SHIMS]
    return files + list((ROOT / "algoperf" / "data").glob("*.py"))


def workload_data_files() -> list[pathlib.Path]:
    files = [ROOT / "workloads" / "__init__.py"]
    for base in workloads.BASE_WORKLOADS:
        folder = ROOT / "workloads" / base
        files += [
            f
            for f in (
                folder / "__init__.py",
                folder / "input_pipeline.py",
                folder / "metrics.py",
                folder / "prepare.py",
            )
            if f.exists()
        ]
    return files


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_no_framework(path):
    assert framework_imports(path) == [], f"{path.name} imports a model framework"


@pytest.mark.parametrize("path", workload_data_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_workload_data_files_import_no_model_framework(path):
    assert framework_imports(path, allowed=DATA_ALLOWED) == []


def test_model_files_stay_in_their_framework():
    for path in (ROOT / "workloads").glob("*/model_torch.py"):
        leaks = [m for m in imported_modules(path) if m.split(".")[0] in ("jax", "flax", "optax")]
        assert leaks == [], f"{path} imports {leaks}"
    for path in (ROOT / "workloads").glob("*/model_jax.py"):
        leaks = [
            m
            for m in imported_modules(path)
            if m.split(".")[0] in ("torch", "torchvision") and not m.startswith(DATA_ALLOWED)
        ]
        assert leaks == [], f"{path} imports {leaks}"


def test_framework_packages_stay_apart():
    for path in (ROOT / "algoperf" / "torch").glob("*.py"):
        assert not [m for m in imported_modules(path) if m.split(".")[0] in ("jax", "flax")]
    for path in (ROOT / "algoperf" / "jax").glob("*.py"):
        assert not [m for m in imported_modules(path) if m.split(".")[0] == "torch"]


def test_algoperf_never_names_a_workload():
    names = set(workloads.names())
    offenders = []
    for path in (ROOT / "algoperf").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert offenders == []


def test_algoperf_does_not_import_workloads_or_submissions_except_the_registry_lookup():
    for path in (ROOT / "algoperf").rglob("*.py"):
        for module in imported_modules(path):
            top = module.split(".")[0]
            assert top != "submissions", f"{path} imports {module}"
            if top == "workloads":
                assert module == "workloads", f"{path} imports {module} (use the registry)"


def test_guard_detects_a_leak(tmp_path):
    leaky = tmp_path / "leaky.py"
    leaky.write_text("def f():\n    import torch.nn as nn\n    from jax import numpy\n")
    assert framework_imports(leaky) == ["jax", "torch.nn"]
