"""The command line's conventions: logging (named loggers, handlers only from the command line,
the mnist fallback said once), --log_level and -q/--quiet on every subcommand, --version, help
examples, booleans, choices, the torch.compile default, `algoperf prepare` and `list --json`."""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import logging
import os
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest

from algoperf import __version__, console, workloads
from algoperf.cli import common
from algoperf.cli import main as cli_main
from algoperf.cli import prepare as prepare_cli
from algoperf.config import RunConfig
from algoperf.config_args import Parser, add_config_arguments
from algoperf.workloads.mnist import input_pipeline as mnist
from algoperf.workloads.mnist import prepare as mnist_prepare

ROOT = pathlib.Path(__file__).resolve().parent.parent
LIBRARY_FOLDERS = ("algoperf", "workloads", "launch", "cli", "submissions")
ROOT_LOGGER_CALLS = {"debug", "info", "warning", "error", "exception", "critical", "log"}
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}


@pytest.fixture(autouse=True)
def loud_again():
    yield
    console.set_quiet(False)  # main() sets it per command; leave no quiet state behind
    common.configure_logging()
    for handler in common._handler:  # nor the command line's handler
        logging.getLogger().removeHandler(handler)
    common._handler.clear()


def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    """`algoperf argv...` in this process: (exit status, stdout, stderr)."""
    try:
        code = cli_main.main(list(argv))
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- logging --------------------------------------------------------------------------------
def test_library_modules_log_through_named_loggers():
    """`logging.warning(...)` at module level installs a root handler in the user's process."""
    calls = []
    for folder in LIBRARY_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "logging"
                    and (node.func.attr in ROOT_LOGGER_CALLS or node.func.attr == "basicConfig")
                ):
                    calls.append(f"{path.relative_to(ROOT)}:{node.lineno} logging.{node.func.attr}")
    assert calls == []


