"""Training figures beside the eval metrics: step time, throughput, device memory and MFU.

Figures are read from the loop's own bookkeeping (global step, accumulated submission time): no
device sync or per-step work is added; the loop's per-step hook costs one comparison until a
reading is due. Readings go to the progress line and the sinks (algoperf/sinks.py); docs/rules.md,
"Observability", says what each figure is.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

SAMPLE_INTERVAL_S = 10.0
"""Wall seconds between two readings written to the sinks (each eval writes one too)."""
FLOPS_EXAMPLES = 2
"""Examples in the fake batch whose forward pass is counted for MFU."""
TRAIN_FLOPS_PER_FORWARD = 3
"""A training step's FLOPs as a multiple of the forward pass's (backward ~ 2x forward)."""

STEP_TIME = "perf/step_time_s"
EXAMPLES_PER_S = "perf/examples_per_s"
TOKENS_PER_S = "perf/tokens_per_s"
MFU = "perf/mfu"
DEVICE_MEMORY = "perf/device_memory_peak_gib"
HOST_RSS = "perf/host_rss_gib"

# Dense (no sparsity) peak TFLOP/s per GPU, from NVIDIA's datasheets, by matmul precision.
# Searched in order; the first pattern found in the device's name wins.
PEAK_TFLOPS: tuple[tuple[str, Mapping[str, float]], ...] = (
    (r"\bH[12]00\b.*\bNVL\b", {"bf16": 835.5, "tf32": 417.5, "fp32": 60.0}),
    (r"\bH100\b.*\bPCIe\b", {"bf16": 756.0, "tf32": 378.0, "fp32": 51.2}),
    (r"\bG?H[12]00\b", {"bf16": 989.4, "tf32": 494.7, "fp32": 66.9}),  # SXM, GH200
    (r"\bA100\b", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
)

_PROBES = {"pytorch": "algoperf.torch.telemetry", "jax": "algoperf.jax.telemetry"}


def peak_flops(device_name: str | None, precision: str) -> float | None:
    """Peak dense FLOP/s of one device of this name at `precision` (`bf16`, `tf32`, `fp32`),
    or None for a CPU or a device not in `PEAK_TFLOPS`."""
    if not device_name:
        return None
    for pattern, peaks in PEAK_TFLOPS:
        if re.search(pattern, device_name):
            return peaks[precision] * 1e12
    return None


@functools.cache
def _say_no_peak(device_name: str) -> None:
    log.warning(
        "MFU is not reported: no peak FLOP/s is known for %r (PEAK_TFLOPS in "
        "algoperf/telemetry.py lists the known GPUs).",
        device_name,
    )


def load_probe(framework: str, backend) -> Any:
    """The framework's device probe (`algoperf/torch/telemetry.py`, `algoperf/jax/telemetry.py`):
    `device_name`, `precision(params)`, `memory()`, `forward_flops_per_example(...)`."""
    return importlib.import_module(_PROBES[framework]).make_probe(backend)


@functools.cache
def _process():
    import psutil

    return psutil.Process()


def host_rss_gib() -> float:
    """This process's resident set size in GiB."""
    return _process().memory_info().rss / 2**30


def train_flops_per_example(probe, workload, params, model_state) -> float | None:
    """Training FLOPs per example: the forward pass on a fake batch, counted by the framework
    (FlopCounterMode; XLA's cost analysis), times `TRAIN_FLOPS_PER_FORWARD`. None when the
    framework cannot count it."""
    forward = probe.forward_flops_per_example(workload, params, model_state, FLOPS_EXAMPLES)
    return None if forward is None else forward * TRAIN_FLOPS_PER_FORWARD


class Meter:
    """Figures over the window since its previous reading (each consumer holds its own)."""

    def __init__(
        self,
        *,
        global_batch_size: int,
        memory: Callable[[], Mapping[str, float]],
        tokens_per_example: int | None = None,
        train_flops_per_example: float | None = None,
        peak_flops_total: float | None = None,
        start_step: int = 0,
        start_time: float = 0.0,
    ) -> None:
        self.global_batch_size = global_batch_size
        self.memory = memory
        self.tokens_per_example = tokens_per_example
        self.flops_per_s_per_example = None
        if train_flops_per_example and peak_flops_total:
            self.flops_per_s_per_example = train_flops_per_example / peak_flops_total
        self._step, self._time = start_step, start_time

    @property
    def last_step(self) -> int:
        """The step of the last reading that had steps in its window."""
        return self._step

    def read(self, step: int, submission_time: float) -> dict[str, float]:
        """Memory now, and step time, throughput and MFU since the last reading (left out
        when no step was taken since)."""
        figures = dict(self.memory())
        steps, seconds = step - self._step, submission_time - self._time
        if steps > 0 and seconds > 0:
            step_time = seconds / steps
            examples_per_s = self.global_batch_size / step_time
            figures[STEP_TIME] = step_time
            figures[EXAMPLES_PER_S] = examples_per_s
            if self.tokens_per_example:
                figures[TOKENS_PER_S] = examples_per_s * self.tokens_per_example
            if self.flops_per_s_per_example is not None:
                figures[MFU] = examples_per_s * self.flops_per_s_per_example
            self._step, self._time = step, submission_time
        return figures


