"""A background thread that produces the next batches while the training step runs.

Framework-free: the caller passes the conversion (numpy -> tensors) to run in the thread too.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_ITEM, _END, _ERROR = range(3)
# How often a producer blocked on a full queue checks whether the consumer has gone away.
_POLL_S = 0.1


def _put(entries: queue.Queue, stop: threading.Event, entry: tuple[int, Any]) -> bool:
    while not stop.is_set():
        try:
            entries.put(entry, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _produce(source: Iterator, convert, entries: queue.Queue, stop: threading.Event) -> None:
    try:
        for item in source:
            if convert is not None:
                item = convert(item)
            if not _put(entries, stop, (_ITEM, item)):
                return
        _put(entries, stop, (_END, None))
    except BaseException as error:  # handed to the consumer, re-raised by its next()
        _put(entries, stop, (_ERROR, error))


class Prefetcher(Iterator):
    """Iterate over `convert(x) for x in source`, computed `depth` items ahead in a thread.

    The order is the source's (one producer, FIFO), so a stream stays deterministic. An
    exception in the source or in `convert` is re-raised by the `next` that would have returned
    that item. `close()` (or garbage collection) stops the thread.

    Numpy and torch release the GIL in their kernels, so the producer overlaps the step's
    compute, and in DDP the time a rank waits in the gradient all-reduce.
    """

    def __init__(
        self,
        source: Iterable,
        convert: Callable[[Any], Any] | None = None,
        *,
        depth: int = 2,
        name: str = "algoperf-prefetch",
    ) -> None:
        if depth < 1:
            raise ValueError(f"Prefetcher: depth must be >= 1, got {depth}.")
        self._source = iter(source)
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        # The thread gets no reference to `self`, so an abandoned Prefetcher is collected and
        # its finaliser stops the thread.
        self._thread = threading.Thread(
            target=_produce,
            args=(self._source, convert, self._queue, self._stop),
            name=name,
            daemon=True,
        )
        self._thread.start()

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> Any:
        if self._finished:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == _ITEM:
            return value
        self._finished = True
        self._thread.join()
        if kind == _ERROR:
            raise value
        raise StopIteration

    def close(self) -> None:
        """Stop producing and let the thread end (items already produced are dropped)."""
        self._finished = True
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10 * _POLL_S)

    def __del__(self) -> None:
        # Never join from a finaliser: just tell the thread to stop.
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
