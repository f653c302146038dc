"""Run one trial of a sweep as a child process and record what happened, in the trial's folder.

The child is `algoperf run --resume_last_run` for that one trial: under torchrun (PyTorch, one
process per GPU) or plain Python (JAX, one process for the node's GPUs). A stop request
(preemption, time limit, cancel) is forwarded to it as SIGTERM: the runner checkpoints at its next
step and exits, and the next attempt resumes there. The trial's folder gets
  launch.json        every attempt: job id, host, start, end, outcome
  launch.log         the child's output, all attempts appended
  trial_failed.json  written when the trial failed (crash, non-finite metrics), with the reason
next to the runner's own `trial_complete.json`.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from algoperf import logs

ATTEMPTS_FILE = "launch.json"
LOG_FILE = "launch.log"
FAILED_FILE = "trial_failed.json"
STOP_SIGNAL = signal.SIGTERM
"""What a stop request sends the child: the runner checkpoints on it (torchrun forwards it)."""
_ERROR_LINE = re.compile(
    r"^(\w+\.)*\w*(Error|Exception|Interrupt|Exit)\b.*|^algoperf \w+: error:.*"
)


@dataclasses.dataclass(frozen=True)
class TrialSpec:
    """Everything needed to run a trial on a node (picklable; sent with each Slurm job)."""

    key: str
    trial_dir: str
    command: tuple[str, ...]
    """The child's argv."""
    env: tuple[tuple[str, str], ...] = ()
    """Variables set for the child on top of the job's environment."""


def trial_command(run_args, framework: str, processes: int, python: str | None = None):
    """The argv that runs one trial: torchrun for PyTorch, plain Python for JAX."""
    from algoperf.launch.torchrun import torchrun_command

    python = python or sys.executable
    if framework == "pytorch":
        return torchrun_command(processes, list(run_args), python=python)
    return [python, "-m", "algoperf", "run", *run_args]


def trial_spec(sweep, one) -> TrialSpec:
    """The spec of one trial (a launch.sweep.Trial) of `sweep`."""
    command = trial_command(one.run_args, sweep.framework, sweep.processes_per_trial)
    return TrialSpec(key=one.key, trial_dir=str(one.trial_dir), command=tuple(command))


