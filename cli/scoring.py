"""`algoperf score` and `algoperf check-logs`: added to the main parser by `add_commands`.

Flags keep upstream's names (`--submission_directory`, `--self_tuning_ruleset`, ...); dashed
spellings work too. pandas and matplotlib are imported only when a command runs. The registry's
facts reach `algoperf.scoring` as data: the `WorkloadCatalog` of `cli.catalog`.
"""

from __future__ import annotations

import argparse
import sys

from algoperf.config_args import add_bool_argument, version_name

MAX_WARNINGS = 20
"""Warnings printed by `algoperf score` before the rest are summed up in one line."""
SCORE_EXAMPLES = """\
examples:
  algoperf score --submission_directory logs/external_tuning --targets v0.6 --output_dir out
  algoperf score --submission_directory logs/self_tuning --self_tuning_ruleset --targets v0.5
  algoperf score --submission_directory logs --targets my_targets.json --strict

Expected layout: DIR/<submission>/<study>/<workload>_<jax|pytorch>/trial_<k>/eval_measurements.csv
"""
CHECK_EXAMPLES = """\
examples:
  algoperf check-logs experiments/nadamw_external
  algoperf check-logs experiments --search_space submissions/adamw/tuning_search_space.json
"""


def _flag(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """An option under its upstream underscore name and its dashed spelling."""
    names = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    parser.add_argument(*names, dest=name, **kwargs)


def _bool_flag(
    parser: argparse.ArgumentParser, name: str, help_text: str, default: bool = False
) -> None:
    shown = "" if "default" in help_text else f" (default: {str(default).lower()})"
    add_bool_argument(parser, name, help=help_text + shown, default=default)


def add_commands(subparsers) -> None:
    """Adds `score` and `check-logs` to an argparse subparsers object (each sets `func`)."""
    from algoperf import versions
    from algoperf.scoring.targets import FILE_FORMAT_HELP

    score = subparsers.add_parser(
        "score",
        help="score submissions from their logs (performance profiles; docs/rules.md, Scoring)",
        description="Score every submission under a ruleset directory together: time to "
        "target per trial, study and workload, performance profiles and the benchmark score. "
        "Writes CSV tables, PNG plots and summary.md into --output_dir.",
        epilog=SCORE_EXAMPLES + "\n" + FILE_FORMAT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _flag(score, "submission_directory", required=True, metavar="DIR", help="the ruleset dir")
    _flag(
        score,
        "targets",
        default=versions.DEFAULT_VERSION,
        metavar="VERSION|FILE",
        help=f"{', '.join(versions.VERSIONS)} (the registry's targets) or a targets JSON file "
        f"(default: {versions.DEFAULT_VERSION})",
    )
    _bool_flag(score, "self_tuning_ruleset", "score self-tuning logs (no trial-count check)")
    _bool_flag(
        score, "strict", "fail on wrong workload, study or trial counts, or unreadable eval rows"
    )
    _flag(
        score,
        "output_dir",
        default="scoring_results",
        metavar="OUT",
        help="output folder (default: scoring_results)",
    )
    _flag(
        score,
        "base_submission",
        default=None,
        metavar="NAME",
        help="the submission speedups are measured against (default: the first, sorted)",
    )
    _bool_flag(score, "plots", "write PNG plots (default: true; --plots false to skip)", True)
    score.set_defaults(func=command_score)

    check = subparsers.add_parser(
        "check-logs",
        help="check trial logs against the timing rules (eval period, budget, hparams)",
        description="Check every trial (a folder with eval_measurements.csv) under DIR.",
        epilog=CHECK_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("directory", metavar="DIR", help="folder to search for trials")
    _flag(check, "search_space", default=None, metavar="FILE", help="tuning_search_space.json")
    _flag(
        check,
        "benchmark_version",
        type=version_name,
        choices=tuple(versions.VERSIONS),
        default=None,
        metavar="{" + ",".join(versions.VERSIONS) + "}",
        help="override the version the logs record (default: from the logs, else v1.0)",
    )
    _flag(
        check,
        "tolerance_s",
        type=float,
        default=None,
        metavar="SECONDS",
        help="slack of the eval-period rule (default: 1.0)",
    )
    check.set_defaults(func=command_check_logs)


def _error(command: str, error: Exception) -> int:
    print(f"algoperf {command}: error: {error}", file=sys.stderr)
    return 2


def _warn(messages: list[str], limit: int = MAX_WARNINGS) -> None:
    for message in messages[:limit]:
        print(f"algoperf score: warning: {message}", file=sys.stderr)
    if len(messages) > limit:
        print(
            f"algoperf score: warning: ... and {len(messages) - limit} more like these",
            file=sys.stderr,
        )


def command_score(args: argparse.Namespace) -> int:
    """Runs `algoperf score`; 0 on success, 2 on bad input."""
    from algoperf.cli.catalog import workload_catalog
    from algoperf.scoring import read, report, score, targets

    catalog = workload_catalog()
    try:
        target_set = targets.load_targets(args.targets, catalog=catalog)
        logs = read.read_logs(args.submission_directory, target_set, catalog=catalog)
        problems = score.strict_problems(logs, target_set, self_tuning=args.self_tuning_ruleset)
        problems = [*logs.unreadable_rows, *problems]
        if problems and args.strict:
            raise ValueError(f"--strict: {problems[0]} ({len(problems)} problems in all)")
        _warn([*logs.notes, *problems])
        result = score.score_logs(logs, target_set)
        speedup_table = None
        if len(result.times) >= 2:
            base = args.base_submission or result.times.index[0]
            stand_ins = score.infinity_stand_ins(
                target_set, catalog=catalog, self_tuning=args.self_tuning_ruleset
            )
            speedup_table = score.speedups(result.times, base, stand_ins)
        written = report.write_report(
            result,
            logs,
            target_set,
            args.output_dir,
            speedup_table=speedup_table,
            self_tuning=args.self_tuning_ruleset,
            plots=args.plots,
        )
    except (ValueError, FileNotFoundError) as error:
        return _error("score", error)
    for submission, value in result.scores.sort_values(ascending=False, kind="stable").items():
        print(f"{submission:40} {value:.4f}")
    print(f"wrote {len(written)} files to {args.output_dir}")
    if logs.unreadable_rows:
        print(
            f"{len(logs.unreadable_rows)} unreadable eval rows skipped (see the warnings; "
            "--strict refuses them)"
        )
    return 0


def command_check_logs(args: argparse.Namespace) -> int:
    """Runs `algoperf check-logs`; 0 if no violation (warnings allowed), 1 if any, 2 on bad
    input."""
    from algoperf.cli.catalog import workload_catalog
    from algoperf.scoring import check_logs
    from algoperf.search_space import load_search_space

    tolerance = check_logs.EVAL_PERIOD_TOLERANCE_S if args.tolerance_s is None else args.tolerance_s
    try:
        space = None if args.search_space is None else load_search_space(args.search_space)
        reports = check_logs.check_logs(
            args.directory,
            catalog=workload_catalog(),
            search_space=space,
            version=args.benchmark_version,
            tolerance_s=tolerance,
        )
    except (ValueError, FileNotFoundError) as error:
        return _error("check-logs", error)
    violations = [violation for trial in reports for violation in trial.violations]
    warnings = [warning for trial in reports for warning in trial.warnings]
    for violation in violations:
        print(violation)
    for warning in warnings:
        print(f"warning: {warning}")
    unchecked = sum(not trial.hparams_checked for trial in reports)
    note = (
        f" (hparams not checked in {unchecked}: no search space found; pass --search_space)"
        if unchecked
        else ""
    )
    if warnings:
        note = f", {len(warnings)} warnings{note}"
    if violations:
        failing = sum(bool(trial.violations) for trial in reports)
        print(f"{len(reports)} trials checked, {len(violations)} violations in {failing}{note}")
        return 1
    print(f"{len(reports)} trials checked, no violations{note}")
    return 0
