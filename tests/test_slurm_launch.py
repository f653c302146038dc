"""`algoperf launch slurm` on a real single-node Slurm (tests/slurm_fixture.py): the shared 2-trial
mnist sweep goes through sbatch as a job array; mid-run, one trial is requeued by Slurm
(`scontrol requeue`) and the other gets the time-limit warning (USR2: submitit checkpoints and
requeues); both resume and end with the eval rows of the uninterrupted `launch local` run. Then
the bookkeeping: a rerun submits nothing, a half-finished sweep submits only what is missing and
leaves queued jobs alone, cancel stops a trial with a checkpoint; and the errors for a wrong
partition or a job sbatch refuses."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import sys
import time

import pytest
from slurm_fixture import MAX_STEPS, TRIAL_KEYS, launch, metric_rows, sweep_text, wait_until

from algoperf import checkpoint
from algoperf.launch import state
from algoperf.launch import trial as trial_files

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def worker_pid(experiment_dir: pathlib.Path, trial_index: int) -> int | None:
    """The `algoperf run` process (torchrun's worker) of one trial of this experiment."""
    for proc in pathlib.Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if (
            "algoperf" in argv
            and "--hparam_start_index" in argv
            and "torch.distributed.run" not in argv
            and str(experiment_dir) in argv
            and argv[argv.index("--hparam_start_index") + 1] == str(trial_index)
        ):
            return int(proc.name)
    return None


_PAUSED: list[int] = []  # workers this module paused; any still alive at the end are killed


@pytest.fixture(scope="module", autouse=True)
def _release_paused_workers():
    """A failed assertion between a SIGSTOP and its SIGCONT must not leave a stopped worker
    behind (an orphan once the cluster is gone): kill whatever paused worker is still alive."""
    yield
    for pid in _PAUSED:
        try:
            if b"algoperf" not in pathlib.Path(f"/proc/{pid}/cmdline").read_bytes():
                continue  # gone, and the pid reused
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            pass


def pause_after_checkpoint(experiment_dir: pathlib.Path, trial_dirs: list[pathlib.Path]):
    """As soon as each trial has a checkpoint past step 41, pause its worker (SIGSTOP), so it
    cannot finish before a requeue or cancel lands; Slurm sends SIGCONT before SIGTERM when it
    kills a job, so the worker goes on, checkpoints and stops. Returns the workers' pids."""
    pids = {}

    def poll() -> bool:
        for index, folder in enumerate(trial_dirs):
            latest = checkpoint.latest(folder)
            step = int(latest.name.removeprefix(checkpoint.PREFIX)) if latest else 0
            if index in pids or step < 41:
                continue
            assert step < MAX_STEPS, f"{folder} finished before it could be paused"
            pid = worker_pid(experiment_dir, int(folder.name.removeprefix("trial_")) - 1)
            assert pid is not None, f"no worker process found for {folder}"
            _PAUSED.append(pid)
            os.kill(pid, signal.SIGSTOP)
            pids[index] = pid
        return len(pids) == len(trial_dirs)

    assert wait_until(poll, 300, interval=0.05)
    return [pids[index] for index in range(len(trial_dirs))]


def sigterm_pending(pid: int) -> bool:
    status = pathlib.Path(f"/proc/{pid}/status").read_text()
    masks = [int(line.split()[1], 16) for line in status.splitlines() if "Pnd:" in line]
    return any(mask & (1 << (signal.SIGTERM - 1)) for mask in masks)


def sweep_jobs_gone(sweep_dir: pathlib.Path) -> bool:
    jobs = json.loads((sweep_dir / "_launch" / state.JOBS_FILE).read_text())
    ids = {job for entry in jobs["launches"] for job in entry["jobs"].values()}
    return not ids & set(state.queue())


@pytest.fixture(scope="module")
def slurm_sweep(slurm_cluster, mnist_dir, tmp_path_factory):
    """The shared sweep through sbatch. After their step-41 checkpoints, trial 1 is requeued by
    Slurm (`scontrol requeue`, as preemption does) and trial 2 gets the time-limit warning
    (USR2, submitit's checkpoint-and-requeue); both resume."""
    root = tmp_path_factory.mktemp("slurm_sweep")
    sweep = root / "sweep.toml"
    sweep.write_text(sweep_text(mnist_dir, root / "exp"))
    submitted = launch("slurm", str(sweep))
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    sweep_dir = root / "exp" / "mini"
    trials = [sweep_dir / key for key in TRIAL_KEYS]
    pids = pause_after_checkpoint(root / "exp", trials)
    running = launch("status", str(sweep_dir))
    job_ids = [trial_files.attempts(folder)[-1]["job_id"] for folder in trials]
    requeued_at = time.time()
    slurm_cluster.run("scontrol", "requeue", job_ids[0])
    slurm_cluster.run("scancel", "--signal=USR2", job_ids[1])
    # USR2 brings no SIGCONT: go on once the job has forwarded SIGTERM to the paused worker.
    assert wait_until(lambda: sigterm_pending(pids[1]), 60, interval=0.05)
    os.kill(pids[1], signal.SIGCONT)
    seen = {}  # (trial, event) -> seconds after the requeue / warning

    def progress() -> bool:
        for name, folder in zip(("scontrol_requeue", "usr2_warning"), trials):
            attempts = trial_files.attempts(folder)
            if "ended_at" in attempts[0]:
                seen.setdefault((name, "stopped_s"), attempts[0]["ended_at"] - requeued_at)
            if len(attempts) == 2:
                seen.setdefault((name, "job_restarted_s"), attempts[1]["started_at"] - requeued_at)
            if "[algoperf] resuming" in (folder / trial_files.LOG_FILE).read_text():
                seen.setdefault((name, "resumed_s"), time.time() - requeued_at)
        return len(seen) == 6

    assert wait_until(progress, 300, interval=0.1), seen
    figures = {f"{name} {event}": round(value, 1) for (name, event), value in seen.items()}
    assert wait_until(lambda: sweep_jobs_gone(sweep_dir), 600), slurm_cluster.run("squeue").stdout
    print(f"\n[slurm requeue] {figures}", file=sys.stderr)
    return {
        "sweep": sweep,
        "dir": sweep_dir,
        "job_ids": job_ids,
        "submitted": submitted,
        "running": running,
        "figures": figures,
    }


def test_requeued_trial_resumes_and_matches_the_uninterrupted_run(
    slurm_sweep, local_reference, slurm_cluster
):
    sweep_dir = slurm_sweep["dir"]
    # one job array, a task per trial
    assert re.search(r"submitted 2 job\(s\): (\d+)_0, \1_1", slurm_sweep["submitted"].stderr)
    assert "running" in slurm_sweep["running"].stdout
    for key, job_id in zip(TRIAL_KEYS, slurm_sweep["job_ids"]):
        trial_dir = sweep_dir / key
        attempts = trial_files.attempts(trial_dir)
        assert [a["outcome"] for a in attempts] == ["interrupted", "done"], key
        assert {a["job_id"] for a in attempts} == {job_id}
        log = (trial_dir / "launch.log").read_text()
        (step,) = re.findall(r"resuming \S+ at step (\d+)", log)
        assert 41 <= int(step) < MAX_STEPS
        # It stopped with a fresh checkpoint (not killed and sent back to its last eval's).
        assert f"stop requested: checkpoint saved at step {step};" in log, log[-3000:]
        assert metric_rows(trial_dir) == local_reference["rows"][key], key
        assert (trial_dir / "meta_data_1.json").exists()
        # The trial's files are final before slurmdbd records the job's end: wait for that.
        deadline = time.monotonic() + 60
        while True:
            history = slurm_cluster.run(
                "sacct", "--duplicates", "-X", "-n", "-P", "-o", "State", "-j", job_id
            ).stdout.split()
            if history[-1:] not in (["RUNNING"], ["COMPLETING"]) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert history[0] == "REQUEUED" and history[-1] == "COMPLETED", history
    submitit_log = next((sweep_dir / "_launch" / "submitit").glob("*_1/*_log.out")).read_text()
    assert "Calling checkpoint method" in submitit_log and "Requeued job" in submitit_log
    status = launch("status", str(sweep_dir))
    assert "2 trials: 2 done, 0 running, 0 failed, 0 pending" in status.stdout


def test_rerun_of_a_finished_sweep_submits_nothing(slurm_sweep):
    jobs_file = slurm_sweep["dir"] / "_launch" / state.JOBS_FILE
    before = jobs_file.read_text()
    again = launch("slurm", str(slurm_sweep["sweep"]))
    assert again.returncode == 0 and "0 trial(s) to submit; 2 done" in again.stderr
    assert jobs_file.read_text() == before and not state.queue()


def test_half_finished_sweep_submits_the_rest_and_cancel_stops_it(slurm_sweep):
    sweep_dir = slurm_sweep["dir"]
    shutil.rmtree(sweep_dir / TRIAL_KEYS[1])  # as if that trial had never run
    submitted = launch("slurm", str(sweep_dir))  # the folder remembers its sweep
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    assert "1 trial(s) to submit; 1 done" in submitted.stderr
    jobs = json.loads((sweep_dir / "_launch" / state.JOBS_FILE).read_text())["launches"]
    assert list(jobs[-1]["jobs"]) == [TRIAL_KEYS[1]]
    queued = launch("slurm", str(sweep_dir))  # queued or running: left alone
    assert "0 trial(s) to submit; 1 done, 1 " in queued.stderr, queued.stderr

    trial_dir = sweep_dir / TRIAL_KEYS[1]
    pause_after_checkpoint(sweep_dir.parent, [trial_dir])
    cancelled = launch("cancel", str(sweep_dir))
    assert cancelled.returncode == 0 and "cancelled Slurm job" in cancelled.stderr
    assert wait_until(lambda: sweep_jobs_gone(sweep_dir), 300)
    status = launch("status", str(sweep_dir)).stdout
    assert re.search(r"trial_2\s+pending .* stopped; resumes from step \d+", status), status
    assert [a["outcome"] for a in trial_files.attempts(trial_dir)] == ["interrupted"]
    assert "stop requested: checkpoint saved at step" in (trial_dir / "launch.log").read_text()
    # (resuming is the requeue's path, tested above; the next launch would submit it again)
    assert launch("slurm", str(sweep_dir), "--dry_run").stdout.split() == [TRIAL_KEYS[1]]


def test_wrong_partition_or_a_refused_job_leave_nothing_behind(slurm_cluster, tmp_path):
    for extra, message in [
        ('partition = "nope"\n', "unknown Slurm partition 'nope'; this cluster has: debug."),
        ('constraint = "nope"\n', "sbatch refused the jobs: sbatch: error: Batch job submission"),
    ]:
        sweep = tmp_path / "sweep.toml"
        sweep.write_text(sweep_text(tmp_path / "data", tmp_path / "exp", extra=extra))
        result = launch("slurm", str(sweep))
        assert result.returncode == 2
        assert message in result.stderr.strip().splitlines()[-1], result.stderr
        assert not (tmp_path / "exp").exists()
