"""Declared dependencies match the code, read with `ast` (nothing is installed or imported):
every third-party module imported in algoperf/, workloads/, submissions/, launch/ and cli/ (and
in tests/, scripts/, examples/) comes from a distribution that pyproject.toml declares in the core
or in an extra the module's area needs (AREAS); every declared distribution is imported somewhere
or says why not (NOT_IMPORTED); constraints.txt pins every package pyproject.toml names, at the
version installed here, and scripts/install.sh installs with it.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import importlib.metadata
import importlib.util
import pathlib
import re
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("algoperf", "workloads", "submissions", "launch", "cli")
TOOLING = ("tests", "scripts", "examples")
EVERY = ("*",)
# (path pattern from the repository root, extras its imports may need besides the core); the
# first pattern that matches a file decides. fnmatch's `*` also matches `/`.
AREAS = (
    ("algoperf/torch/*", ("pytorch",)),
    ("algoperf/pytorch_utils.py", ("pytorch",)),
    ("algoperf/jax/*", ("jax",)),
    ("algoperf/jax_sharding_utils.py", ("jax",)),
    # The worker-process loader: torch's data utilities feed both frameworks (docs/data.md).
    ("algoperf/data/loader.py", ("pytorch",)),
    ("algoperf/scoring/*", ("scoring",)),
    ("algoperf/sinks.py", ("wandb",)),  # imported only for --use_wandb
    # A workload's framework files: model_torch.py, decode_jax.py... (the suffix names it).
    ("workloads/*/*_torch.py", ("pytorch",)),
    ("workloads/*/*_jax.py", ("jax",)),
    ("workloads/parity.py", ("pytorch", "jax")),
    # Each workload's test configuration and weight map, and its format-exact test fixtures.
    ("workloads/*/testing.py", ("pytorch", "jax", "data", "dev")),
    ("workloads/*/fixture.py", ("data", "dev")),
    ("workloads/*", ("data",)),
    ("submissions/*torch*.py", ("pytorch",)),
    ("submissions/*jax*.py", ("jax",)),
    # One schedule for both frameworks; jax.numpy only inside the JAX form.
    ("submissions/common/schedules.py", ("jax",)),
    ("launch/slurm.py", ("slurm",)),
    *((f"{folder}/*", EVERY) for folder in TOOLING),
    ("*", ()),
)
# Installed by scripts/install.sh in a step of its own (--no-deps), for the extra named.
INSTALLED_BY_SCRIPT = {"torchrec": "recsys"}
# Import names whose distribution is named otherwise, for modules not installed here.
DISTRIBUTION_OF = {"PIL": "pillow", "sklearn": "scikit-learn", "skimage": "scikit-image"}
TORCHREC_NEEDS = "torchrec's own requirement (torchrec installs with --no-deps: scripts/install.sh)"
SPEECH = "the speech extra, for the speech and language workloads (not written yet)"
# Declared, but imported by none of the files read here.
NOT_IMPORTED = {
    "absl-py": "community submissions import absl.logging (docs/rules.md, Upstream compatibility)",
    "chex": "community JAX submissions import chex (docs/rules.md, Upstream compatibility)",
    "ruff": "a command: make lint",
    "torchaudio": SPEECH,
    "soundfile": SPEECH,
    "fbgemm-gpu-cpu": TORCHREC_NEEDS,
    "tensordict": TORCHREC_NEEDS,
    "torchmetrics": TORCHREC_NEEDS,
    "pyre-extensions": TORCHREC_NEEDS,
    "tqdm": TORCHREC_NEEDS,
}


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


constraints = load_script("update_constraints")
canonical = constraints.canonical


def declared() -> dict[str, set[str]]:
    """{"core" or extra: canonical distribution names} from pyproject.toml."""
    groups = constraints.named_packages()
    for name, extra in INSTALLED_BY_SCRIPT.items():
        groups[extra] = groups[extra] | {name}
    return groups


def area_extras(relative: str) -> tuple[str, ...]:
    return next(extras for pattern, extras in AREAS if fnmatch.fnmatch(relative, pattern))


@functools.cache
def source_files() -> tuple[tuple[str, str], ...]:
    """(path from the repository root, source) of every .py file that is checked."""
    files = []
    for folder in (*PACKAGES, *TOOLING):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "__pycache__" not in path.parts:
                files.append((path.relative_to(ROOT).as_posix(), path.read_text()))
    return tuple(files)


@functools.cache
def local_names() -> frozenset[str]:
    """Top-level names of this repository's own modules (packages and the tooling folders'
    scripts, which import each other by name)."""
    names = {"algoperf", *PACKAGES, *TOOLING}
    for folder in TOOLING:
        for path in (ROOT / folder).rglob("*"):
            if path.suffix == ".py" or (path.is_dir() and path.name != "__pycache__"):
                names.add(path.stem)
    return frozenset(names)


@functools.cache
def third_party_imports(source: str, filename: str) -> list[tuple[int, str]]:
    """(line, top-level module) of every absolute import that is neither stdlib nor local."""
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            tops = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops = [node.module.split(".")[0]]
        else:
            continue
        found += [
            (node.lineno, top)
            for top in tops
            if top not in sys.stdlib_module_names and top not in local_names()
        ]
    return found


@functools.cache
def installed_modules() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


@functools.cache
def distributions_of(module: str) -> frozenset[str]:
    """The distributions that provide a top-level module (by its name when not installed)."""
    installed = installed_modules().get(module)
    if installed:
        return frozenset(canonical(name) for name in installed)
    return frozenset({canonical(DISTRIBUTION_OF.get(module, module))})


def undeclared(files, groups: dict[str, set[str]]) -> list[str]:
    """One line per import whose distribution the file's area does not declare."""
    problems = []
    for relative, source in files:
        extras = area_extras(relative)
        names = set(groups["core"]).union(
            *(groups[extra] for extra in (groups if extras == EVERY else extras))
        )
        for line, module in third_party_imports(source, relative):
            if not distributions_of(module) & names:
                needs = " or ".join(sorted(distributions_of(module)))
                where = "any extra" if extras == EVERY else f"core/{'/'.join(extras) or '-'}"
                problems.append(
                    f"{relative}:{line} imports {module} ({needs}), which {where} does not "
                    "declare: add it to pyproject.toml, or map the file's area in AREAS"
                )
    return problems


