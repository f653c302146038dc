"""`algoperf launch` without Slurm: sweep files, trials, bookkeeping, status, errors, and the
shared 2-trial mnist sweep run by `launch local` and by submitit's local executor."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import stat
import sys

import pytest
from slurm_fixture import TRIAL_KEYS, launch, metric_rows, sweep_text, wait_until

from algoperf import logs
from algoperf.cli.main import main
from algoperf.launch import state
from algoperf.launch import sweep as sweep_module
from algoperf.launch import trial as trial_files
from algoperf.launch.sweep import load_sweep
from algoperf.studies import SweepConfig, sweep_configs

ROOT = pathlib.Path(__file__).resolve().parent.parent


def write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.write_text(text)
    return path


def test_sweep_file_gives_tunes_trials(tmp_path):
    path = write(tmp_path / "s.toml", sweep_text("data", "exp", studies=2, trials=3))
    sweep = load_sweep(path)
    assert sweep.data_dir == str(tmp_path / "data")  # relative to the file
    assert sweep.sweep_dir == tmp_path / "exp" / "mini"
    trials = sweep.trials()
    assert [t.key for t in trials] == [
        f"study_{s}/mnist_pytorch/trial_{n}" for s in (0, 1) for n in (1, 2, 3)
    ]
    # Same studies and seeds as `algoperf tune` (a sweep can move between the two).
    configs = sweep_configs(sweep.base_config(), SweepConfig(workloads=("mnist",), num_studies=2))
    args = trials[4].run_args
    assert args[args.index("--rng_seed") + 1] == str(configs[1].rng_seed)
    assert args[args.index("--hparam_start_index") + 1] == "1"
    assert args[args.index("--resume_last_run") + 1] == "true"
    assert args[args.index("--max_global_steps") + 1] == "120"
    assert (
        trials[4].trial_dir == tmp_path / "exp" / "mini" / "study_1" / "mnist_pytorch" / "trial_2"
    )
    command = trial_files.trial_spec(sweep, trials[0]).command
    assert command[1:5] == ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1")
    jax = sweep_module.from_dict({**sweep.to_dict(), "framework": "jax"}, tmp_path, "x")
    assert trial_files.trial_spec(jax, jax.trials()[0]).command[1:4] == ("-m", "algoperf", "run")
    as_json = write(tmp_path / "s.json", json.dumps(sweep.to_dict()))
    assert load_sweep(as_json) == sweep


@pytest.mark.parametrize(
    "text, message",
    [
        ('name = "a"\n', "missing 'rng_seed'"),
        ('name = "a"\nrng_seed = 1\ngpus = 2\n', "unknown key(s) ['gpus']"),
        ('name = "a"\nrng_seed = "1"\n', "rng_seed: expected int"),
        ('name = "a"\nrng_seed = 1\nworkloads = "mnist"\n', "expected a list of strings"),
        ('name = "a"\nrng_seed = 1\nworkloads = ["mnsit"]\n', "unknown workload(s) ['mnsit']"),
        ('name = "a/b"\nrng_seed = 1\n', "plain folder name"),
        ('name = "a"\nrng_seed = 1\ngpus_per_trial = -1\n', "gpus_per_trial must be at least 0"),
        ('name = "a"\nrng_seed = 1\nframework = "tf"\n', "--framework must be pytorch or jax"),
        ('name = "a"\nrng_seed = 1\nrun_args = ["--workload", "cifar"]\n', "['workload']"),
        ('name = "a"\nrng_seed = 1\nrun_args = ["--max_steps", "3"]\n', "unknown `algoperf run`"),
        ('name = "a"\nrng_seed = 1\nrun_args = ["--max_global_steps", "x"]\n', "invalid int"),
        ('name = "a"\nrng_seed = 1\nrun_args = ["--max_global_steps", "0"]\n', "positive"),
        ('name = "a"\nrng_seed = 1\nsubmission_path = "nope.py"\n', "no such file"),
        ('name = "a\nrng_seed = 1\n', "does not parse"),
    ],
)
def test_bad_sweep_files_are_refused_with_the_reason(tmp_path, text, message):
    with pytest.raises(ValueError) as error:
        load_sweep(write(tmp_path / "s.toml", text))
    assert message in str(error.value) and str(tmp_path / "s.toml") in str(error.value)


def test_cli_errors_are_one_line_and_leave_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert main(["launch", "local", str(tmp_path / "none.toml")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"algoperf launch local: error: sweep file {tmp_path / 'none.toml'}: no such file."
    ]
    assert main(["launch", "local", str(write(tmp_path / "s.yaml", "name: a"))]) == 2
    assert "use a .toml or .json file" in capsys.readouterr().err
    assert main(["launch", "status", str(tmp_path)]) == 2
    assert "was not launched with `algoperf launch`" in capsys.readouterr().err
    path = write(tmp_path / "s.toml", sweep_text("data", "exp"))
    assert main(["launch", "local", str(path), "--parallel", "0"]) == 2
    assert main(["launch", "local", str(path), "--gpus_per_trial", "1"]) == 2  # no GPU here
    assert "pass --gpus_per_trial 0" in capsys.readouterr().err
    assert not (tmp_path / "exp").exists()


def test_slurm_needs_submitit_and_slurm_tools(tmp_path, capsys, monkeypatch):
    path = write(tmp_path / "s.toml", sweep_text("data", "exp"))
    real_find_spec = __import__("importlib").util.find_spec
    monkeypatch.setattr(
        "importlib.util.find_spec",
        lambda name, *a: None if name == "submitit" else real_find_spec(name, *a),
    )
    assert main(["launch", "slurm", str(path)]) == 2
    assert "submitit is not installed; it is in the `slurm` extra" in capsys.readouterr().err
    monkeypatch.undo()

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no sbatch anywhere
    assert main(["launch", "slurm", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "algoperf launch slurm: error: no `sbatch` on PATH: run this on a Slurm login node, or "
        "run the sweep on this machine with `algoperf launch local`."
    ]
    # Slurm's tools are there but the controller does not answer.
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("sbatch", "squeue", "scontrol", "sinfo"):
        script = fake / tool
        script.write_text(
            "#!/bin/sh\necho 'sinfo: error: Unable to contact slurm controller' >&2\nexit 1\n"
        )
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake}:/usr/bin:/bin")
    assert main(["launch", "slurm", str(path)]) == 2
    assert "error: Slurm is not reachable: sinfo says 'sinfo: error: Unable to contact" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "exp").exists()


def test_experiment_dir_must_be_writable_by_the_nodes(tmp_path):
    state.check_experiment_dir(tmp_path / "exp", [])
    state.check_experiment_dir(tmp_path / "exp", ["localhost"])
    with pytest.raises(state.LaunchError, match=r"under /tmp, which is private .* \(gpu1, gpu2\)"):
        state.check_experiment_dir(pathlib.Path("/tmp/x/exp"), ["gpu1", "gpu2"])
    state.check_experiment_dir(pathlib.Path("/tmp/x/exp"), [os.uname().nodename])
    (tmp_path / "file").write_text("")
    with pytest.raises(state.LaunchError, match="is a file, not a folder"):
        state.check_experiment_dir(tmp_path / "file" / "exp", [])
    with pytest.raises(state.LaunchError, match="is not writable"):
        state.check_experiment_dir(pathlib.Path("/proc/algoperf/exp"), [])


def test_a_folder_keeps_its_sweep(tmp_path):
    sweep = load_sweep(write(tmp_path / "s.toml", sweep_text("data", "exp")))
    sweep_module.record_sweep(sweep)
    assert sweep_module.resolve(sweep.sweep_dir) == sweep
    moved = load_sweep(write(tmp_path / "t.toml", sweep_text("data", "exp", trials=3)))
    with pytest.raises(ValueError, match="launched with a different sweep .*num_tuning_trials"):
        sweep_module.record_sweep(moved)
    bigger = load_sweep(write(tmp_path / "u.toml", sweep_text("data", "exp", extra="mem_gb = 8")))
    sweep_module.record_sweep(bigger)  # resources may change


def fake_trial(folder: pathlib.Path, *, complete=False, failed=None, attempt=None, ckpt=None):
    folder.mkdir(parents=True)
    if complete:
        logs.write_json(folder / logs.COMPLETE_FILE, {"global_step": 9, "stop_reason": "x"})
    if failed:
        logs.write_json(folder / trial_files.FAILED_FILE, {"reason": failed})
    if attempt:
        logs.write_json(folder / trial_files.ATTEMPTS_FILE, {"attempts": [attempt]})
    if ckpt:
        (folder / f"checkpoint_{ckpt}").mkdir()
        (folder / f"checkpoint_{ckpt}" / "loop.json").write_text("{}")


def test_status_and_what_a_rerun_starts(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(state, "queue", lambda: {})  # Slurm: none of these jobs is queued
    sweep = load_sweep(write(tmp_path / "s.toml", sweep_text("d", "exp", trials=4)))
    sweep_module.record_sweep(sweep)
    trials = sweep.trials()
    fake_trial(trials[0].trial_dir, complete=True)
    fake_trial(trials[1].trial_dir, failed="RuntimeError: boom (exit code 1)")
    ended = {"job_id": "7_2", "cluster": "slurm", "host": "x", "pid": 1, "started_at": 100.0}
    fake_trial(trials[2].trial_dir, attempt={**ended, "ended_at": 190.0}, ckpt=41)
    rows = state.sweep_status(sweep)
    assert [(r.state, r.step) for r in rows] == [
        ("done", 9), ("failed", None), ("pending", 41), ("pending", None)]  # fmt: skip
    assert rows[2].time_used_s == 90 and rows[2].note.startswith("stopped; resumes from step 41")
    assert rows[1].note == "RuntimeError: boom (exit code 1)"
    start, skip = state.to_run(sweep, retry_failed=False)
    assert [t.key for t in start] == [trials[2].key, trials[3].key]
    assert [t.key for t in state.to_run(sweep, retry_failed=True)[0]] == [t.key for t in trials[1:]]
    assert main(["launch", "status", str(sweep.sweep_dir)]) == 0
    out = capsys.readouterr().out
    assert "4 trials: 1 done, 0 running, 1 failed, 2 pending" in out
    assert "0:01:30" in out and "RuntimeError: boom" in out
    # A trial still running on this machine is left alone by a rerun.
    alive = {"job_id": "local", "cluster": "local", "host": os.uname().nodename,
             "pid": os.getpid(), "started_at": 100.0}  # fmt: skip
    fake_trial(trials[3].trial_dir, attempt=alive)
    assert [r.state for r in state.sweep_status(sweep)][3] == "running"
    assert [t.key for t in state.to_run(sweep, retry_failed=False)[0]] == [trials[2].key]


def test_non_finite_metrics_mark_a_trial_failed(tmp_path):
    with open(tmp_path / logs.EVAL_FILE, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["global_step", "train/loss", "validation/accuracy"])
        writer.writeheader()
        writer.writerow({"global_step": 1, "train/loss": 2.3, "validation/accuracy": 0.1})
        writer.writerow({"global_step": 9, "train/loss": "nan", "validation/accuracy": 0.1})
    assert trial_files.non_finite_metrics(tmp_path) == "non-finite train/loss (nan) at step 9"
    spec = trial_files.TrialSpec(key="k", trial_dir=str(tmp_path), command=("true",))
    process = trial_files.TrialProcess(spec, job_id="1", cluster="local")
    process.start()
    assert process.wait(30)
    logs.write_json(tmp_path / logs.COMPLETE_FILE, {"global_step": 9})
    assert process.finish() == "failed"
    marker = json.loads((tmp_path / trial_files.FAILED_FILE).read_text())
    assert marker["reason"] == "non-finite train/loss (nan) at step 9"


@pytest.mark.slow
def test_launch_local_runs_the_sweep(local_reference, tmp_path):
    result, sweep_dir = local_reference["result"], local_reference["dir"]
    assert "2 trials: 2 done, 0 running, 0 failed, 0 pending" in result.stdout
    for key in TRIAL_KEYS:
        rows = local_reference["rows"][key]
        assert [row["global_step"] for row in rows] == ["1", "41", "81", "120"]
        attempts = trial_files.attempts(sweep_dir / key)
        assert [a["outcome"] for a in attempts] == ["done"]
    first, second = (json.loads((sweep_dir / k / "hparams.json").read_text()) for k in TRIAL_KEYS)
    assert first != second
    again = launch("local", str(local_reference["sweep"]))
    assert again.returncode == 0 and "0 trial(s) to run; 2 done" in again.stderr


@pytest.mark.slow
def test_submitit_local_executor_runs_the_same_trials(local_reference, mnist_dir, tmp_path):
    sweep = write(tmp_path / "sweep.toml", sweep_text(mnist_dir, tmp_path / "exp"))
    result = launch("slurm", str(sweep), "--cluster", "local")
    assert result.returncode == 0, result.stderr[-3000:]
    sweep_dir = tmp_path / "exp" / "mini"
    for key in TRIAL_KEYS:
        assert metric_rows(sweep_dir / key) == local_reference["rows"][key]
        (attempt,) = trial_files.attempts(sweep_dir / key)
        assert attempt["cluster"] == "local" and attempt["outcome"] == "done"
    assert len(list((sweep_dir / "_launch" / "submitit").rglob("*_result.pkl"))) == 2
    again = launch("slurm", str(sweep), "--cluster", "local")
    assert again.returncode == 0 and "0 trial(s) to submit; 2 done" in again.stderr


CRASHING = '''"""NAdamW that raises at step 2 when its learning rate is absurd (a failing trial)."""
from algoperf.submissions.nadamw import submission_torch as _nadamw
from algoperf.submissions.nadamw.submission_torch import *  # noqa: F403


def update_params(workload, params, types, state, hyperparameters, batch, loss_type, opt,
                  evals, global_step, rng, train_state=None):
    if hyperparameters.learning_rate > 0.5 and global_step >= 2:
        raise FloatingPointError("the loss is NaN (test)")
    return _nadamw.update_params(workload, params, types, state, hyperparameters, batch,
                                 loss_type, opt, evals, global_step, rng, train_state)
'''


@pytest.mark.slow
def test_a_failed_trial_is_recorded_and_the_sweep_goes_on(mnist_dir, tmp_path):
    point = json.loads((ROOT / "submissions/nadamw/tuning_search_space.json").read_text())[0]
    space = [{**point, "learning_rate": 1.0}, point]  # trial 1 crashes, trial 2 trains
    write(tmp_path / "space.json", json.dumps(space))
    write(tmp_path / "crashing.py", CRASHING)
    args = ["--max_global_steps", "4", "--torch_compile", "false", "--download", "false"]
    extra = 'submission_path = "crashing.py"\ntuning_search_space = "space.json"\n'
    sweep = write(tmp_path / "sweep.toml", sweep_text(mnist_dir, "exp", extra=extra, run_args=args))
    result = launch("local", str(sweep))  # one at a time: the failure comes first
    assert result.returncode == 1, result.stderr[-3000:]
    sweep_dir = tmp_path / "exp" / "mini"
    failed = json.loads((sweep_dir / TRIAL_KEYS[0] / trial_files.FAILED_FILE).read_text())
    assert failed["reason"].startswith(
        "algoperf run: error: update_params raised FloatingPointError at step 2: "
        "the loss is NaN (test)"
    ), failed["reason"]
    assert (sweep_dir / TRIAL_KEYS[1] / logs.COMPLETE_FILE).exists()
    assert "2 trials: 1 done, 0 running, 1 failed, 0 pending" in result.stdout
    again = launch("local", str(sweep))
    assert again.returncode == 0 and "0 trial(s) to run; 1 done, 1 failed" in again.stderr
    retry = launch("local", str(sweep), "--retry_failed", "--dry_run")
    assert retry.stdout.split() == [TRIAL_KEYS[0]]


STOPPABLE = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))  # as the runner: checkpoint, exit 0
print("started", flush=True)
time.sleep(60)
"""