def read_json(path: pathlib.Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def attempts(trial_dir: pathlib.Path) -> list[dict]:
    return (read_json(trial_dir / ATTEMPTS_FILE) or {}).get("attempts", [])


class TrialProcess:
    """One attempt of a trial: the child process, its stop request, and its record."""

    def __init__(
        self, spec: TrialSpec, *, job_id: str, cluster: str, extra_env=None, new_session=False
    ):
        """`new_session`: start the child in its own session, so that a terminal's Ctrl-C
        reaches only this process, which stops the child with STOP_SIGNAL (a checkpoint) instead.
        Not in Slurm jobs: Slurm must reach (and, in the end, kill) every process of a job."""
        self.spec = spec
        self.new_session = new_session
        self.trial_dir = pathlib.Path(spec.trial_dir)
        self.job_id, self.cluster = job_id, cluster
        self.extra_env = dict(extra_env or {})
        self.process: subprocess.Popen | None = None
        self.returncode: int | None = None
        self.stop_reason: str | None = None
        self.exited = threading.Event()
        self.outcome: str | None = None
        self._log_offset = 0

    def start(self) -> None:
        """Record the attempt and start the child (its output goes to launch.log)."""
        self.trial_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.trial_dir / LOG_FILE
        with open(log_path, "a") as log:
            self._log_offset = log.tell()
            log.write(f"\n[algoperf launch] attempt on {socket.gethostname()}, job {self.job_id}\n")
        self._record(
            {
                "job_id": self.job_id,
                "cluster": self.cluster,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started_at": time.time(),
            }
        )
        env = {**os.environ, **dict(self.spec.env), **self.extra_env}
        with open(log_path, "a") as log:
            self.process = subprocess.Popen(
                ignoring_warning_signal(self.spec.command),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=self.new_session,
            )
        if self.stop_reason is not None:  # asked to stop while starting
            self.process.send_signal(STOP_SIGNAL)
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        self.returncode = self.process.wait()
        self.exited.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the child; True once it exited. Safe to call from a signal handler."""
        return self.exited.wait(timeout)

    def request_stop(self, reason: str) -> None:
        """Ask the child to checkpoint and stop (idempotent); returns at once."""
        self.stop_reason = self.stop_reason or reason
        if self.process is not None and not self.exited.is_set():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(STOP_SIGNAL)

    def finish(self) -> str:
        """After the child exited: classify, write the markers, close the attempt record.

        Returns:
          done, failed, or interrupted (stopped with a checkpoint; the next attempt resumes).
        """
        if self.outcome is not None:
            return self.outcome
        complete = self.trial_dir / logs.COMPLETE_FILE
        reason = None
        if complete.exists():
            outcome = "done"
            reason = non_finite_metrics(self.trial_dir)
            if reason:
                outcome = "failed"
        elif self.stop_reason is not None or self.returncode == 0:
            # The runner exits 0 without finishing only when a signal asked it to stop.
            outcome = "interrupted"
        else:
            outcome = "failed"
            reason = f"{self._error_line()} (exit code {self.returncode})"
        if outcome == "failed":
            logs.write_json(
                self.trial_dir / FAILED_FILE,
                {
                    "reason": reason,
                    "returncode": self.returncode,
                    "job_id": self.job_id,
                    "log": str(self.trial_dir / LOG_FILE),
                    "at": time.time(),
                },
            )
        self._record(
            {"ended_at": time.time(), "outcome": outcome, "returncode": self.returncode},
            update=True,
        )
        self.outcome = outcome
        return outcome

    def _error_line(self) -> str:
        """The most telling line of this attempt's output (the last exception), for the marker."""
        try:
            with open(self.trial_dir / LOG_FILE, errors="replace") as log:
                log.seek(self._log_offset)
                lines = [line.strip() for line in log.read().splitlines() if line.strip()]
        except OSError:
            return "no log"
        # torchrun's own ChildFailedError only says that a worker failed; the worker's says why.
        errors = [
            line
            for line in lines
            if _ERROR_LINE.match(line) and not line.startswith("torch.distributed.elastic.")
        ]
        return (errors or lines or ["no output"])[-1][:500]

    def _record(self, values: dict, update: bool = False) -> None:
        path = self.trial_dir / ATTEMPTS_FILE
        payload = read_json(path) or {"key": self.spec.key, "attempts": []}
        if update and payload["attempts"]:
            payload["attempts"][-1].update(values)
        else:
            payload["attempts"].append(values)
        logs.write_json(path, payload)


def ignoring_warning_signal(command) -> list[str]:
    """`command` started with Slurm's warning signal ignored (an ignored signal stays ignored
    across exec, down to torchrun's workers).

    Slurm sends it (submitit's USR2) to every process of the job step; its default action would
    kill the trial before it can checkpoint. The job's own process decides how the trial stops
    instead: it forwards STOP_SIGNAL, which the runner handles.
    """
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper().removeprefix("SIG")
    if not name.isalnum() or getattr(signal, f"SIG{name}", None) in (None, STOP_SIGNAL):
        return list(command)
    return ["/bin/sh", "-c", f'trap "" {name}; exec "$@"', "algoperf-trial", *command]


def non_finite_metrics(trial_dir: pathlib.Path) -> str | None:
    """A reason if the trial's last eval row holds a NaN or infinite metric, else None."""
    try:
        with open(trial_dir / logs.EVAL_FILE, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError:
        return None
    if not rows:
        return None
    last = rows[-1]
    for column, text in sorted(last.items()):
        if not column.startswith(("train/", "validation/", "test/")):
            continue
        try:
            value = float(text)
        except (TypeError, ValueError):
            continue
        if not math.isfinite(value):
            return f"non-finite {column} ({text}) at step {last.get('global_step')}"
    return None


def marked_finished(trial_dir: pathlib.Path) -> str | None:
    """done or failed when the trial's folder says so (nothing to run), else None."""
    if (trial_dir / FAILED_FILE).exists():
        return "failed"
    if (trial_dir / logs.COMPLETE_FILE).exists():
        return "done"
    return None