def test_every_import_is_declared_for_its_area():
    assert undeclared(source_files(), declared()) == []


def test_the_check_fails_when_a_declared_dependency_is_removed():
    groups = declared()
    groups["core"] = groups["core"] - {"psutil"}
    groups["jax"] = groups["jax"] - {"orbax-checkpoint"}
    problems = "\n".join(undeclared(source_files(), groups))
    assert "algoperf/logs.py" in problems and "(psutil)" in problems
    assert "algoperf/jax/checkpoint.py" in problems and "(orbax-checkpoint)" in problems


def test_the_check_fails_on_an_undeclared_import():
    files = [
        ("algoperf/new_module.py", "import pandas\n"),  # scoring's, not the core's
        ("workloads/mnist/model_jax.py", "def f():\n    import torch\n"),
        ("launch/new.py", "from yaml import safe_load\n"),
    ]
    problems = undeclared(files, declared())
    assert [problem.split(" ")[0] for problem in problems] == [
        "algoperf/new_module.py:1",
        "workloads/mnist/model_jax.py:2",
        "launch/new.py:1",
    ]
    assert undeclared([("scripts/x.py", "import torch, jax, pandas\n")], declared()) == []


def test_declared_dependencies_are_imported_or_say_why_not():
    imported = set()
    for relative, source in source_files():
        for _, module in third_party_imports(source, relative):
            imported |= distributions_of(module)
    named = set().union(*constraints.named_packages().values())
    unused = sorted(named - imported - set(NOT_IMPORTED))
    assert unused == [], "declared but never imported (drop them, or say why in NOT_IMPORTED)"


def requirements() -> list[str]:
    """The requirement strings of the core and every extra but `all` (spaces removed)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [
        r for name, rs in project["optional-dependencies"].items() if name != "all" for r in rs
    ]
    return [r.replace(" ", "") for r in (*project["dependencies"], *extras)]


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:4])


def test_constraints_pin_every_named_package_at_the_installed_version():
    pins = constraints.read_pins()
    named = set().union(*declared().values()) | set(constraints.ALSO_PINNED)
    assert sorted(named - set(pins)) == [], "unpinned: run scripts/update_constraints.py"
    stale = {
        name: (pin, constraints.installed_version(name))
        for name, pin in pins.items()
        if constraints.installed_version(name) not in (None, pin)
    }
    assert stale == {}, "pins differ from .venv: run scripts/update_constraints.py"
    for requirement in requirements():  # each pin meets the lower bound declared for it
        name, _, bound = requirement.partition(">=")
        if bound:
            assert version_tuple(pins[canonical(name)]) >= version_tuple(bound), requirement
    assert constraints.render() == constraints.CONSTRAINTS.read_text()


def test_the_package_declares_lower_bounds_only():
    """Exact pins belong in constraints.txt: in the package they clash with users' stacks."""
    assert [r for r in requirements() if re.search(r"==|<|~=|!=", r)] == []


@pytest.mark.parametrize("file", ["scripts/install.sh"])
def test_install_uses_the_constraints(file):
    script = (ROOT / file).read_text()
    pip_lines = [line for line in script.splitlines() if line.strip().startswith(".venv/bin/pip")]
    assert pip_lines and all("-c constraints.txt" in line for line in pip_lines)
    assert "constraints.txt | sha1sum" in script  # a new pin reinstalls; nothing new exits at once
    assert "bash scripts/install.sh" in (ROOT / "Makefile").read_text()
