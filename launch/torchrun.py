"""Build the torchrun command that runs `algoperf run` on N processes of one node.

`python -m algoperf.launch.torchrun --nproc_per_node 4 -- --workload cifar --data_dir ~/data`
prints the command; `--exec` runs it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys


def torchrun_command(
    nproc_per_node: int,
    algoperf_args: list[str],
    *,
    python: str | None = None,
    command: str = "run",
) -> list[str]:
    """The argv of a single-node torchrun launch of `algoperf <command> <algoperf_args>`."""
    if nproc_per_node < 1:
        raise ValueError("--nproc_per_node must be at least 1.")
    return [
        python or sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={nproc_per_node}", "-m", "algoperf", command, *algoperf_args,
    ]  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc_per_node", "--nproc-per-node", type=int, default=1)
    parser.add_argument("--exec", action="store_true", help="run the command instead of printing")
    parser.add_argument("algoperf_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    rest = args.algoperf_args[1:] if args.algoperf_args[:1] == ["--"] else args.algoperf_args
    command = torchrun_command(args.nproc_per_node, rest)
    if not args.exec:
        print(shlex.join(command))
        return 0
    os.execvp(command[0], command)
    return 1


if __name__ == "__main__":
    sys.exit(main())
