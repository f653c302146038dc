"""`algoperf list`: every workload and variant with its metric, target, budget and models."""

from __future__ import annotations

import argparse


def add_command(subparsers) -> None:
    """Adds `list` to an argparse subparsers object (it sets `func`)."""
    list_parser = subparsers.add_parser("list", help="list workloads, variants, targets, budgets")
    list_parser.add_argument("--benchmark_version", "--benchmark-version", default="v1.0")
    list_parser.set_defaults(func=command_list)


def command_list(args: argparse.Namespace) -> int:
    """Prints the table; scored workloads of `--benchmark_version` are starred."""
    from algoperf import workloads

    version = args.benchmark_version
    scored = set(workloads.SCORED_WORKLOADS.get(version, ()))
    header = f"{'workload':46} {'metric':24} {'val target':>10} {'budget s':>9} {'models':12}"
    print(header)
    print("-" * len(header))
    torch_models = set(workloads.available("pytorch"))
    jax_models = set(workloads.available("jax"))
    for name in workloads.names():
        spec = workloads.get_spec(name)
        budget = spec.budgets.get(version)
        direction = "↑" if spec.higher_is_better else "↓"
        models = ",".join(f for f, s in (("pt", torch_models), ("jax", jax_models)) if name in s)
        tag = " *" if name in scored else ""
        print(
            f"{name + tag:46} {spec.target_metric_name + ' ' + direction:24} "
            f"{spec.validation_target:>10g} "
            f"{(f'{budget.max_allowed_runtime_sec:g}' if budget else '-'):>9} {models or '-':12}"
        )
    print(f"\n* scored in benchmark {version}; models: frameworks whose model is implemented.")
    return 0
