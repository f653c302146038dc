"""What the framework-free runner needs from a framework, and how to get one by name."""

from __future__ import annotations

import importlib
from typing import Any, Protocol


class Backend(Protocol):
    """Framework services used by the runner (implemented in algoperf/torch and algoperf/jax)."""

    name: str
    rank: int
    world_size: int
    device_count: int
    """Devices a global batch is split over (DDP world size, or JAX's local device count)."""

    def prng_key(self, seed: int) -> Any: ...

    def split(self, key: Any, num: int) -> list[Any]: ...

    def step_rngs(self, key: Any, step: int) -> tuple[Any, Any, Any, Any]:
        """fold_in(key, step) then a 4-way split: data_select, update, prep_eval, eval."""

    def step_rng_block(self, key: Any, step: int) -> tuple[int, Any]:
        """`(start, rows)`: `rows[i]` is `step_rngs(key, start + i)`, and the block holds `step`.

        The runner looks steps up in the block until it runs out (a list lookup per step
        instead of a call); a backend may return a block of one step.
        """

    needs_sync: bool
    """Whether `sync` has anything to wait for (False on a CPU, where work is never queued)."""

    def sync(self, *trees: Any) -> None:
        """Wait for queued device work on these values, so a clock reading is honest."""

    def agree_max(self, values: list[float]) -> list[float]:
        """The element-wise maximum of `values` over all processes (1 process: `values`)."""

    def prepare_model(self, workload: Any, params: Any, *, compile_model: bool) -> Any:
        """Apply the compile policy to freshly initialised params (untimed)."""

    def reset_memory(self) -> None: ...

    def barrier(self) -> None: ...


def get_backend(framework: str) -> Backend:
    """The backend of `pytorch` or `jax`, imported only when asked for."""
    modules = {"pytorch": "algoperf.torch.backend", "jax": "algoperf.jax.backend"}
    if framework not in modules:
        raise ValueError(f"unknown framework {framework!r}; choose pytorch or jax.")
    try:
        module = importlib.import_module(modules[framework])
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"{error}; install it with `pip install -e .[{framework}]`."
        ) from error
    return module.make_backend()
