"""The `algoperf` command, composed outside the core: `cli.main` builds it from the subcommands.

This layer reads the workload registry and hands its facts to `algoperf` as data (`catalog`);
the core never imports `cli` (except `python -m algoperf`, whose `__main__` calls `cli.main`).
"""