def _si(value: float) -> str:
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.1f}{suffix}"
    return f"{value:.1f}"


def describe(figures: Mapping[str, float]) -> str:
    """The figures as the progress line shows them, e.g. `4.1 ms/step, 31.2k ex/s | MFU 12.0%
    | GPU mem 1.23 GiB peak`; '' when there are none."""
    parts = []
    if STEP_TIME in figures:
        rate = f"{figures[STEP_TIME] * 1e3:.1f} ms/step, {_si(figures[EXAMPLES_PER_S])} ex/s"
        if TOKENS_PER_S in figures:
            rate += f", {_si(figures[TOKENS_PER_S])} tok/s"
        parts.append(rate)
    if MFU in figures and math.isfinite(figures[MFU]):
        parts.append(f"MFU {figures[MFU] * 100:.1f}%")
    if DEVICE_MEMORY in figures:
        parts.append(f"GPU mem {figures[DEVICE_MEMORY]:.2f} GiB peak")
    elif HOST_RSS in figures:
        parts.append(f"RSS {figures[HOST_RSS]:.2f} GiB")
    return " | ".join(parts)


class Monitor:
    """The loop's per-step hook and the eval hook: readings for the progress line (at its
    rate) and for the sinks (every `sample_interval_s` and at every eval)."""

    def __init__(self, *, progress, sinks, make_meter: Callable[[], Meter], sample_interval_s=None):
        self.progress, self.sinks = progress, sinks
        self._line_meter, self._sink_meter = make_meter(), make_meter()
        self._sample_interval_s = sample_interval_s or SAMPLE_INTERVAL_S
        self._next_line = 0.0 if progress.enabled else math.inf
        self._next_sample = 0.0 if sinks else math.inf
        self._next = min(self._next_line, self._next_sample)

    def step(self, state, now: float) -> None:
        if now < self._next:  # every step but the few with a reading due: one comparison
            return
        step, seconds = state.global_step, state.accumulated_submission_time
        if now >= self._next_line:
            self._next_line = now + self.progress.interval_s
            self.progress.show(state, describe(self._line_meter.read(step, seconds)))
        if now >= self._next_sample:
            self._next_sample = now + self._sample_interval_s
            if step > self._sink_meter.last_step:  # (an eval at this step just wrote one)
                self.sinks.scalars(self._sink_meter.read(step, seconds), step)
                self.sinks.flush()
        self._next = min(self._next_line, self._next_sample)

    def evaluated(self, row: Mapping[str, Any], metric: str) -> None:
        """After an eval's row is logged: a reading at its step, then the eval line."""
        if self.sinks:
            step = row["global_step"]
            self.sinks.scalars(
                self._sink_meter.read(step, row["accumulated_submission_time"]), step
            )
            self.sinks.flush()
        self.progress.evaluated(row, metric)

    def close(self) -> None:
        self.progress.close()


def meter_factory(
    *, framework, backend, workload, variables, global_batch_size: int, state, primary: bool
) -> Callable[[], Meter]:
    """What makes a trial's Meters: its device probe, and on a GPU of known peak its training
    FLOPs per example (counted once here, before the loop: untimed, on every rank alike)."""
    probe = load_probe(framework, backend)
    peak = flops = None
    if probe.device_name is not None:
        precision = probe.precision(variables.params)
        peak = peak_flops(probe.device_name, precision)
        if peak is None and primary:
            _say_no_peak(probe.device_name)
    if peak is not None:
        try:
            flops = train_flops_per_example(
                probe, workload, variables.params, variables.model_state
            )
        except Exception as error:  # noqa: BLE001 - a figure, never a reason to stop a trial
            if primary:
                log.warning("MFU is not reported: counting the model's FLOPs failed: %s", error)
    spec = getattr(workload, "spec", None)
    return functools.partial(
        Meter,
        global_batch_size=global_batch_size,
        memory=probe.memory,
        tokens_per_example=getattr(spec, "tokens_per_example", None),
        train_flops_per_example=flops,
        peak_flops_total=None if peak is None else peak * backend.device_count,
        start_step=state.global_step if state is not None else 0,
        start_time=state.accumulated_submission_time if state is not None else 0.0,
    )
