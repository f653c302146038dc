"""Package layout for setuptools; the metadata lives in pyproject.toml.

The folders workloads/, submissions/, launch/ and cli/ sit at the top of the repository but install
as subpackages of algoperf (algoperf.workloads, ...): the project takes only the name `algoperf`, so
a user's own `submissions` or `workloads` package keeps its name (docs/library.md).
"""

from setuptools import find_namespace_packages, find_packages, setup

MOUNTED = ("workloads", "submissions", "launch", "cli")

packages = find_packages(include=["algoperf", "algoperf.*"])
package_dir = {}
for top in MOUNTED:
    package_dir[f"algoperf.{top}"] = top
    # Namespace discovery: reference submissions are folders of files loaded by path.
    found = find_namespace_packages(include=[top, f"{top}.*"], exclude=["*.__pycache__"])
    packages += [f"algoperf.{name}" for name in found]

setup(packages=packages, package_dir=package_dir)