def test_a_stop_request_reaches_the_child_and_a_crash_names_its_error(tmp_path):
    spec = trial_files.TrialSpec(
        key="k", trial_dir=str(tmp_path), command=(sys.executable, "-c", STOPPABLE)
    )
    process = trial_files.TrialProcess(spec, job_id="1", cluster="local", new_session=True)
    process.start()
    log = tmp_path / trial_files.LOG_FILE
    assert wait_until(lambda: "started" in log.read_text(), 30)
    assert os.getsid(process.process.pid) == process.process.pid  # Ctrl-C reaches us only
    process.request_stop("SIGINT")
    assert process.wait(30) and process.finish() == "interrupted"
    assert not (tmp_path / trial_files.FAILED_FILE).exists()

    crash = "import json\nprint('step 1')\njson.loads('{')\n"
    spec = trial_files.TrialSpec(
        key="k", trial_dir=str(tmp_path), command=(sys.executable, "-c", crash)
    )
    process = trial_files.TrialProcess(spec, job_id="2", cluster="local")
    process.start()
    assert process.wait(30) and process.finish() == "failed"
    reason = json.loads((tmp_path / trial_files.FAILED_FILE).read_text())["reason"]
    assert reason.startswith("json.decoder.JSONDecodeError: Expecting property name")
    assert reason.endswith("(exit code 1)")
    attempts = trial_files.attempts(tmp_path)
    assert [(a["job_id"], a["outcome"]) for a in attempts] == [
        ("1", "interrupted"), ("2", "failed")]  # fmt: skip
