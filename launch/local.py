"""`algoperf launch local`: a sweep's missing trials on this machine, K at a time, through torchrun.

Each trial gets its own `gpus_per_trial` GPUs (CUDA_VISIBLE_DEVICES). Ctrl-C, SIGTERM or
`algoperf launch cancel` stop it: running trials checkpoint, and the next launch resumes them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess

from algoperf import console, logs
from algoperf.launch import state, trial
from algoperf.launch.state import LaunchError
from algoperf.launch.sweep import Sweep, Trial


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES, else what nvidia-smi lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [device for device in visible.split(",") if device.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return []
    return [str(i) for i, line in enumerate(result.stdout.splitlines()) if line.startswith("GPU")]


def gpu_slots(gpus_per_trial: int, parallel: int) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES of each of the `parallel` slots (None: CPU, leave it alone).

    Raises:
      LaunchError: fewer GPUs here than parallel x gpus_per_trial.
    """
    if gpus_per_trial == 0:
        return [None] * parallel
    gpus = visible_gpus()
    if len(gpus) < gpus_per_trial * parallel:
        raise LaunchError(
            f"{parallel} trial(s) side by side with {gpus_per_trial} GPU(s) each need "
            f"{gpus_per_trial * parallel} GPUs; this machine shows {len(gpus)}. Lower --parallel "
            "or pass --gpus_per_trial 0 to run on the CPU."
        )
    return [",".join(gpus[i * gpus_per_trial : (i + 1) * gpus_per_trial]) for i in range(parallel)]


class LocalRun:
    """Runs trials in up to `parallel` slots; a stop signal stops them all (with checkpoints)."""

    def __init__(self, sweep: Sweep, parallel: int):
        self.sweep = sweep
        self.parallel = parallel
        self.slots = gpu_slots(sweep.gpus_per_trial, parallel)
        self.stop_signal: str | None = None
        self.outcomes: dict[str, str] = {}

    def _on_signal(self, signum, frame) -> None:
        del frame
        self.stop_signal = signal.Signals(signum).name
        console.say(
            f"{self.stop_signal}: stopping the running trials (they checkpoint); rerun the same "
            "command to resume.",
            tag="algoperf launch",
            newline_first=True,
            even_if_quiet=True,
        )
        for process in self._active.values():
            process.request_stop(self.stop_signal)

    def run(self, trials: list[Trial]) -> dict[str, str]:
        """Run `trials`; returns key -> done, failed or interrupted."""
        pending = list(trials)
        self._active: dict[int, trial.TrialProcess] = {}
        job_id = f"local:{socket.gethostname()}:{os.getpid()}"
        marker = self.sweep.launch_dir / state.LOCAL_FILE
        logs.write_json(marker, {"host": socket.gethostname(), "pid": os.getpid()})
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while pending or self._active:
                free = [slot for slot in range(self.parallel) if slot not in self._active]
                while pending and free and self.stop_signal is None:
                    slot, one = free.pop(0), pending.pop(0)
                    devices = self.slots[slot]
                    env = {} if devices is None else {"CUDA_VISIBLE_DEVICES": devices}
                    process = trial.TrialProcess(
                        trial.trial_spec(self.sweep, one),
                        job_id=job_id,
                        cluster="local",
                        extra_env=env,
                        new_session=True,
                    )
                    console.say(f"{one.key}: started", tag="algoperf launch")
                    process.start()
                    self._active[slot] = process
                if self.stop_signal is not None:
                    pending.clear()
                for slot, process in list(self._active.items()):
                    if process.wait(0.2):
                        outcome = process.finish()
                        self.outcomes[process.spec.key] = outcome
                        console.say(f"{process.spec.key}: {outcome}", tag="algoperf launch")
                        del self._active[slot]
        finally:
            for process in self._active.values():  # only after an unexpected error
                process.request_stop("launcher error")
                process.wait(60)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            marker.unlink(missing_ok=True)
        return self.outcomes
