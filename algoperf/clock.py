"""The benchmark clock: wall time read after the device has finished the queued work.

Every reading first syncs the device (CUDA synchronize, or JAX block_until_ready on the values
passed), so time spent in queued kernels is charged to the step that queued them
(docs/rules.md, "Timing"). Tests inject a fake `time_fn`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class Clock:
    """`now(*values)` = sync on `values` (and the device), then the wall time in seconds."""

    def __init__(
        self,
        sync: Callable[..., None] | None = None,
        time_fn: Callable[[], float] = time.time,
    ) -> None:
        """`sync` None: nothing to wait for (a CPU device), so a reading is just `time_fn()`."""
        self.sync = sync
        self.time_fn = time_fn

    def now(self, *values: Any) -> float:
        if self.sync is not None:
            self.sync(*values)
        return self.time_fn()

    @classmethod
    def of(cls, backend: Any) -> Clock:
        """The clock of a runner backend: it syncs only when the backend has queued work."""
        return cls(sync=backend.sync if backend.needs_sync else None)
