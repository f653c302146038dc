"""The registered workloads as data, handed to scoring and log checks by the command layer.

Scoring needs a few registry facts (targets, budgets, bases, which workloads a version scores);
the core never imports the registry for them, so the caller (`cli/`) builds a `WorkloadCatalog`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType

from algoperf.workload_spec import WorkloadSpec


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkloadCatalog:
    """Every registered workload's spec, and the workloads each benchmark version scores."""

    specs: Mapping[str, WorkloadSpec]
    """Workload or variant name -> its spec, in registration order."""
    scored: Mapping[str, tuple[str, ...]]
    """Benchmark version (`v0.6`) -> its base workloads (docs/rules.md, "Benchmark versions")."""
    held_out: Mapping[str, tuple[str, ...]]
    """Benchmark version -> its held-out variants (v0.5 only today)."""

    def __post_init__(self):
        for table in (self.scored, self.held_out):
            for version, names in table.items():
                unknown = [name for name in names if name not in self.specs]
                if unknown:
                    raise ValueError(
                        f"WorkloadCatalog: {version} lists unknown workloads {unknown}"
                    )
        object.__setattr__(self, "specs", MappingProxyType(dict(self.specs)))
        object.__setattr__(self, "scored", MappingProxyType(dict(self.scored)))
        object.__setattr__(self, "held_out", MappingProxyType(dict(self.held_out)))

    def names(self) -> list[str]:
        """Every workload and variant name, in registration order."""
        return list(self.specs)

    def spec(self, name: str) -> WorkloadSpec:
        """The spec of a workload or variant.

        Raises:
            ValueError: The name is not registered (the message lists the valid names).
        """
        if name not in self.specs:
            raise ValueError(
                f"unknown workload {name!r}; valid names: {', '.join(self.specs)}. "
                "Run `algoperf list` to see them with their targets."
            )
        return self.specs[name]

    def base_name(self, name: str) -> str:
        """The base workload of a workload or variant name."""
        return self.spec(name).base
