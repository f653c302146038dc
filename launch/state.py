"""Where a sweep stands, from its files (+ Slurm's queue where it has jobs): status, cancel, and
which trials still need to run.

Job ids are kept in <sweep>/_launch/jobs.json (one entry per launch); each trial's attempts are in
its own folder (launch/trial.py).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from algoperf import checkpoint, console, logs
from algoperf.launch import trial as trial_files
from algoperf.launch.sweep import Sweep, Trial

NODE_LOCAL_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run")
"""Folders that are private to each machine; compute nodes other than this one cannot see them."""
JOBS_FILE = "jobs.json"
LOCAL_FILE = "local_run.json"
"""Written while `algoperf launch local` runs the sweep: its host and pid (for cancel)."""
RUNNING_STATES = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SUSPENDED", "SIGNALING"}
QUEUED_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING"}


class LaunchError(Exception):
    """A user-facing problem with a launch; the message is one line that says what to do."""


def run_tool(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a Slurm client tool; a missing tool or a hang becomes a LaunchError."""
    if shutil.which(argv[0]) is None:
        raise LaunchError(
            f"no `{argv[0]}` on PATH: run this on a Slurm login node (or use `algoperf launch "
            "local` to run the sweep on this machine)."
        )
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LaunchError(
            f"`{' '.join(argv)}` did not answer in {timeout:g} s: is Slurm up?"
        ) from None


def first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "no output"


def queue() -> dict[str, str]:
    """This user's Slurm jobs (array tasks one by one): job id -> state."""
    result = run_tool(["squeue", "--me", "-h", "-r", "-o", "%i %T"])
    if result.returncode != 0:
        raise LaunchError(f"Slurm is not reachable: squeue says {first_line(result.stderr)!r}.")
    jobs = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            jobs[parts[0]] = parts[1]
    return jobs


def read_jobs(sweep: Sweep) -> dict[str, dict]:
    """The latest job of each trial: key -> {"job_id", "cluster", "submitted_at"}."""
    payload = trial_files.read_json(sweep.launch_dir / JOBS_FILE) or {}
    latest = {}
    for launch in payload.get("launches", []):
        for key, job_id in launch.get("jobs", {}).items():
            latest[key] = {"job_id": job_id, "cluster": launch["cluster"], "at": launch["at"]}
    return latest


def record_jobs(sweep: Sweep, cluster: str, jobs: dict[str, str]) -> None:
    path = sweep.launch_dir / JOBS_FILE
    payload = trial_files.read_json(path) or {"launches": []}
    payload["launches"].append({"at": time.time(), "cluster": cluster, "jobs": jobs})
    logs.write_json(path, payload)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _here(host: str) -> bool:
    return host in (socket.gethostname(), socket.gethostname().split(".")[0], "localhost")


@dataclasses.dataclass
class TrialStatus:
    key: str
    state: str
    """done, running, failed or pending."""
    time_used_s: float
    step: int | None
    job_id: str | None
    note: str


class QueueView:
    """Slurm's queue, asked once and only when a trial has a Slurm job."""

    def __init__(self):
        self._states: dict[str, str] | None = None
        self.error: str | None = None

    def state(self, job_id: str | None, cluster: str | None) -> str | None:
        if job_id is None or cluster != "slurm":
            return None
        if self._states is None:
            try:
                self._states = queue()
            except LaunchError as error:  # e.g. looking at a copied folder without Slurm
                self._states, self.error = {}, str(error)
        return self._states.get(job_id)