def test_the_mnist_fallback_in_a_library_process(tmp_path):
    """Library use: no root handler installed, no `WARNING:root:` line, the fallback said once
    and saying that downloading was off."""
    code = (
        "import logging, sys\n"
        "from algoperf.workloads.mnist import input_pipeline as mnist\n"
        "splits = mnist.load_splits(sys.argv[1], layout='NCHW', allow_download=False)\n"
        "print(len(splits['train']), len(logging.getLogger().handlers))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "none")],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["4000", "0"]  # the sample; the root logger has no handler
    assert "WARNING:root:" not in done.stderr
    assert done.stderr.count("MNIST not found") == 1
    assert "downloading is off (--download false)" in done.stderr
    assert "could not be downloaded" not in done.stderr


def test_log_level_is_checked_case_insensitive_on_every_subcommand(capsys, tmp_path):
    code, _, err = run_main(capsys, "run", "--log_level", "LOUD")
    assert code == 2
    assert err.strip().splitlines() == [
        "algoperf run: error: argument --log_level/--log-level: invalid level 'LOUD' "
        "(choose from debug, info, warning, error)"
    ]
    parser = cli_main.build_parser()
    commands = [
        ["run"],
        ["tune"],
        ["score", "--submission_directory", "x"],
        ["check-logs", "x"],
        ["list"],
        ["prepare", "mnist"],
        ["launch", "status", "x"],
        ["launch", "slurm", "x"],
        ["launch", "local", "x"],
        ["launch", "cancel", "x"],
    ]
    for command in commands:
        args, _ = parser.parse_known_args([*command, "--log_level", "INFO", "-q"])
        assert (args.log_level, args.quiet) == ("info", True), command
        args, _ = parser.parse_known_args(command)
        assert (args.log_level, args.quiet) == ("warning", False), command
        code, _, err = run_main(capsys, *command, "--log-level", "loud")
        assert code == 2 and len(err.strip().splitlines()) == 1, command


def test_the_cli_handler_formats_and_replaces_itself(capsys):
    common.configure_logging("info")
    common.configure_logging("warning")  # a second command in one process: still one handler
    logging.getLogger("algoperf.workloads.mnist.input_pipeline").info("not shown")
    logging.getLogger("algoperf.workloads.mnist.input_pipeline").warning("shown %d", 1)
    assert capsys.readouterr().err == "[algoperf] warning: shown 1\n"


# --- the reporter and --quiet ----------------------------------------------------------------
def mnist_mirror(tmp_path, monkeypatch) -> None:
    """MNIST's four files served from a local folder (file:// URLs) with their own md5s."""
    source = tmp_path / "mirror"
    source.mkdir()
    rng = np.random.default_rng(0)
    shapes = {"train-images": (70, 28, 28), "t10k-images": (12, 28, 28)}
    md5s = {}
    for name in mnist_prepare.FILES:
        kind = name.rsplit("-", 2)[0]
        array = rng.integers(0, 256, shapes[kind]) if kind in shapes else np.arange(70) % 10
        if kind == "t10k-labels":
            array = np.arange(12) % 10
        mnist.write_idx(source / name.removesuffix(".gz"), array, compress=True)
        md5s[name] = hashlib.md5((source / name).read_bytes()).hexdigest()
    monkeypatch.setattr(mnist_prepare, "MIRRORS", (source.as_uri() + "/",))
    monkeypatch.setattr(mnist_prepare, "FILES", md5s)


def test_prepare_mnist_offline_and_quiet(tmp_path, monkeypatch, capsys):
    mnist_mirror(tmp_path, monkeypatch)
    data = tmp_path / "data"
    code, out, err = run_main(capsys, "prepare", "mnist", "--data_dir", str(data))
    assert code == 0, err
    assert out == f"MNIST ready in {data / 'mnist'}; train with --data_dir {data}\n"
    assert err.count("[algoperf prepare] downloading ") == 4
    assert len(mnist.load_splits(str(data), layout="NCHW", allow_download=False)["train"]) == 58
    capsys.readouterr()  # its warning: 70 images are not the 60,000
    again = tmp_path / "again"
    code, out, err = run_main(capsys, "prepare", "mnist", "--data_dir", str(again), "--quiet")
    assert code == 0 and err == "" and out.startswith("MNIST ready in")  # the result still prints
    code, out, err = run_main(capsys, "prepare", "mnist_variant", "--data_dir", str(data))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("algoperf prepare: error: unknown workload 'mnist_variant'")


def test_quiet_silences_status_lines_not_warnings(capsys):
    console.say("status")
    console.set_quiet(True)
    console.say("hidden")
    console.warn("careful")
    console.say("resume with X", even_if_quiet=True)
    assert capsys.readouterr().err == (
        "[algoperf] status\n[algoperf] warning: careful\n[algoperf] resume with X\n"
    )


def test_quiet_turns_the_progress_line_off_unless_asked():
    parser = cli_main.build_parser()
    values = cli_main._config_values(parser.parse_args(["run", "-q"]))
    assert values["progress"] is False
    values = cli_main._config_values(parser.parse_args(["run", "-q", "--progress"]))
    assert values["progress"] is True
    assert "progress" not in cli_main._config_values(parser.parse_args(["run"]))


# --- --version, help, booleans, choices -----------------------------------------------------
def test_version(capsys):
    code, out, _ = run_main(capsys, "--version")
    assert code == 0 and out == f"algoperf {__version__}\n"


def test_help_shows_the_examples_as_written(capsys):
    code, out, _ = run_main(capsys, "run", "--help")
    assert code == 0
    assert "--data_dir ~/data \\\n      --submission_path submissions/adamw/" in out
    assert "--tuning_ruleset self \\\n      --submission_path" in out


def every_help(parser: argparse.ArgumentParser):
    yield parser.prog, parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from every_help(child)


def test_no_help_says_its_default_twice():
    seen = []
    for prog, text in every_help(cli_main.build_parser()):
        seen.append(prog)
        for entry in text.split("\n  -"):
            assert entry.lower().count("default:") <= 1, (prog, entry)
    assert "algoperf launch slurm" in seen and "algoperf prepare" in seen


SPELLINGS = {
    (): None,
    ("--{}",): True,
    ("--{}=false",): False,
    ("--{}=TRUE",): True,
    ("--{}", "false"): False,
    ("--{}", "1"): True,
    ("--no{}",): False,
}


@pytest.mark.parametrize(("spelling", "expected"), SPELLINGS.items())
def test_booleans_parse_the_same_everywhere(spelling, expected):
    parser = cli_main.build_parser()

    def parsed(prefix, name, suffix=()):
        flags = [part.format(name) for part in spelling]
        args = parser.parse_args([*prefix, *flags, *suffix])
        return getattr(args, name, None)

    assert parsed(["run"], "save_checkpoints") == expected
    assert parsed(["run"], "torch_compile") == expected
    off = False if expected is None else expected
    for command in ("slurm", "local"):
        for name in ("dry_run", "retry_failed") + (("wait",) if command == "slurm" else ()):
            # the bare flag also works before the positional sweep file
            assert parsed(["launch", command], name, ["s.toml"]) == off, (command, name)
    assert parsed(["score", "--submission_directory", "d"], "strict") == off
    assert parsed(["list"], "json") == off
    run_args = Parser(add_help=False, exit_on_error=False)  # a sweep file's run_args
    add_config_arguments(run_args)
    flags = [part.format("overwrite") for part in spelling]
    assert getattr(run_args.parse_known_args(flags)[0], "overwrite", None) == expected


def test_choices_are_enforced(capsys):
    for argv in (
        ["run", "--framework", "torch"],
        ["run", "--tuning_ruleset", "internal"],
        ["run", "--benchmark_version", "v9"],
        ["list", "--benchmark_version", "v2.0"],
        ["launch", "slurm", "s.toml", "--cluster", "aws"],
    ):
        code, _, err = run_main(capsys, *argv)
        assert code == 2 and "invalid choice" in err and err.count("\n") == 1, argv
    args = cli_main.build_parser().parse_args(["run", "--benchmark_version", "0.6"])
    assert args.benchmark_version == "v0.6"


# --- the torch.compile default ----------------------------------------------------------------
def test_torch_compile_follows_the_device(capsys):
    from algoperf import trial
    from algoperf.torch.backend import TorchBackend

    assert RunConfig().torch_compile is None
    cpu, cuda = types.SimpleNamespace(_cuda=False), types.SimpleNamespace(_cuda=True)
    assert TorchBackend.compile_choice(cpu, None)[0] is False
    assert TorchBackend.compile_choice(cuda, None)[0] is True
    assert TorchBackend.compile_choice(cpu, True) == (True, "--torch_compile true")
    assert TorchBackend.compile_choice(cuda, False) == (False, "--torch_compile false")

    backend = types.SimpleNamespace(
        rank=0, compile_choice=lambda requested: TorchBackend.compile_choice(cpu, requested)
    )
    workload = types.SimpleNamespace(spec=workloads.get_spec("criteo1tb"))
    config = trial._choose_compile(RunConfig(), backend, workload)
    assert config.torch_compile is False  # flags_0.json records the choice
    assert capsys.readouterr().err == (
        "[algoperf] torch.compile off: the default on CPUs, where the compiled step measured "
        "slower than eager (--torch_compile true compiles)\n"
    )
    config = trial._choose_compile(RunConfig(torch_compile=True), backend, workload)
    assert config.torch_compile is True
    assert capsys.readouterr().err == (
        "[algoperf] torch.compile on: --torch_compile true; criteo1tb's compile policy keeps "
        "its model eager\n"
    )
    backend.rank = 1
    trial._choose_compile(RunConfig(), backend, workload)
    assert capsys.readouterr().err == ""  # said once, by rank 0
    jax_backend = types.SimpleNamespace(rank=0)
    assert trial._choose_compile(RunConfig(), jax_backend, workload).torch_compile is None


@pytest.mark.slow
def test_a_run_starts_with_its_compile_choice_and_one_fallback_warning(tmp_path):
    command = [sys.executable, "-m", "algoperf", "run", "--max_global_steps", "1"]
    command += ["--data_dir", str(tmp_path / "none"), "--experiment_dir", str(tmp_path / "e")]
    command += ["--download", "false", "--rng_seed", "0", "--progress", "false"]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stderr.splitlines()
    assert lines[0].startswith("[algoperf] torch.compile off: the default on CPUs")
    assert lines[1].startswith("[algoperf] warning: MNIST not found: ")
    assert "downloading is off" in lines[1] and "WARNING:root:" not in done.stderr
    assert done.stderr.count("MNIST not found") == 1
    flags = json.loads(next((tmp_path / "e").rglob("flags_0.json")).read_text())
    assert flags["torch_compile"] is False


# --- prepare and list --json ---------------------------------------------------------------
def test_prepare_maps_workloads_and_variants_to_their_dataset(monkeypatch):
    assert prepare_cli.dataset_of("imagenet_resnet_silu") == "imagenet"
    assert prepare_cli.dataset_of("imagenet_vit") == "imagenet"
    assert prepare_cli.dataset_of("imagenet") == "imagenet"
    assert prepare_cli.dataset_of("ogbg_gelu") == "ogbg"
    assert prepare_cli.dataset_of("fastmri_tanh") == "fastmri"
    # A dataset without a prepare module (every dataset gets one in time: pretend wmt's is missing).
    prepared = [d for d in prepare_cli.datasets_with_prepare() if d != "wmt"]
    monkeypatch.setattr(prepare_cli, "datasets_with_prepare", lambda: prepared)
    with pytest.raises(ValueError, match="has no prepare step"):
        prepare_cli.dataset_of("wmt_post_ln")


def test_prepare_passes_its_dataset_flags_through(tmp_path, monkeypatch, capsys):
    seen = []
    module = types.SimpleNamespace(main=lambda argv: seen.append(argv) or 0)
    monkeypatch.setattr(prepare_cli, "prepare_module", lambda dataset: module)
    argv = ["prepare", "imagenet_resnet", "--data_dir", "D", "--splits", "train"]
    code, _, _ = run_main(capsys, *argv, "--archive_dir", "A", "-q")
    assert code == 0
    assert seen == [["--data_dir", "D", "--splits", "train", "--archive_dir", "A"]]
    code, _, err = run_main(capsys, "run", "--splits", "train")  # other commands refuse them
    assert code == 2 and "unrecognized arguments: --splits train" in err


def test_list_json_covers_every_name(capsys):
    code, out, _ = run_main(capsys, "list", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [row["name"] for row in rows] == workloads.names()
    by_name = {row["name"]: row for row in rows}
    assert by_name["imagenet_resnet_silu"]["dataset"] == "imagenet"
    assert by_name["imagenet_resnet_silu"]["variant"] is True
    assert by_name["mnist"]["models"] == ["pytorch", "jax"]
    assert by_name["ogbg"]["scored"] is True and by_name["mnist"]["scored"] is False
    assert by_name["mnist"]["max_allowed_runtime_sec"] == 60
    old = json.loads(run_main(capsys, "list", "--json", "--benchmark_version", "v0.5")[1])
    assert {row["name"] for row in old if row["held_out"]} == set(
        workloads.HELD_OUT_WORKLOADS["v0.5"]
    )
