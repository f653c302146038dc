"""Submissions laid out as in the public leaderboard's repository import their helpers as under
upstream's runner (docs/rules.md, "Submission API"): `repo/submissions/self_tuning/mine/` with
`submission.py` and `helpers.py` (no `__init__.py` files, or with them) and a package at the
repository's root, imported relatively and through the repository path, in both frameworks and
under torchrun; and installing algoperf takes none of the generic names.
"""

from __future__ import annotations

import csv
import os
import pathlib
import subprocess
import sys
import uuid

import pytest

from algoperf.submission import load_submission, repository_root

SUBMISSION = '''"""A leaderboard-style submission: a helper beside it, a package at the root."""
from . import helpers as relative_helpers
from .helpers import get_batch_size
from {top}.self_tuning.mine import helpers
from {top}.self_tuning.mine.helpers import helper_name
import mylib{suffix}
from mylib{suffix}.numbers import BATCH_SIZE

assert relative_helpers is helpers, (relative_helpers, helpers)
assert helper_name() == "{top}.self_tuning.mine.helpers", helper_name()
assert get_batch_size("mnist") == BATCH_SIZE == mylib{suffix}.numbers.BATCH_SIZE
{body}
'''
HELPERS = """
from mylib{suffix}.numbers import BATCH_SIZE


def get_batch_size(workload_name):
    return BATCH_SIZE


def helper_name():
    return __name__
"""
STUBS = """
def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    return None


def update_params(workload, params, types, model_state, hp, batch, loss_type, opt, evals, step,
                  rng):
    return opt, params, model_state


def data_selection(workload, queue, opt, params, model_state, hp, step, rng):
    return next(queue)
"""
REFERENCE = """
from algoperf.submissions.nadamw_self_tuning.submission_{framework} import (
    data_selection, init_optimizer_state, prepare_for_eval, update_params)
"""
FILES = {"pytorch": "torch", "jax": "jax"}


def make_repo(root: pathlib.Path, *, top: str, suffix: str, body: str, init: bool) -> pathlib.Path:
    """`root/{top}/self_tuning/mine/{submission,helpers}.py` and `root/mylib{suffix}/`."""
    folder = root / top / "self_tuning" / "mine"
    folder.mkdir(parents=True)
    (folder / "submission.py").write_text(SUBMISSION.format(top=top, suffix=suffix, body=body))
    (folder / "helpers.py").write_text(HELPERS.format(suffix=suffix))
    if init:
        for package in (root / top, root / top / "self_tuning", folder):
            (package / "__init__.py").write_text("")
    library = root / f"mylib{suffix}"
    library.mkdir()
    (library / "__init__.py").write_text("from . import numbers\n")
    (library / "numbers.py").write_text("BATCH_SIZE = 32\n")
    return folder / "submission.py"


