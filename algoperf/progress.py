"""The progress line: step, submission time, budget left, last eval. Rate-limited and cheap."""

from __future__ import annotations

import sys
import time


class Progress:
    """Prints at most every `interval_s`; on a terminal it rewrites one line in place."""

    def __init__(self, *, enabled: bool, budget_sec: float, target: str, interval_s: float = 0.5):
        self.enabled = enabled
        self.budget_sec = budget_sec
        self.target = target
        self.stream = sys.stderr
        self.tty = self.stream.isatty()
        self.interval_s = interval_s if self.tty else 30.0
        self._next = 0.0
        self.last_eval = "no eval yet"

    def step(self, state, now: float) -> None:
        if not self.enabled or now < self._next:
            return
        self._next = now + self.interval_s
        self._print(state)

    def evaluated(self, row: dict, metric: str) -> None:
        value = row.get(f"validation/{metric}")
        if value is not None:
            self.last_eval = f"validation/{metric} {value:.4f} (target {self.target})"
        if self.enabled:
            prefix = "\r" if self.tty else ""
            print(
                f"{prefix}eval at step {row['global_step']}: "
                f"{self.last_eval}, submission time {row['score']:.1f}s" + " " * 10,
                file=self.stream,
                flush=True,
            )

    def _print(self, state) -> None:
        left = max(self.budget_sec - state.accumulated_submission_time, 0.0)
        line = (
            f"step {state.global_step} | submission {state.accumulated_submission_time:.1f}s"
            f" | budget left {left:.1f}s | last eval: {self.last_eval}"
        )
        if self.tty:
            print("\r" + line[:150], end="", file=self.stream, flush=True)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=self.stream, flush=True)


def timestamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")
