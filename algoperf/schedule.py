"""When is an eval due? The same answer on every rank, with a collective only now and then.

Under DDP each rank reads its own clock; if ranks disagreed about an eval point, one would enter
the eval's collectives while another ran the next step's, and the job would hang. Upstream
all-reduces the time after every step (two host syncs and a collective per step). We instead
agree (max over ranks) only at *check steps*, scheduled from agreed numbers so every rank picks
the same ones: after a check, the next one comes after half the steps the measured step time
says remain until the eval is due (at least 1, at most `max_interval`). Far from an eval point
checks are rare; near it they happen every step, so an eval starts at most one step late while
the step time is steady, and at most `max_interval` steps late if it suddenly grows. A stop
request (SIGTERM/SIGUSR1) is agreed at the same checks, so checks are also never more than
`max_check_sec` of measured step time apart: Slurm's warning signal comes a bounded time before
the kill, and a rank must notice it well within that. One process needs no agreement and checks
every step.
"""

from __future__ import annotations

from collections.abc import Callable


class EvalSchedule:
    """Decides eval points (and agrees on stop requests) identically across ranks."""

    def __init__(
        self,
        agree_max: Callable[[list[float]], list[float]] | None = None,
        *,
        max_interval: int = 100,
        max_check_sec: float = 5.0,
    ) -> None:
        self._agree = agree_max
        self._max_interval = max_interval
        self._max_check_sec = max_check_sec
        self._next_check = 0
        self._last: tuple[int, float] | None = None
        self.checks = 0
        """How many agreements (collectives) were made; for tests and logs."""

    def due(
        self, *, step: int, now: float, last_eval_time: float, period: float, stop: bool
    ) -> tuple[bool, bool]:
        """(eval due, stop agreed) after step `step` whose end time on this rank is `now`."""
        if self._agree is None:
            return now - last_eval_time >= period, stop
        if step < self._next_check:
            return False, False
        self.checks += 1
        agreed_now, agreed_stop = self._agree([now, 1.0 if stop else 0.0])
        remaining = period - (agreed_now - last_eval_time)
        if remaining <= 0 or agreed_stop > 0:
            self.reset(step)
            return remaining <= 0, agreed_stop > 0
        interval = 1
        if self._last is not None and step > self._last[0]:
            step_time = (agreed_now - self._last[1]) / (step - self._last[0])
            if step_time > 0:
                interval = int(min(remaining / 2, self._max_check_sec) / step_time)
        self._last = (step, agreed_now)
        self._next_check = step + min(max(interval, 1), self._max_interval)
        return False, False

    def reset(self, step: int) -> None:
        """After an eval (whose time must not count as step time), check again next step."""
        self._last = None
        self._next_check = step + 1
