"""launch/torchrun.py builds the single-node torchrun command line."""

import sys

import pytest

from algoperf.launch.torchrun import main, torchrun_command


def test_torchrun_command():
    command = torchrun_command(4, ["--workload", "cifar"])
    assert command[:4] == [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    assert command[4:] == ["--nproc_per_node=4", "-m", "algoperf", "run", "--workload", "cifar"]
    with pytest.raises(ValueError, match="nproc_per_node"):
        torchrun_command(0, [])


def test_cli_prints_the_command(capsys):
    assert main(["--nproc_per_node", "2", "--", "--workload", "mnist"]) == 0
    assert "--nproc_per_node=2 -m algoperf run --workload mnist" in capsys.readouterr().out
