"""argparse options built from a config dataclass (`RunConfig`, `SweepConfig`): one per field.

The `algoperf` command (cli/) and sweep files' `run_args` (launch/) both parse flags this way, so
a flag means the same in both. Flag names are the field names (upstream's), dashed spellings too.
"""

from __future__ import annotations

import argparse
import dataclasses

from algoperf.config import RunConfig, field_docs

ALIASES = {"num_tuning_trials": ["--num_trials", "--num-trials"]}
"""Shorter spellings (issue wording and common habit) for a few upstream flags."""


def parse_bool(text: str) -> bool:
    """`true`/`false` and the usual spellings (1/0, yes/no, on/off) as a bool.

    Raises:
        argparse.ArgumentTypeError: Anything else.
    """
    lowered = str(text).lower()
    if lowered in ("1", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _base_type(annotation: str):
    hints = {"int": int, "str": str, "bool": bool, "float": float, "tuple[str": _names}
    for name, kind in hints.items():
        if annotation.startswith(name):
            return kind
    raise TypeError(f"unsupported config field type {annotation}")


def add_config_arguments(parser: argparse.ArgumentParser, config_class=RunConfig) -> None:
    """One option per config field, underscore and dashed spellings, help from its docstring.

    Options default to `argparse.SUPPRESS`, so the parsed namespace holds only the flags given
    and the dataclass keeps its own defaults. A bool field also gets `--no<field>`.
    """
    docs = field_docs(config_class)
    for field in dataclasses.fields(config_class):
        annotation = field.type if isinstance(field.type, str) else str(field.type)
        kind = _base_type(annotation)
        names = [f"--{field.name}"]
        if "_" in field.name:
            names.append(f"--{field.name.replace('_', '-')}")
        names += ALIASES.get(field.name, [])
        default = field.default
        help_text = f"{docs.get(field.name, '')} (default: {default})"
        if kind is bool:
            parser.add_argument(
                *names,
                dest=field.name,
                type=parse_bool,
                nargs="?",
                const=True,
                default=argparse.SUPPRESS,
                metavar="BOOL",
                help=help_text,
            )
            negatives = [f"--no{field.name}", f"--no-{field.name.replace('_', '-')}"]
            parser.add_argument(
                *negatives,
                dest=field.name,
                action="store_false",
                default=argparse.SUPPRESS,
                help=argparse.SUPPRESS,
            )
        else:
            parser.add_argument(
                *names,
                dest=field.name,
                type=kind,
                default=argparse.SUPPRESS,
                metavar=field.name.upper(),
                help=help_text,
            )
