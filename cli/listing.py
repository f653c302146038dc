"""`algoperf list`: every workload and variant with its metric, target, budget and models (a
table, or `--json` for scripts)."""

from __future__ import annotations

import argparse
import json

from algoperf import versions
from algoperf.config_args import add_bool_argument, version_name


def add_command(subparsers) -> None:
    """Adds `list` to an argparse subparsers object (it sets `func`)."""
    list_parser = subparsers.add_parser(
        "list",
        help="list workloads, variants, targets, budgets",
        description="Every registered workload and variant: target metric, validation target, "
        "budget and which frameworks have its model; scored workloads of the version starred.",
    )
    list_parser.add_argument(
        "--benchmark_version",
        "--benchmark-version",
        type=version_name,
        choices=tuple(versions.VERSIONS),
        default=versions.DEFAULT_VERSION,
        metavar="{" + ",".join(versions.VERSIONS) + "}",
        help=f"whose budgets and scored workloads to show (default: {versions.DEFAULT_VERSION})",
    )
    add_bool_argument(
        list_parser,
        "json",
        help="print a JSON list instead of the table: one object per name, every fact the "
        "table shows and more (default: false)",
    )
    list_parser.set_defaults(func=command_list)


def workload_facts(version: str) -> list[dict]:
    """One dict per registered workload and variant, in registration order."""
    from algoperf import workloads

    scored = set(workloads.SCORED_WORKLOADS.get(version, ()))
    held_out = set(workloads.HELD_OUT_WORKLOADS.get(version, ()))
    models = {framework: set(workloads.available(framework)) for framework in workloads.FRAMEWORKS}
    facts = []
    for name in workloads.names():
        spec = workloads.get_spec(name)
        budget = spec.budgets.get(version)
        facts.append(
            {
                "name": name,
                "base": spec.base,
                "dataset": spec.dataset,
                "variant": name != spec.base,
                "description": spec.description,
                "target_metric": spec.target_metric_name,
                "higher_is_better": spec.higher_is_better,
                "validation_target": spec.validation_target,
                "test_target": spec.test_target,
                "benchmark_version": version,
                "scored": name in scored,
                "held_out": name in held_out,
                "max_allowed_runtime_sec": budget.max_allowed_runtime_sec if budget else None,
                "eval_period_time_sec": budget.eval_period_time_sec if budget else None,
                "step_hint": budget.step_hint if budget else None,
                "budget_versions": sorted(spec.budgets),
                "models": [f for f in workloads.FRAMEWORKS if name in models[f]],
                "num_train_examples": spec.num_train_examples,
                "num_validation_examples": spec.num_validation_examples,
                "num_test_examples": spec.num_test_examples,
            }
        )
    return facts


def command_list(args: argparse.Namespace) -> int:
    """Prints the table (scored workloads of `--benchmark_version` starred) or, with --json,
    the facts as JSON on stdout."""
    version = args.benchmark_version
    facts = workload_facts(version)
    if args.json:
        print(json.dumps(facts, indent=1))
        return 0
    header = f"{'workload':46} {'metric':24} {'val target':>10} {'budget s':>9} {'models':12}"
    print(header)
    print("-" * len(header))
    short = {"pytorch": "pt", "jax": "jax"}
    for row in facts:
        direction = "↑" if row["higher_is_better"] else "↓"
        models = ",".join(short[f] for f in row["models"])
        tag = " *" if row["scored"] else ""
        budget = row["max_allowed_runtime_sec"]
        print(
            f"{row['name'] + tag:46} {row['target_metric'] + ' ' + direction:24} "
            f"{row['validation_target']:>10g} "
            f"{(f'{budget:g}' if budget is not None else '-'):>9} {models or '-':12}"
        )
    print(f"\n* scored in benchmark {version}; models: frameworks whose model is implemented.")
    return 0
