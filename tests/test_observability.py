"""TensorBoard and W&B sinks, step time / throughput / memory / MFU figures, the progress line.

Event files are read back with TensorBoard's own `EventAccumulator`; W&B offline runs through
their `.wandb` record file. Short mnist runs (marked slow) check a real trial end to end.
"""

from __future__ import annotations

import csv
import os
import pathlib
import re
import signal
import struct
import subprocess
import sys
import time
import types
import zlib

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from algoperf import sinks, telemetry
from algoperf.config import RunConfig
from algoperf.loop import LoopState
from algoperf.progress import Progress

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The 784-128-10 MLP: two matmuls forward, 2 FLOPs per multiply-add, x3 for a training step.
MNIST_TRAIN_FLOPS = 3 * 2 * (784 * 128 + 128 * 10)


def tensorboard_scalars(folder: pathlib.Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files in `folder`, as TensorBoard reads them."""
    reader = event_accumulator.EventAccumulator(
        str(folder), size_guidance={event_accumulator.SCALARS: 0}
    )
    reader.Reload()
    return {
        tag: [(event.step, event.value) for event in reader.Scalars(tag)]
        for tag in reader.Tags()["scalars"]
    }


def wandb_history(trial_dir: pathlib.Path) -> list[dict]:
    """The history rows of the W&B offline run(s) under `trial_dir`, read from the run's
    `.wandb` file: W&B's record log (a 7-byte `:W&B` header, then 32 KiB blocks of records
    framed as in LevelDB's log: CRC-32, length, type; each record a `wandb_internal_pb2.Record`)."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for path in sorted(trial_dir.glob("wandb/offline-run-*/run-*.wandb")):
        data = path.read_bytes()
        assert data[:4] == b":W&B"
        position, pending = 7, b""
        while position + 7 <= len(data):
            room = 32768 - position % 32768
            if room < 7:  # a block's tail too short for a header is padding
                position += room
                continue
            checksum, length, kind = struct.unpack("<IHB", data[position : position + 7])
            payload = data[position + 7 : position + 7 + length]
            position += 7 + length
            if kind == 0 and length == 0:
                break
            assert zlib.crc32(payload, zlib.crc32(bytes([kind]))) == checksum
            pending += payload
            if kind in (1, 4):  # a whole record, or the last piece of one
                record = wandb_internal_pb2.Record.FromString(pending)
                pending = b""
                if record.WhichOneof("record_type") == "history":
                    items = record.history.item
                    rows.append(
                        {i.key or "/".join(i.nested_key): float(i.value_json) for i in items}
                    )
    return rows


# --- the event file format ---------------------------------------------------------------------
def test_crc32c_is_castagnoli():
    assert sinks.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert sinks.crc32c(b"") == 0


def test_event_writer_round_trips_through_tensorboards_reader(tmp_path):
    writer = sinks.EventWriter(tmp_path)
    writer.scalars({"validation/accuracy": 0.25, "loss": 2.5}, step=3)
    writer.scalars({"validation/accuracy": 0.5}, step=7)
    writer.close()
    read = tensorboard_scalars(tmp_path)
    assert read == {"validation/accuracy": [(3, 0.25), (7, 0.5)], "loss": [(3, 2.5)]}
    assert oct(writer.path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_sinks_keep_numbers_and_drop_exact_repeats():
    recorded = []
    fan_out = sinks.Sinks([types.SimpleNamespace(scalars=lambda v, s: recorded.append((s, v)))])
    fan_out.scalars({"score": 1.5, "note": "text", "n": np.int64(3), "none": None}, 4)
    fan_out.scalars({"score": 1.5}, 4)  # the final score row repeating the last eval's
    fan_out.scalars({"score": 1.5}, 5)
    assert recorded == [(4, {"score": 1.5, "n": 3.0}), (5, {"score": 1.5})]


def _attempt(folder: pathlib.Path, steps, marks=(), resumed_from=None) -> pathlib.Path:
    """An attempt's event file: 'loss' at each step (an eval row), a checkpoint mark after each
    step in `marks`, then 'grad_norm' at that step (a submission logging during the next step,
    as a resumed attempt does again first)."""
    sink = sinks.TensorBoardSink(folder)
    if resumed_from is not None:
        sink.scalars({"grad_norm": float(resumed_from)}, resumed_from)
    for step in steps:
        sink.scalars({"loss": float(step)}, step)
        if step in marks:
            sink.checkpointed(step)
            sink.scalars({"grad_norm": float(step)}, step)
    sink.close()
    return sink.writer.path


def test_resume_cuts_events_back_to_the_checkpoint(tmp_path):
    """Killed at step 40 after a checkpoint at step 20: the events logged after that checkpoint,
    those at step 20 itself included, go; the resumed attempt then logs them once."""
    first = _attempt(tmp_path, range(0, 41, 10), marks=(10, 20))
    sinks.truncate_events(tmp_path, 20)
    assert sorted(sinks._read_marks(tmp_path)) == ["10", "20"]
    _attempt(tmp_path, range(30, 51, 10), marks=(30,), resumed_from=20)
    read = tensorboard_scalars(tmp_path)
    assert read["loss"] == [(step, float(step)) for step in range(0, 51, 10)]
    assert read["grad_norm"] == [(10, 10.0), (20, 20.0), (30, 30.0)]
    # Resumed again from step 10: the second attempt's file goes, the first is cut at 10.
    sinks.truncate_events(tmp_path, 10)
    assert sinks.event_files(tmp_path) == [first]
    assert tensorboard_scalars(tmp_path)["loss"] == [(0, 0.0), (10, 10.0)]
    assert sorted(sinks._read_marks(tmp_path)) == ["10"]


def test_resume_without_marks_drops_events_after_the_step(tmp_path):
    """Event files from an attempt that ran without TensorBoard marks (or a torn last record):
    every event after the checkpoint's step is dropped."""
    path = _attempt(tmp_path, range(0, 41, 10))
    with open(path, "ab") as handle:
        handle.write(b"\x07\x00\x00")  # a record torn by a kill
    sinks.truncate_events(tmp_path, 20)
    assert tensorboard_scalars(tmp_path)["loss"] == [(0, 0.0), (10, 10.0), (20, 20.0)]
    sinks.clear_events(tmp_path)  # a restart from step 0
    assert sinks.event_files(tmp_path) == []


def test_open_sinks_honours_tensorboard_false(tmp_path):
    opened = sinks.open_sinks(tmp_path, resumed_step=None, tensorboard=False)
    assert not opened
    opened.scalars({"loss": 1.0}, 1)
    opened.close()
    assert sinks.event_files(tmp_path) == []


# --- figures --------------------------------------------------------------------------------
def test_peak_table_by_device_name():
    assert telemetry.peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989.4e12
    assert telemetry.peak_flops("NVIDIA H100 80GB HBM3", "tf32") == 494.7e12
    assert telemetry.peak_flops("NVIDIA H100 PCIe", "tf32") == 378e12
    assert telemetry.peak_flops("NVIDIA H200", "bf16") == 989.4e12
    assert telemetry.peak_flops("NVIDIA A100-SXM4-80GB", "fp32") == 19.5e12
    assert telemetry.peak_flops("NVIDIA GeForce RTX 4090", "bf16") is None
    assert telemetry.peak_flops(None, "fp32") is None


def test_meter_reads_step_time_throughput_tokens_and_mfu():
    meter = telemetry.Meter(
        global_batch_size=64,
        memory=lambda: {telemetry.HOST_RSS: 1.5},
        tokens_per_example=128,
        train_flops_per_example=1e9,
        peak_flops_total=1e12,
        start_step=10,
        start_time=5.0,
    )
    figures = meter.read(20, 7.0)  # 10 steps in 2 s
    assert figures[telemetry.STEP_TIME] == pytest.approx(0.2)
    assert figures[telemetry.EXAMPLES_PER_S] == pytest.approx(320.0)
    assert figures[telemetry.TOKENS_PER_S] == pytest.approx(320.0 * 128)
    assert figures[telemetry.MFU] == pytest.approx(320.0 * 1e9 / 1e12)
    assert figures[telemetry.HOST_RSS] == 1.5
    assert meter.read(20, 7.5) == {telemetry.HOST_RSS: 1.5}  # no step since: memory only
    text = telemetry.describe(figures)
    assert text == "200.0 ms/step, 320.0 ex/s, 41.0k tok/s | MFU 32.0% | RSS 1.50 GiB"


class _Recorder:
    def __init__(self):
        self.rows, self.flushes = [], 0

    def scalars(self, values, step):
        self.rows.append((step, dict(values)))

    def flush(self):
        self.flushes += 1

    def checkpointed(self, step):
        pass

    def close(self):
        pass


def test_monitor_feeds_progress_line_and_sinks(capsys):
    recorder = _Recorder()
    progress = Progress(enabled=True, budget_sec=100.0, target="0.97")
    monitor = telemetry.Monitor(
        progress=progress,
        sinks=sinks.Sinks([recorder]),
        make_meter=lambda: telemetry.Meter(
            global_batch_size=8, memory=lambda: {telemetry.DEVICE_MEMORY: 2.0}
        ),
        sample_interval_s=10.0,
    )
    state = LoopState(global_step=4, accumulated_submission_time=2.0)
    monitor.step(state, now=100.0)
    line = capsys.readouterr().err
    assert "step 4 | submission 2.0s | budget left 98.0s | 500.0 ms/step, 16.0 ex/s" in line
    assert "GPU mem 2.00 GiB peak" in line
    assert recorder.rows == [
        (4, {telemetry.DEVICE_MEMORY: 2.0, telemetry.STEP_TIME: 0.5, telemetry.EXAMPLES_PER_S: 16})
    ]
    state.global_step, state.accumulated_submission_time = 8, 3.0
    monitor.step(state, now=105.0)  # nothing due: neither line (30 s) nor sample (10 s)
    assert len(recorder.rows) == 1 and capsys.readouterr().err == ""
    row = {"global_step": 8, "accumulated_submission_time": 3.0, "score": 3.0}
    monitor.evaluated({**row, "validation/accuracy": 0.5}, "accuracy")
    assert recorder.rows[-1][0] == 8 and recorder.rows[-1][1][telemetry.STEP_TIME] == 0.25
    monitor.step(state, now=111.0)  # a sample is due, but the eval just wrote step 8's
    assert len(recorder.rows) == 2 and recorder.flushes == 2


def _fake_backend():
    import torch

    return types.SimpleNamespace(device=torch.device("cpu"), device_count=4)


def _mnist(framework):
    from algoperf import workloads

    workload = workloads.load("mnist", framework)
    if framework == "jax":
        import jax

        params, model_state = workload.init_model_fn(jax.random.PRNGKey(0))
    else:
        from algoperf import rng

        params, model_state = workload.init_model_fn(rng.prng_key(0))
    return workload, types.SimpleNamespace(params=params, model_state=model_state)


@pytest.mark.parametrize("framework", ["pytorch", "jax"])
def test_flops_per_example_are_counted_on_a_cpu(framework):
    workload, variables = _mnist(framework)
    probe = telemetry.load_probe(framework, _fake_backend())
    assert probe.device_name is None  # a CPU: no MFU in a run, but the count works here
    flops = telemetry.train_flops_per_example(
        probe, workload, variables.params, variables.model_state
    )
    if framework == "pytorch":  # FlopCounterMode counts the two matmuls exactly
        assert flops == MNIST_TRAIN_FLOPS
    else:  # XLA also counts bias adds and the sigmoid
        assert MNIST_TRAIN_FLOPS <= flops <= 1.01 * MNIST_TRAIN_FLOPS


def test_mfu_from_a_known_gpu_and_tokens_from_a_sequence_workload(monkeypatch):
    """The meter of a trial on an H100 (the probe's name faked on this CPU): FLOPs counted on
    the model, the peak of 4 devices at TF32; a fake sequence workload adds tokens/s."""
    from algoperf.torch import telemetry as torch_telemetry

    workload, variables = _mnist("pytorch")
    sequence_spec = types.SimpleNamespace(tokens_per_example=256)
    sequence = types.SimpleNamespace(
        spec=sequence_spec, fake_batch=workload.fake_batch, model_fn=workload.model_fn
    )
    probe = torch_telemetry.TorchProbe(_fake_backend().device)
    probe.device_name = "NVIDIA H100 80GB HBM3"
    monkeypatch.setattr(torch_telemetry, "make_probe", lambda backend: probe)
    monkeypatch.setattr(probe, "precision", lambda params: "tf32")
    make_meter = telemetry.meter_factory(
        framework="pytorch",
        backend=_fake_backend(),
        workload=sequence,
        variables=variables,
        global_batch_size=32,
        state=None,
        primary=True,
    )
    figures = make_meter().read(10, 1.0)  # 320 examples/s
    assert figures[telemetry.TOKENS_PER_S] == pytest.approx(320 * 256)
    expected = 320 * MNIST_TRAIN_FLOPS / (4 * 494.7e12)
    assert figures[telemetry.MFU] == pytest.approx(expected)
    assert telemetry.HOST_RSS in figures


def test_no_mfu_on_an_unknown_gpu(monkeypatch, caplog):
    from algoperf.torch import telemetry as torch_telemetry

    workload, variables = _mnist("pytorch")
    probe = torch_telemetry.TorchProbe(_fake_backend().device)
    probe.device_name = "Some Future GPU"
    monkeypatch.setattr(torch_telemetry, "make_probe", lambda backend: probe)
    make_meter = telemetry.meter_factory(
        framework="pytorch",
        backend=_fake_backend(),
        workload=workload,
        variables=variables,
        global_batch_size=32,
        state=None,
        primary=True,
    )
    assert telemetry.MFU not in make_meter().read(10, 1.0)
    assert "no peak FLOP/s is known for 'Some Future GPU'" in caplog.text


# --- flags and W&B ----------------------------------------------------------------------------
def test_flags_parse():
    from algoperf.cli.main import build_parser

    parser = build_parser()
    args = parser.parse_args(["run", "--tensorboard", "false", "--use_wandb"])
    assert args.tensorboard is False and args.use_wandb is True
    assert RunConfig().tensorboard is True and RunConfig().use_wandb is False


def test_missing_wandb_is_one_line_naming_the_extra(monkeypatch, capsys):
    from algoperf.cli.main import main

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed
    assert main(["run", "--use_wandb"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install algoperf[wandb]" in err[0], err
    with pytest.raises(ValueError, match=r"pip install algoperf\[wandb\]"):
        sinks.import_wandb()


def test_wandb_offline_run_receives_the_scalars(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    sink = sinks.WandbSink(
        trial_dir=tmp_path, name="e/mnist_pytorch/trial_1", group="e", tags=["mnist"], config={}
    )
    fan_out = sinks.Sinks([sink])
    fan_out.scalars({"loss": 2.5, "validation/accuracy": 0.25}, 0)
    fan_out.scalars({"loss": 1.5}, 10)
    fan_out.close()
    wandb.teardown()  # finish() returns before W&B's service has written the run's file
    history = wandb_history(tmp_path)
    assert [(row["_step"], row["loss"]) for row in history] == [(0, 2.5), (10, 1.5)]
    assert history[0]["validation/accuracy"] == 0.25


# --- short mnist runs ------------------------------------------------------------------------
def run_args(tmp_path, framework, name, *extra) -> list[str]:
    return [
        sys.executable, "-m", "algoperf", "run", "--framework", framework,
        "--data_dir", str(tmp_path / "data"), "--experiment_dir", str(tmp_path / "exp"),
        "--experiment_name", name, "--rng_seed", "5", "--torch_compile", "false",
        "--download", "false", *extra,
    ]  # fmt: skip


def env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore", **extra}


def eval_rows(trial: pathlib.Path) -> list[dict]:
    with open(trial / "eval_measurements.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def assert_events_match_eval_csv(trial: pathlib.Path) -> dict:
    """Every eval metric of the CSV is in the event files at the same step with the same value
    (as float32, TensorBoard's scalar type), and no tag holds a step twice."""
    read = tensorboard_scalars(trial)
    rows = eval_rows(trial)
    metrics = [key for key in rows[0] if key.split("/")[0] in ("train", "validation", "test")]
    assert "validation/accuracy" in metrics
    for key in [*metrics, "score", "accumulated_submission_time"]:
        expected = [(int(row["global_step"]), np.float32(float(row[key]))) for row in rows]
        assert [(step, np.float32(value)) for step, value in read[key]] == expected, key
    for tag, points in read.items():
        steps = [step for step, _ in points]
        assert steps == sorted(set(steps)), (tag, steps)
    return read


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["pytorch", "jax"])
def test_mnist_run_writes_events_and_shows_figures(tmp_path, framework):
    extra = ["--use_wandb"] if framework == "pytorch" else []
    result = subprocess.run(
        run_args(tmp_path, framework, "obs", "--max_global_steps", "30", "--eval_every_steps",
                 "10", *extra),
        env=env(WANDB_MODE="offline", WANDB_SILENT="true"),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    trial = tmp_path / "exp" / "obs" / f"mnist_{framework}" / "trial_1"
    read = assert_events_match_eval_csv(trial)
    assert read["loss"][0][0] == 0  # the reference submission logs its loss at step 0
    for tag in (telemetry.STEP_TIME, telemetry.EXAMPLES_PER_S, telemetry.HOST_RSS):
        assert [step for step, _ in read[tag]][-1] == 30, tag
    step_time = dict(read[telemetry.STEP_TIME])
    assert dict(read[telemetry.EXAMPLES_PER_S])[30] == pytest.approx(128 / step_time[30], 1e-5)
    assert telemetry.MFU not in read  # a CPU
    progress = [line for line in result.stderr.splitlines() if line.startswith("step 1 |")]
    assert progress and " ex/s" in progress[0] and "RSS " in progress[0], result.stderr[-2000:]
    if framework == "pytorch":
        history = wandb_history(trial)
        accuracy = [(row["_step"], row["validation/accuracy"]) for row in history if
                    "validation/accuracy" in row]  # fmt: skip
        rows = eval_rows(trial)
        expected = [(float(r["global_step"]), float(r["validation/accuracy"])) for r in rows]
        assert accuracy == expected
        assert any("loss" in row for row in history)


@pytest.mark.slow
def test_resumed_trial_shows_each_step_once(tmp_path):
    """SIGKILL after the checkpoint of step 51, then --resume_last_run: the killed attempt's
    event file is cut back to where it stood at the checkpoint resumed from, and the event
    files agree with the CSV, each step once per tag."""
    args = run_args(tmp_path, "pytorch", "killed", "--max_global_steps", "120", "--progress",
                    "false", "--eval_every_steps", "50")  # fmt: skip
    trial = tmp_path / "exp" / "killed" / "mnist_pytorch" / "trial_1"
    process = subprocess.Popen(
        args, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while time.time() < deadline and not (trial / "checkpoint_51" / "loop.json").exists():
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert not (trial / "trial_complete.json").exists(), "the trial finished before the kill"
    (killed,) = sinks.event_files(trial)
    resumed = subprocess.run(
        [*args, "--resume_last_run"], env=env(), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    step = int(re.search(r"resuming \S+ at step (\d+)", resumed.stderr).group(1))
    assert step in (51, 101)  # the kill may land after the next checkpoint
    assert sinks.event_files(trial)[0] == killed and len(sinks.event_files(trial)) == 2
    assert killed.stat().st_size == sinks._read_marks(trial)[str(step)][1]
    read = assert_events_match_eval_csv(trial)
    assert [step for step, _ in read["loss"]] == [0, 100]