def trial_status(trial: Trial, job: dict | None, view: QueueView, now: float) -> TrialStatus:
    folder = trial.trial_dir
    attempts = trial_files.attempts(folder)
    last = attempts[-1] if attempts else {}
    # The newest of: the last submission (maybe still queued) and the last attempt.
    if job is not None and (not last or job["at"] > last.get("started_at", 0)):
        job_id, cluster = job["job_id"], job["cluster"]
    else:
        job_id, cluster = last.get("job_id"), last.get("cluster")
    open_attempt = bool(last) and "ended_at" not in last
    queued = view.state(job_id, cluster)
    alive = queued in RUNNING_STATES or (
        open_attempt
        and cluster != "slurm"
        and _here(last.get("host", ""))
        and _pid_alive(int(last.get("pid", 0)))
    )
    used = 0.0
    for attempt in attempts:
        end = attempt.get("ended_at")
        if end is None:
            end = now if alive and attempt is last else _log_time(folder, attempt)
        used += max(0.0, end - attempt.get("started_at", end))
    finished = trial_files.marked_finished(folder)
    complete = trial_files.read_json(folder / logs.COMPLETE_FILE) or {}
    step = complete.get("global_step")
    if step is None:
        latest = checkpoint.latest(folder)
        step = int(latest.name.removeprefix(checkpoint.PREFIX)) if latest else None
    if finished == "failed":
        note = (trial_files.read_json(folder / trial_files.FAILED_FILE) or {}).get("reason", "")
        return TrialStatus(trial.key, "failed", used, step, job_id, note)
    if finished == "done":
        return TrialStatus(trial.key, "done", used, step, job_id, complete.get("stop_reason", ""))
    if alive:
        return TrialStatus(trial.key, "running", used, step, job_id, "")
    if queued in QUEUED_STATES:
        return TrialStatus(trial.key, "pending", used, step, job_id, f"queued ({queued.lower()})")
    note = "not started"
    if attempts:
        where = f"step {step}" if step is not None else "its start"
        note = f"stopped; resumes from {where} at the next launch"
    return TrialStatus(trial.key, "pending", used, step, job_id, note)


def _log_time(folder: pathlib.Path, attempt: dict) -> float:
    """End of an attempt that never closed its record (killed): the log's last write."""
    try:
        return max((folder / trial_files.LOG_FILE).stat().st_mtime, attempt.get("started_at", 0))
    except OSError:
        return attempt.get("started_at", 0.0)


def sweep_status(sweep: Sweep) -> list[TrialStatus]:
    jobs = read_jobs(sweep)
    view = QueueView()
    now = time.time()
    rows = [trial_status(trial, jobs.get(trial.key), view, now) for trial in sweep.trials()]
    if view.error:
        console.warn(f"{view.error} Job states come from the files only.", tag="algoperf launch")
    return rows


def to_run(sweep: Sweep, *, retry_failed: bool) -> tuple[list[Trial], list[TrialStatus]]:
    """The trials a launch should start (neither finished nor running/queued), and the rest."""
    start, skip = [], []
    for trial, status in zip(sweep.trials(), sweep_status(sweep)):
        retry = (
            status.state == "failed"
            and retry_failed
            and not (trial.trial_dir / logs.COMPLETE_FILE).exists()
        )
        if status.state == "pending" and not status.note.startswith("queued") or retry:
            start.append(trial)
        else:
            skip.append(status)
    return start, skip


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def format_status(rows: list[TrialStatus]) -> str:
    width = max([len(row.key) for row in rows] + [5])
    job_width = max([len(row.job_id or "-") for row in rows] + [3])
    lines = [
        f"{'trial':{width}}  {'state':8} {'time used':>9} {'step':>7}  {'job':{job_width}}  note"
    ]
    for row in rows:
        step = "-" if row.step is None else str(row.step)
        lines.append(
            f"{row.key:{width}}  {row.state:8} {format_duration(row.time_used_s):>9} "
            f"{step:>7}  {row.job_id or '-':{job_width}}  {row.note}"
        )
    counts = {state: sum(row.state == state for row in rows) for state in STATES}
    lines.append(
        f"{len(rows)} trials: " + ", ".join(f"{count} {state}" for state, count in counts.items())
    )
    return "\n".join(lines)


STATES = ("done", "running", "failed", "pending")


