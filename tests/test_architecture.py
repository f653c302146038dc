"""Architecture guard: the framework boundary, the package edges, and that algoperf/ never names a
workload.

Imports are read with `ast` (nested imports included, relative ones resolved), so a leak fails here
before it ships.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

from algoperf import workloads

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
# Input pipelines may use torch's data utilities in both frameworks (docs/data.md).
DATA_ALLOWED = ("torch.utils.data", "torchdata")
COMPAT_SHIMS = {"pytorch_utils.py", "jax_sharding_utils.py"}

FIRST_PARTY = (
    "algoperf", "workloads", "submissions", "launch", "cli", "scripts", "examples", "tests",
)  # fmt: skip
# Which first-party packages each package may import (its own always). Dependencies point one way
# (docs/workloads.md): the core imports only the registry; the command layer composes everything.
ALLOWED = {
    "algoperf": {"workloads"},  # the bare registry module only: see BARE_ONLY
    "workloads": {"algoperf"},
    "submissions": {"algoperf"},
    "launch": {"algoperf", "workloads"},
    "cli": {"algoperf", "workloads", "launch"},
    "scripts": {"algoperf", "workloads", "submissions", "launch", "cli"},
    "examples": {"algoperf"},  # library use: what a user's own script may import
}
# (importer, imported): only the package's top module, never a submodule (`workloads.mnist`).
BARE_ONLY = {("algoperf", "workloads")}
# The one edge out of the core: `python -m algoperf` (and torchrun's `-m algoperf`) runs the CLI.
EXCEPTIONS = {"algoperf/__main__.py": {"algoperf.cli.main"}}
# Folders at the repository's top that install as subpackages of algoperf (setup.py), so that the
# project takes no generic top-level import name: `workloads/mnist` is `algoperf.workloads.mnist`.
MOUNTED = ("workloads", "submissions", "launch", "cli")


def layer(module: str) -> str:
    """The ALLOWED key a dotted module belongs to (`algoperf.workloads.mnist` -> `workloads`)."""
    parts = module.split(".")
    if parts[0] == "algoperf" and len(parts) > 1 and parts[1] in MOUNTED:
        return parts[1]
    return parts[0]


def dotted_package(relative: pathlib.PurePath) -> tuple[str, ...]:
    """The import name of a file's package from its path in the repository."""
    parts = relative.parts[:-1]
    return ("algoperf", *parts) if parts and parts[0] in MOUNTED else parts


