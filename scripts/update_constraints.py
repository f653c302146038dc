"""Write constraints.txt: the exact benchmark stack, one `name==version` per package that
pyproject.toml names (core and every extra) plus the few installed beside them (jaxlib, torchrec).

Versions come from the environment this runs in (the project's .venv); a package not installed
there keeps its pin from the current constraints.txt. scripts/install.sh and CI install with
`pip install -c constraints.txt`, so the benchmark environment is reproducible while the package
itself declares only lower bounds. tests/test_dependencies.py checks the file stays in step.

Usage: .venv/bin/python scripts/update_constraints.py [--check]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints.txt"
# Installed with the named packages but not named in pyproject.toml: jaxlib comes with jax and
# must match it; torchrec is installed by scripts/install.sh with --no-deps (recsys extra).
ALSO_PINNED = ("jaxlib", "torchrec")
HEADER = """\
# The benchmark's exact stack: scripts/install.sh and CI install with
# `pip install -c constraints.txt -e .[EXTRAS]`. pyproject.toml declares lower bounds only.
# Written by scripts/update_constraints.py from the project's .venv (packages not installed
# there keep their pin); tests/test_dependencies.py checks it against pyproject.toml.
"""


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return canonical(re.match(r"[A-Za-z0-9._-]+", requirement.strip()).group(0))


def named_packages(pyproject: pathlib.Path = ROOT / "pyproject.toml") -> dict[str, set[str]]:
    """{group: names} for the core ("core") and each extra; the `all` extra is left out."""
    project = tomllib.loads(pyproject.read_text())["project"]
    groups = {"core": {requirement_name(r) for r in project["dependencies"]}}
    for extra, requirements in project["optional-dependencies"].items():
        names = {requirement_name(r) for r in requirements}
        if canonical(project["name"]) not in names:
            groups[extra] = names
    return groups


def read_pins(path: pathlib.Path = CONSTRAINTS) -> dict[str, str]:
    """{name: version} of a constraints file's `name==version` lines."""
    pins = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                name, _, version = line.partition("==")
                pins[canonical(name)] = version.strip()
    return pins


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def render() -> str:
    names = set().union(*named_packages().values()) | set(ALSO_PINNED)
    current = read_pins()
    lines = []
    for name in sorted(names):
        version = installed_version(name) or current.get(name)
        if version is None:
            raise SystemExit(f"{name} is neither installed nor pinned in {CONSTRAINTS.name}")
        lines.append(f"{name}=={version}")
    return HEADER + "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file would change")
    args = parser.parse_args()
    text = render()
    if args.check:
        same = CONSTRAINTS.exists() and CONSTRAINTS.read_text() == text
        print(f"{CONSTRAINTS.name} is {'up to date' if same else 'out of date'}")
        return 0 if same else 1
    CONSTRAINTS.write_text(text)
    print(f"wrote {CONSTRAINTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