def cancel(sweep: Sweep) -> list[str]:
    """Stop the sweep's queued and running jobs; returns what was signalled.

    Running trials checkpoint on the way out; the next launch resumes them.
    """
    cancelled = []
    jobs = read_jobs(sweep)
    slurm_ids = sorted(job["job_id"] for job in jobs.values() if job["cluster"] == "slurm")
    if slurm_ids:
        live = queue()
        ids = [job_id for job_id in slurm_ids if job_id in live]
        if ids:
            result = run_tool(["scancel", *ids])
            if result.returncode != 0:
                raise LaunchError(f"scancel failed: {first_line(result.stderr)}")
            cancelled += [f"Slurm job {job_id}" for job_id in ids]
    local = trial_files.read_json(sweep.launch_dir / LOCAL_FILE)
    pids = set()
    if local and _here(local.get("host", "")) and _pid_alive(int(local["pid"])):
        pids.add(int(local["pid"]))
    for trial in sweep.trials():
        attempts = trial_files.attempts(trial.trial_dir)
        last = attempts[-1] if attempts else {}
        if (
            last
            and "ended_at" not in last
            and last.get("cluster") != "slurm"
            and _here(last.get("host", ""))
            and _pid_alive(int(last.get("pid", 0)))
        ):
            pids.add(int(last["pid"]))
    for pid in sorted(pids):
        os.kill(pid, signal.SIGTERM)
        cancelled.append(f"process {pid} on this machine")
    return cancelled


def cluster_nodes(partition: str | None) -> tuple[str, list[str]]:
    """The partition a job goes to (the default when None) and its nodes.

    Raises:
      LaunchError: no Slurm client tools, Slurm does not answer, or the partition is unknown.
    """
    for tool in ("sbatch", "sinfo", "squeue", "scontrol"):
        if shutil.which(tool) is None:
            raise LaunchError(
                f"no `{tool}` on PATH: run this on a Slurm login node, or run the sweep on this "
                "machine with `algoperf launch local`."
            )
    result = run_tool(["sinfo", "-h", "-o", "%P"], timeout=30)
    if result.returncode != 0:
        raise LaunchError(f"Slurm is not reachable: sinfo says {first_line(result.stderr)!r}.")
    names = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    defaults = [name.rstrip("*") for name in names if name.endswith("*")]
    known = sorted({name.rstrip("*") for name in names})
    if partition is None:
        if not defaults:
            raise LaunchError(
                f"this cluster has no default partition: set partition (one of {known})."
            )
        partition = defaults[0]
    elif partition not in known:
        raise LaunchError(
            f"unknown Slurm partition {partition!r}; this cluster has: {', '.join(known)}."
        )
    result = run_tool(["sinfo", "-h", "-N", "-p", partition, "-o", "%N"], timeout=30)
    nodes = sorted({line.strip() for line in result.stdout.splitlines() if line.strip()})
    return partition, nodes


def check_experiment_dir(path: pathlib.Path, nodes: list[str]) -> None:
    """Refuse an experiment dir the compute nodes cannot write.

    A folder under /tmp (or another node-local folder) is only accepted when every node of the
    partition is this machine; otherwise each node would write its own private copy. The folder
    (or its nearest existing parent) must be a writable directory here; that it is shared with
    the nodes cannot be checked from here, and is the user's to ensure.

    Raises:
      LaunchError: with the reason and the fix.
    """
    path = pathlib.Path(path).expanduser().resolve()
    remote = [node for node in nodes if not _here(node)]
    for local in NODE_LOCAL_DIRS:
        if remote and (path == pathlib.Path(local) or pathlib.Path(local) in path.parents):
            raise LaunchError(
                f"experiment_dir {path} is under {local}, which is private to each machine; the "
                f"compute nodes ({', '.join(remote[:3])}{', ...' if len(remote) > 3 else ''}) "
                "cannot write it: use a folder on a shared filesystem."
            )
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise LaunchError(f"experiment_dir {path}: {existing} is a file, not a folder.")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".algoperf-write-probe-"):
            pass
    except OSError as error:
        raise LaunchError(
            f"experiment_dir {path} is not writable ({existing}: {error.strerror}): choose a "
            "folder you can write on a filesystem the compute nodes share."
        ) from None