def imported_modules(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def _is_module(root: pathlib.Path, dotted: str) -> bool:
    parts = dotted.split(".")
    if parts[0] == "algoperf" and len(parts) > 1 and parts[1] in MOUNTED:
        parts = parts[1:]
    path = root.joinpath(*parts)
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def resolved_imports(path: pathlib.Path, root: pathlib.Path = ROOT) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, nested ones included.

    Relative imports are made absolute from the file's package; `from X import n` counts as the
    module `X.n` where `n` is a module or package of `X` on disk, else as `X`.
    """
    package = dotted_package(path.relative_to(root))
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level > len(package):
                continue  # beyond the top-level package: Python refuses it anyway
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join((*base, *([module] if module else [])))
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                found.append((node.lineno, candidate if _is_module(root, candidate) else module))
    return found


def forbidden_edges(paths, root: pathlib.Path = ROOT) -> list[str]:
    """One line per import of a first-party package that ALLOWED forbids the file's package."""
    problems = []
    for path in paths:
        relative = path.relative_to(root)
        owner = relative.parts[0]
        allowed = ALLOWED[owner] | {owner}
        exceptions = EXCEPTIONS.get(relative.as_posix(), set())
        for line, module in resolved_imports(path, root):
            top = layer(module)
            if module.split(".")[0] in MOUNTED:
                problems.append(
                    f"{relative}:{line} imports {module}: write algoperf.{module} (the installed "
                    "name; a bare one is the user's own package)"
                )
                continue
            if top not in FIRST_PARTY or top == owner or module in exceptions:
                continue
            elif top not in allowed:
                problems.append(
                    f"{relative}:{line} imports {module}: {owner}/ may import only "
                    f"{', '.join(sorted(allowed))}"
                )
            elif (owner, top) in BARE_ONLY and module != f"algoperf.{top}":
                problems.append(
                    f"{relative}:{line} imports {module}: {owner}/ may import only the {top} "
                    "module itself (the registry), none of its submodules"
                )
    return problems


def package_files(root: pathlib.Path = ROOT) -> list[pathlib.Path]:
    """Every .py file of the packages in ALLOWED (subpackages included)."""
    return sorted(
        path
        for package in ALLOWED
        for path in (root / package).rglob("*.py")
        if "__pycache__" not in path.parts
    )


def framework_imports(path: pathlib.Path, allowed=()) -> list[str]:
    return sorted(
        m
        for m in imported_modules(path)
        if m.split(".")[0] in FRAMEWORKS and not any(m.startswith(a) for a in allowed)
    )


def core_files() -> list[pathlib.Path]:
    files = [p for p in (ROOT / "algoperf").glob("*.py") if p.name not in COMPAT_SHIMS]
    return files + [
        p for sub in ("data", "scoring") for p in (ROOT / "algoperf" / sub).glob("*.py")
    ]


def workload_data_files() -> list[pathlib.Path]:
    """Every file of every workload or dataset folder except its framework files (the suffix
    names the framework: model_torch.py, decode_jax.py...) and testing.py."""
    files = [ROOT / "workloads" / "__init__.py"]
    for folder in sorted(p.parent for p in (ROOT / "workloads").glob("*/__init__.py")):
        files += [
            f
            for f in sorted(folder.glob("*.py"))
            if not f.name.endswith(("_torch.py", "_jax.py")) and f.name != "testing.py"
        ]
    return files


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_no_framework(path):
    # algoperf/data may use torch's data utilities (its worker-process loader), as pipelines may.
    allowed = DATA_ALLOWED if path.parent.name == "data" else ()
    assert framework_imports(path, allowed=allowed) == [], f"{path.name} imports a model framework"


@pytest.mark.parametrize("path", workload_data_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_workload_data_files_import_no_model_framework(path):
    assert framework_imports(path, allowed=DATA_ALLOWED) == []


def test_model_files_stay_in_their_framework():
    for path in (ROOT / "workloads").glob("*/*_torch.py"):
        leaks = [m for m in imported_modules(path) if m.split(".")[0] in ("jax", "flax", "optax")]
        assert leaks == [], f"{path} imports {leaks}"
    for path in (ROOT / "workloads").glob("*/*_jax.py"):
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
            top = layer(module)
            assert top != "submissions", f"{path} imports {module}"
            if top == "workloads":
                assert module == "algoperf.workloads", f"{path} imports {module} (use the registry)"


def test_guard_detects_a_leak(tmp_path):
    leaky = tmp_path / "leaky.py"
    leaky.write_text("def f():\n    import torch.nn as nn\n    from jax import numpy\n")
    assert framework_imports(leaky) == ["jax", "torch.nn"]


def test_package_edges_follow_the_table():
    files = package_files()
    assert {path.relative_to(ROOT).parts[0] for path in files} == set(ALLOWED)
    assert ROOT / "algoperf" / "scoring" / "targets.py" in files  # subpackages are read too
    assert forbidden_edges(files) == []


def test_scoring_reads_no_registry():
    for path in (ROOT / "algoperf" / "scoring").glob("*.py"):
        imported = {layer(module) for _, module in resolved_imports(path)}
        assert "workloads" not in imported, f"{path.name}: take workload facts as data (catalog)"


def test_edge_guard_detects_forbidden_edges(tmp_path):
    for package in ("algoperf", "algoperf/scoring", "workloads", "workloads/mnist", "cli"):
        (tmp_path / package).mkdir(exist_ok=True)
        (tmp_path / package / "__init__.py").write_text("")
    for module in ("cli/main.py", "algoperf/config.py"):
        (tmp_path / module).write_text("")
    leaky = tmp_path / "algoperf" / "scoring" / "leaky.py"
    leaky.write_text(
        "from algoperf import workloads\n"  # allowed: the bare registry
        "from algoperf.workloads import get_spec\n"  # allowed: a name of the registry module
        "from .. import config\n"  # allowed: the core itself
        "def f():\n"
        "    from algoperf.workloads import mnist\n"  # a workload's package
        "    import algoperf.launch.sweep\n"
        "    import algoperf.cli.main as entry\n"
        "    import workloads\n"  # the bare name is the user's, not ours
    )
    shim = tmp_path / "algoperf" / "__main__.py"
    shim.write_text("from algoperf.cli.main import main\n")
    assert (3, "algoperf.config") in resolved_imports(leaky, tmp_path)  # relative, resolved
    problems = forbidden_edges([leaky, shim], tmp_path)
    assert [problem.split(" ")[0] for problem in problems] == [
        "algoperf/scoring/leaky.py:5",
        "algoperf/scoring/leaky.py:6",
        "algoperf/scoring/leaky.py:7",
        "algoperf/scoring/leaky.py:8",
    ], problems
    assert "algoperf.workloads.mnist" in problems[0] and "none of its submodules" in problems[0]
    assert "algoperf.launch.sweep" in problems[1] and "algoperf.cli.main" in problems[2]
    assert "write algoperf.workloads" in problems[3]
