"""Submit a sweep's trials to Slurm with submitit: one job per trial, as one job array.

Each job is one task on one node that runs its trial as a child process: torchrun with one
process per GPU for PyTorch, one Python process for the node's GPUs for JAX (launch/trial.py).
torchrun inside the job, rather than one Slurm task per GPU with submitit's process-group
environment, keeps one supervisor per trial (it forwards the stop signal, waits for the
checkpoint and records the outcome once), lets torchrun pick a free rendezvous port when several
jobs share a node, tears down every rank when one dies, and is the same code path as
`algoperf launch local`.

Preemption and time limits: submitit's checkpoint protocol. Slurm's warning signal (USR2,
`signal_delay_s` before the limit) reaches `TrialJob.checkpoint`, which asks the trial to
checkpoint (SIGTERM to the child), waits for it, and lets submitit requeue the job. A job that
Slurm itself requeues or cancels (`scontrol requeue`, preemption in REQUEUE mode, `scancel`) gets
SIGTERM: the trial checkpoints and the job leaves. Either way the rerun job calls
`algoperf run --resume_last_run`, which continues from the checkpoint.
"""

from __future__ import annotations

import contextlib
import io
import pathlib
import signal
import sys
import time

import submitit

from algoperf import console
from algoperf.launch import state, trial
from algoperf.launch.state import LaunchError
from algoperf.launch.sweep import Sweep, Trial

SUBMITIT_DIR = "submitit"
TAG = "algoperf launch"


class TrialJob(submitit.helpers.Checkpointable):
    """The callable a job runs: one trial, stopped and requeued through submitit's checkpoint
    protocol. Its state is on disk, so a requeued job needs nothing but the spec."""

    def __init__(self, spec: trial.TrialSpec, stop_timeout_s: float):
        self.spec = spec
        self.stop_timeout_s = stop_timeout_s
        self._process: trial.TrialProcess | None = None

    def __getstate__(self):
        return {"spec": self.spec, "stop_timeout_s": self.stop_timeout_s, "_process": None}

    def __call__(self) -> str:
        finished = trial.marked_finished(pathlib.Path(self.spec.trial_dir))
        if finished is not None:  # e.g. a requeued job whose trial had just ended
            console.say(f"{self.spec.key} is already {finished}.", tag=TAG, stream=sys.stdout)
            return finished
        environment = submitit.JobEnvironment()
        process = trial.TrialProcess(
            self.spec, job_id=environment.job_id, cluster=environment.cluster
        )
        self._process = process
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop_on_signal)
        console.say(f"{self.spec.key}: {' '.join(self.spec.command)}", tag=TAG, stream=sys.stdout)
        process.start()
        while not process.wait(1.0):
            pass
        outcome = process.finish()
        console.say(f"{self.spec.key}: {outcome}", tag=TAG, stream=sys.stdout)
        if outcome == "interrupted":
            # Slurm requeues or cancels this job itself; a result file would say it finished.
            raise SystemExit(f"[{TAG}] {self.spec.key} stopped with a checkpoint.")
        if outcome == "failed":
            reason = trial.read_json(pathlib.Path(self.spec.trial_dir) / trial.FAILED_FILE)
            raise RuntimeError(f"trial {self.spec.key} failed: {(reason or {}).get('reason')}")
        return outcome

    def _stop_on_signal(self, signum, frame) -> None:
        del frame
        if self._process is not None:
            self._process.request_stop(signal.Signals(signum).name)

    def checkpoint(self, *args, **kwargs):
        """Slurm's warning signal (time limit or preemption): checkpoint the trial, requeue."""
        del args, kwargs
        process = self._process
        if process is not None:
            process.request_stop("time limit or preemption")
            if process.wait(self.stop_timeout_s):
                process.finish()
            else:
                console.say(
                    f"{self.spec.key} did not stop within {self.stop_timeout_s:g} s; the rerun "
                    "resumes from its last checkpoint.",
                    tag=TAG,
                    stream=sys.stdout,
                )
        return submitit.helpers.DelayedSubmission(TrialJob(self.spec, self.stop_timeout_s))


def make_executor(sweep: Sweep, cluster: str):
    folder = sweep.launch_dir / SUBMITIT_DIR / "%j"
    executor = submitit.AutoExecutor(
        folder=folder, cluster=cluster, slurm_max_num_timeout=sweep.max_timeouts
    )
    parameters = {
        "name": f"algoperf_{sweep.name}",
        "timeout_min": sweep.time_limit_min,
        "nodes": 1,
        "tasks_per_node": 1,
        "stderr_to_stdout": True,
        "slurm_signal_delay_s": sweep.signal_delay_s,
        "slurm_additional_parameters": {"requeue": True},
    }
    optional = {
        "gpus_per_node": sweep.gpus_per_trial or None,
        "cpus_per_task": sweep.cpus_per_trial,
        "mem_gb": sweep.mem_gb,
        "slurm_partition": sweep.partition,
        "slurm_account": sweep.account,
        "slurm_qos": sweep.qos,
        "slurm_constraint": sweep.constraint,
        "slurm_array_parallelism": sweep.max_parallel,
        "slurm_setup": list(sweep.setup) or None,
    }
    parameters.update({key: value for key, value in optional.items() if value is not None})
    executor.update_parameters(**parameters)
    return executor


def submit(sweep: Sweep, trials: list[Trial], cluster: str = "slurm") -> list:
    """Submit one job per trial (one array when several); returns submitit's job objects."""
    executor = make_executor(sweep, cluster)
    stop_timeout = max(10.0, sweep.signal_delay_s - 15.0)
    jobs = []
    try:
        # (submitit prints sbatch's complaint too; the error below carries it, once)
        with contextlib.redirect_stderr(io.StringIO()), executor.batch():
            for one in trials:
                jobs.append(executor.submit(TrialJob(trial.trial_spec(sweep, one), stop_timeout)))
    except (submitit.core.utils.FailedJobError, OSError) as error:
        raise LaunchError(f"sbatch refused the jobs: {state.first_line(str(error))}") from None
    state.record_jobs(sweep, cluster, {one.key: job.job_id for one, job in zip(trials, jobs)})
    return jobs


def wait_for_queue(job_ids: list[str], poll_s: float = 3.0) -> None:
    """Until none of these Slurm jobs is queued or running (requeued ones count as queued)."""
    while True:
        live = state.queue()
        if not any(job_id in live for job_id in job_ids):
            return
        time.sleep(poll_s)


def wait_for_local(jobs: list, poll_s: float = 1.0) -> None:
    """Until submitit's local jobs have all ended."""
    while not all(job.done() for job in jobs):
        time.sleep(poll_s)