@pytest.fixture
def fresh_imports(monkeypatch):
    """A unique top-level name per test, and sys.path/sys.modules as they were afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    tag = uuid.uuid4().hex[:8]
    yield tag
    for name in list(sys.modules):
        if tag in name:
            del sys.modules[name]


@pytest.mark.parametrize("init", [False, True], ids=["namespace", "init_files"])
def test_relative_and_repository_imports_give_the_same_modules(
    tmp_path, monkeypatch, fresh_imports, init
):
    top = f"leaderboard_{fresh_imports}"
    path = make_repo(tmp_path, top=top, suffix=fresh_imports, body=STUBS, init=init)
    monkeypatch.chdir(tmp_path)
    submission = load_submission(path)
    assert submission.module.__name__ == f"{top}.self_tuning.mine.submission"
    assert sys.modules[f"{top}.self_tuning.mine.helpers"] is submission.module.helpers
    assert load_submission(path).module is submission.module  # imported once per process


@pytest.mark.parametrize("where", ["elsewhere", "above"])
def test_run_from_outside_the_repository_uses_its_git_root(
    tmp_path, monkeypatch, fresh_imports, where
):
    repo = tmp_path / "repo"
    top = f"leaderboard_{fresh_imports}"
    path = make_repo(repo, top=top, suffix=fresh_imports, body=STUBS, init=False)
    (repo / ".git").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere" if where == "elsewhere" else tmp_path)
    assert repository_root(path) == repo
    assert load_submission(path).module.__name__ == f"{top}.self_tuning.mine.submission"


def test_a_file_under_no_root_loads_by_location_with_its_siblings(
    tmp_path, monkeypatch, fresh_imports
):
    folder = tmp_path / "my-submission"  # not an identifier either
    folder.mkdir()
    (folder / f"tools_{fresh_imports}.py").write_text("BATCH_SIZE = 16\n")
    code = f"from tools_{fresh_imports} import BATCH_SIZE\n\n\ndef get_batch_size(name):\n"
    (folder / "submission.py").write_text(code + "    return BATCH_SIZE\n" + STUBS)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert repository_root(folder / "submission.py") is None
    module = load_submission(folder / "submission.py").module
    assert module.__name__.startswith("algoperf_submission_") and module.get_batch_size("x") == 16
    monkeypatch.chdir(tmp_path)  # under the working directory, but `my-submission` is no name
    assert load_submission(folder / "submission.py").module.get_batch_size("x") == 16


def test_a_shadowed_name_warns_and_loads_by_location(tmp_path, monkeypatch, fresh_imports):
    top = f"leaderboard_{fresh_imports}"
    folder = tmp_path / "repo" / top / "mine"
    folder.mkdir(parents=True)
    (folder / "submission.py").write_text("def get_batch_size(name):\n    return 8\n" + STUBS)
    shadow = tmp_path / "shadow" / top
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")  # a regular package wins over a namespace portion
    monkeypatch.syspath_prepend(str(tmp_path / "shadow"))
    monkeypatch.chdir(tmp_path / "repo")
    with pytest.warns(UserWarning, match=f"`{top}.mine.submission` does not import this file"):
        module = load_submission(folder / "submission.py").module
    assert module.__name__.startswith("algoperf_submission_") and module.get_batch_size("x") == 8


def without_pythonpath() -> dict[str, str]:
    """The installed algoperf only: a PYTHONPATH holding this checkout would put its own
    `submissions` package in the way of the repository's."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return {**env, "PYTHONWARNINGS": "ignore"}


def run_args(tmp_path: pathlib.Path, framework: str, path: pathlib.Path) -> list[str]:
    return [
        "--workload", "mnist", "--framework", framework, "--submission_path", str(path),
        "--tuning_ruleset", "self", "--data_dir", str(tmp_path / "data"),
        "--experiment_dir", str(tmp_path / "exp"), "--experiment_name", "leaderboard",
        "--max_global_steps", "40", "--eval_every_steps", "20", "--torch_compile", "false",
        "--download", "false", "--progress", "false", "--save_checkpoints", "false",
    ]  # fmt: skip


def assert_trained(tmp_path: pathlib.Path, framework: str, done) -> None:
    assert done.returncode == 0, done.stderr[-3000:]
    trial = tmp_path / "exp" / "leaderboard" / f"mnist_{framework}" / "trial_1"
    with open(trial / "eval_measurements.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["global_step"] == "1" and rows[-1]["global_step"] == "40"
    assert float(rows[-1]["train/loss"]) < float(rows[0]["train/loss"])


@pytest.mark.slow
@pytest.mark.parametrize("init", [False, True], ids=["namespace", "init_files"])
@pytest.mark.parametrize("framework", ["pytorch", "jax"])
def test_leaderboard_layout_trains(tmp_path, framework, init):
    repo = tmp_path / "repo"
    body = REFERENCE.format(framework=FILES[framework])
    path = make_repo(repo, top="submissions", suffix="", body=body, init=init)
    done = subprocess.run(
        [sys.executable, "-m", "algoperf", "run", *run_args(tmp_path, framework, path)],
        cwd=repo, env=without_pythonpath(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert_trained(tmp_path, framework, done)


@pytest.mark.slow
def test_leaderboard_layout_trains_under_torchrun(tmp_path):
    from algoperf.launch.torchrun import torchrun_command

    repo = tmp_path / "repo"
    path = make_repo(repo, top="submissions", suffix="", body=REFERENCE.format(framework="torch"),
                     init=False)  # fmt: skip
    command = torchrun_command(2, run_args(tmp_path, "pytorch", path))
    done = subprocess.run(
        command, cwd=repo, env=without_pythonpath(), capture_output=True, text=True, timeout=600
    )
    assert_trained(tmp_path, "pytorch", done)


def test_installing_algoperf_takes_no_generic_name(tmp_path):
    code = (
        "import importlib.util, algoperf.cli.main\n"
        "names = ('workloads', 'submissions', 'launch', 'cli')\n"
        "print([name for name in names if importlib.util.find_spec(name) is not None])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=without_pythonpath(),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
