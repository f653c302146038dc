"""Which slice of a global batch this process reads (each rank reads only its own shard)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Shard:
    """This process's position among the processes that split every global batch."""

    index: int = 0
    """Rank of this process (0-based)."""
    count: int = 1
    """Number of processes splitting the batch (DDP world size; 1 for JAX, which feeds all its
    local devices from one process)."""
    devices: int = 1
    """Devices this process feeds (JAX: its local devices, over which its rows are split
    again). A pipeline whose rows are packs of examples keeps the pack count divisible by
    `count * devices`."""

    @property
    def total_devices(self) -> int:
        """Devices that split every global batch, over all processes."""
        return self.count * self.devices

    def __post_init__(self):
        if self.count < 1 or self.devices < 1 or not 0 <= self.index < self.count:
            raise ValueError(
                f"Shard: need 0 <= index < count and devices >= 1, got index={self.index}, "
                f"count={self.count}, devices={self.devices}."
            )

    def local_batch_size(self, global_batch_size: int) -> int:
        """Rows of each global batch this process reads; the global size must split evenly."""
        if global_batch_size % self.count:
            raise ValueError(
                f"global batch size {global_batch_size} is not divisible by the {self.count} "
                "processes; choose a batch size that is a multiple of the device count."
            )
        return global_batch_size // self.count

    def rows(self, global_batch_size: int) -> slice:
        """This process's rows within a global batch."""
        local = self.local_batch_size(global_batch_size)
        return slice(self.index * local, (self.index + 1) * local)
