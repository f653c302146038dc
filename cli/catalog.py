"""The registry's facts as the `WorkloadCatalog` that scoring and log checks take as data."""

from __future__ import annotations

import functools

from algoperf import workloads
from algoperf.scoring.catalog import WorkloadCatalog


@functools.cache
def workload_catalog() -> WorkloadCatalog:
    """Every registered workload's spec and each version's scored and held-out workloads."""
    return WorkloadCatalog(
        specs={name: workloads.get_spec(name) for name in workloads.names()},
        scored=workloads.SCORED_WORKLOADS,
        held_out=workloads.HELD_OUT_WORKLOADS,
    )
