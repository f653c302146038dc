"""`algoperf ...` with the dry-run workload registered (tests/workloads_ext/dryrun): what a project
adding a workload gets by adding its name to `workloads.BASE_WORKLOADS`.

    python tests/workloads_ext/run_with_dryrun.py run --workload dryrun ...
    torchrun --standalone --nproc_per_node=2 tests/workloads_ext/run_with_dryrun.py run ...
"""

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # the repository root

from algoperf import workloads  # noqa: E402


def register() -> None:
    """Make `workloads.dryrun` importable and registered (before the registry is first read)."""
    if str(HERE) not in workloads.__path__:
        workloads.__path__.append(str(HERE))
    if "dryrun" not in workloads.BASE_WORKLOADS:
        workloads.BASE_WORKLOADS = (*workloads.BASE_WORKLOADS, "dryrun")
    workloads._table.cache_clear()
    workloads.get_spec.cache_clear()


if __name__ == "__main__":
    register()
    from algoperf.cli.main import main

    sys.exit(main(sys.argv[1:]))
