"""The data protocol: what every workload's input pipeline implements (docs/data.md).

A pipeline is framework-free (numpy; torch.utils.data / torchdata only inside loader workers). It
loads the prepared splits from a data dir, gives each rank its batches of a split for a
(seed, global batch size, start step), and makes fake batches with the real structure. A batch is
a nested structure (dicts, tuples, lists) of numpy arrays; the framework bases map it to device
arrays as a pytree. Eval batches carry a top-level `weights` array (1 on real rows, 0 on padding).
The index rules (train rows, eval padding, eval_train subset, augmentation seeds) live in
`algoperf.data.indices`.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from algoperf.data.sharding import Shard

Batch = Mapping[str, Any]
"""A (nested) mapping of numpy arrays: this rank's rows of one global batch."""
LAYOUTS = ("NCHW", "NHWC")
EVAL_SPLITS = ("eval_train", "validation", "test")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PipelineOptions:
    """Options every pipeline takes. A pipeline declares its own by subclassing (each field a
    documented default); `--workload_options KEY=VALUE` sets them, and unknown keys are refused
    (`algoperf.workload_base.SpecWorkload.option_names`)."""

    extra_data_dir: str | None = None
    """A second data folder, where a workload has one (ImageNet: the ImageNet-v2 test set;
    `--imagenet_v2_data_dir`). Others ignore it."""


class InputPipeline(abc.ABC):
    """A workload's data, built once per Workload with its options and the framework's layout.

    Subclasses set `Options` and implement the abstract methods; `load` is called once per data
    dir (the Workload caches the result) and may list files lazily.
    """

    Options: ClassVar[type[PipelineOptions]] = PipelineOptions

    def __init__(
        self,
        options: PipelineOptions | None = None,
        *,
        layout: str = "NCHW",
        allow_download: bool = False,
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}.")
        options = options if options is not None else self.Options()
        if not isinstance(options, self.Options):
            raise TypeError(f"{type(self).__name__} takes {self.Options.__name__}, not {options!r}")
        self.options = options
        self.layout = layout
        """Image layout the model wants: NCHW (PyTorch) or NHWC (JAX); others ignore it."""
        self.allow_download = allow_download

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The option keys a user may set (the fields of `Options`)."""
        return tuple(field.name for field in dataclasses.fields(cls.Options))

    def with_options(self, **changes) -> None:
        """Change options in place (e.g. the extra data dir handed to a later eval)."""
        self.options = dataclasses.replace(self.options, **changes)

    @abc.abstractmethod
    def load(self, data_dir: str) -> Any:
        """The prepared splits under `data_dir`.

        Raises:
          FileNotFoundError: the data is missing; the message names the prepare command.
          ValueError: the data is there but malformed.
        """

    @abc.abstractmethod
    def train_batches(
        self, dataset: Any, global_batch_size: int, *, seed: int, shard: Shard, start_step: int = 0
    ) -> Iterator[Batch]:
        """This rank's rows of every global train batch from `start_step` on (infinite).

        Batch `s` is the same for any number of ranks and workers, and after a resume.
        """

    @abc.abstractmethod
    def eval_batches(
        self,
        dataset: Any,
        split: str,
        global_batch_size: int,
        *,
        seed: int,
        shard: Shard,
        num_eval_train_examples: int,
    ) -> Iterator[Batch]:
        """One pass over `split` (eval_train, validation or test), this rank's rows of each
        padded global batch, never augmented; `seed` picks the eval_train subset.

        Raises:
          ValueError: an unknown split.
          FileNotFoundError: the split's files are missing.
        """

    @abc.abstractmethod
    def fake_batch(self, batch_size: int, *, seed: int = 0) -> Batch:
        """A batch with the real structure, shapes and dtypes (random values), for tests."""

    def train_chunks(
        self, dataset: Any, global_batch_size: int, *, seed: int, shard: Shard, start_step: int = 0
    ):
        """Optional fast path: `(ArraySplit, chunk plans)` when the train stream is plain rows of
        an in-memory split (no per-step augmentation), for a framework to gather and decode a
        chunk at a time in its own arrays (`algoperf.torch.chunks`); None otherwise."""
        del dataset, global_batch_size, seed, shard, start_step
        return None


def check_split(split: str) -> None:
    if split not in EVAL_SPLITS:
        raise ValueError(
            f"unknown split {split!r}; eval splits are {', '.join(EVAL_SPLITS)} (the train "
            "stream is train_batches)."
        )


def whole_number_option(name: str, value, minimum: int) -> int:
    """An option that must be a whole number >= `minimum` (it may arrive as text from
    `--workload_options`); a one-line ValueError naming the option otherwise."""
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}.")
    return int(text)
