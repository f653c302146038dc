"""The progress line: step, submission time, budget left, throughput, memory, last eval.

Rate-limited and cheap: `algoperf.telemetry.Monitor` decides when a line is due and passes the
figures (step time, examples/s, tokens/s, MFU, memory) as text.
"""

from __future__ import annotations

import shutil
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

    def step(self, state, now: float, figures: str = "") -> None:
        """A line if one is due (rate-limited here; the Monitor calls `show` directly)."""
        if not self.enabled or now < self._next:
            return
        self._next = now + self.interval_s
        self.show(state, figures)

    def evaluated(self, row: dict, metric: str) -> None:
        value = row.get(f"validation/{metric}")
        if value is not None:
            self.last_eval = f"validation/{metric} {value:.4f} (target {self.target})"
        if self.enabled:
            line = (
                f"eval at step {row['global_step']}: "
                f"{self.last_eval}, submission time {row['score']:.1f}s"
            )
            if self.tty:  # over the progress line, to its full width
                line = "\r" + line.ljust(shutil.get_terminal_size((200, 24)).columns - 1)
            print(line, file=self.stream, flush=True)

    def show(self, state, figures: str = "") -> None:
        """Print the line now, with `figures` (telemetry.describe) after the budget."""
        if not self.enabled:
            return
        left = max(self.budget_sec - state.accumulated_submission_time, 0.0)
        line = (
            f"step {state.global_step} | submission {state.accumulated_submission_time:.1f}s"
            f" | budget left {left:.1f}s{' | ' + figures if figures else ''}"
            f" | last eval: {self.last_eval}"
        )
        if self.tty:
            width = shutil.get_terminal_size((200, 24)).columns - 1
            print("\r" + line[:width].ljust(width), end="", file=self.stream, flush=True)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=self.stream, flush=True)


def timestamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")
