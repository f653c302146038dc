"""File-system trouble is one line naming the path (StorageError), never a traceback, and leaves
no temp files; logs get the modes the umask allows (docs/rules.md, "Log files")."""

from __future__ import annotations

import contextlib
import gc
import os
import stat
import subprocess

import pytest

from algoperf import checkpoint, logs
from algoperf.errors import StorageError
from algoperf.loop import LoopState

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@contextlib.contextmanager
def tmpfs(folder, *options):
    """A small tmpfs mounted at `folder` (root only; skips with the reason otherwise)."""
    if not IS_ROOT:
        pytest.skip("mounting a tmpfs needs root; this test runs as a normal user")
    folder.mkdir(exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", ",".join(["size=1m", *options]), "tmpfs", str(folder)]
    done = subprocess.run(mount, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        gc.collect()  # a failed torch.save's traceback may still hold its file open
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], check=True)  # detach it anyway


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_experiment_dir_that_is_a_file(tmp_path):
    experiment_dir = tmp_path / "experiments"
    experiment_dir.write_text("not a folder")
    folder = logs.workload_dir(str(experiment_dir), "exp", "mnist", "pytorch")
    with pytest.raises(StorageError, match="is a file, not a folder") as raised:
        logs.prepare_workload_dir(folder, overwrite=False, resume=False)
    assert str(experiment_dir) in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(StorageError, match="is a file, not a folder"):
        logs.write_json(experiment_dir / "flags_0.json", {})


def test_experiment_dir_not_writable(tmp_path):
    if IS_ROOT:  # chmod does not stop root: a read-only mount does
        with tmpfs(tmp_path / "ro", "ro") as read_only:
            folder = read_only / "exp" / "mnist_pytorch"
            with pytest.raises(StorageError, match="read-only file system") as raised:
                logs.prepare_workload_dir(folder, overwrite=False, resume=False)
            assert str(read_only) in str(raised.value)
        return
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(StorageError, match="is not writable") as raised:
            logs.prepare_workload_dir(locked / "exp" / "w", overwrite=False, resume=False)
        assert str(locked) in str(raised.value)
        with pytest.raises(StorageError, match="is not writable"):
            logs.write_json(locked / "hparams.json", {"a": 1})
    finally:
        locked.chmod(0o755)


def test_write_json_leaves_no_temp_file_on_failure(tmp_path):
    with pytest.raises(TypeError):
        logs.write_json(tmp_path / "flags_0.json", {("a", "tuple"): "key"})
    assert list(tmp_path.iterdir()) == []


class TorchBackend:
    """Just what `checkpoint.save` calls: torch.save of a 4 MB tensor (more than the tmpfs)."""

    def save_state(self, folder, variables):
        import torch

        torch.save({"weights": torch.zeros(1_000_000)}, folder / "state.pt")


def meta() -> checkpoint.Meta:
    return checkpoint.Meta(
        workload="mnist",
        framework="pytorch",
        benchmark_version="v1.0",
        tuning_ruleset="external",
        run_seed=0,
        trial_seed=0,
        global_batch_size=8,
        batches_consumed=0,
        saved_at=0.0,
    )


def test_full_disk(tmp_path):
    pytest.importorskip("torch")
    with tmpfs(tmp_path / "full") as full:
        with pytest.raises(StorageError, match="no space left on device writing checkpoint"):
            checkpoint.save(full, TorchBackend(), None, LoopState(global_step=7), meta())
        assert list(full.iterdir()) == []
        with pytest.raises(StorageError, match="no space left on device writing .*meta"):
            logs.write_json(full / "meta_data_0.json", {"blob": "x" * 2_000_000})
        assert list(full.iterdir()) == []
        log = logs.CSVLog(full / logs.EVAL_FILE)
        log.append({"global_step": 1, "score": 1.5})
        before = (full / logs.EVAL_FILE).read_bytes()
        with pytest.raises(StorageError, match="no space left on device"):
            log.append({"global_step": 2, "score": "y" * 2_000_000})
        assert (full / logs.EVAL_FILE).read_bytes() == before  # no half row
        with pytest.raises(StorageError, match="no space left on device"):
            log.append({"global_step": 3, "new_column": "y" * 2_000_000})  # rewrite path
        assert (full / logs.EVAL_FILE).read_bytes() == before
        assert leftovers(full) == []


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_files_and_folders_follow_the_umask(tmp_path, mask):
    previous = os.umask(mask)
    logs.umask.cache_clear()
    try:
        logs.write_json(tmp_path / "flags_0.json", {"a": 1})
        log = logs.CSVLog(tmp_path / logs.EVAL_FILE)
        log.append({"global_step": 1})
        log.append({"global_step": 2, "score": 1.0})  # a new column rewrites the file
        logs.truncate_after_step(tmp_path, 1)
        saved = checkpoint.save(tmp_path, NumpyBackend(), None, LoopState(global_step=1), meta())
    finally:
        os.umask(previous)
        logs.umask.cache_clear()
    for name in ("flags_0.json", logs.EVAL_FILE):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask, name
    assert stat.S_IMODE(saved.stat().st_mode) == 0o777 & ~mask


class NumpyBackend:
    def save_state(self, folder, variables):
        (folder / "state.npz").write_bytes(b"x")


def test_csv_lines_end_in_newline_and_crlf_files_still_read(tmp_path):
    log = logs.CSVLog(tmp_path / logs.EVAL_FILE)
    log.append({"global_step": 1, "score": 1.5})
    log.append({"global_step": 2, "score": 2.5, "extra": 1})
    assert b"\r" not in (tmp_path / logs.EVAL_FILE).read_bytes()
    # An older file with \r\n endings: appended to, truncated, and read back.
    crlf = tmp_path / "crlf"
    crlf.mkdir()
    (crlf / logs.EVAL_FILE).write_bytes(b"global_step,score\r\n1,1.5\r\n2,2.5\r\n")
    old = logs.CSVLog(crlf / logs.EVAL_FILE)
    old.append({"global_step": 3, "score": 3.5})
    logs.truncate_after_step(crlf, 2)
    assert (crlf / logs.EVAL_FILE).read_bytes() == b"global_step,score\n1,1.5\n2,2.5\n"
