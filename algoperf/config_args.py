"""argparse for every `algoperf` command: the flag conventions, and options built from a config
dataclass (`RunConfig`, `SweepConfig`), one per field.

The `algoperf` command (cli/) and sweep files' `run_args` (launch/) both parse flags this way, so
a flag means the same in both. Flag names are the field names (upstream's), dashed spellings too.
A boolean takes `--flag`, `--flag=false`, `--flag false` or `--noflag` (`add_bool_argument`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from algoperf.config import RunConfig, field_docs

ALIASES = {"num_tuning_trials": ["--num_trials", "--num-trials"]}
"""Shorter spellings (issue wording and common habit) for a few upstream flags."""
CHOICES = {
    "framework": ("pytorch", "jax"),
    "tuning_ruleset": ("external", "self"),
}
"""Fields whose values form a fixed set (argparse refuses anything else)."""
TRUE_WORDS = ("1", "true", "yes", "y", "on")
FALSE_WORDS = ("0", "false", "no", "n", "off")


def parse_bool(text: str) -> bool:
    """`true`/`false` and the usual spellings (1/0, yes/no, on/off) as a bool.

    Raises:
        argparse.ArgumentTypeError: Anything else.
    """
    lowered = str(text).lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class BoolFlag(argparse.Action):
    """A boolean option whose value is optional: `--flag` alone means true."""

    def __init__(self, option_strings, dest, default=None, help=None, **kwargs):
        kwargs.update(nargs="?", const=True, type=parse_bool, metavar="BOOL")
        super().__init__(option_strings, dest, default=default, help=help, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)


def add_bool_argument(
    parser: argparse.ArgumentParser,
    name: str,
    *,
    help: str,
    default=False,
    short: str | None = None,
) -> None:
    """`--name [BOOL]` (also dashed, and `short`, e.g. `-q`), `--noname`/`--no-name` for false:
    the one boolean convention of every `algoperf` command."""
    dashed = name.replace("_", "-")
    names = ([short] if short else []) + [f"--{name}"] + ([f"--{dashed}"] if dashed != name else [])
    parser.add_argument(*names, dest=name, action=BoolFlag, default=default, help=help)
    negatives = [f"--no{name}"] + ([f"--no-{dashed}"] if dashed != name else [f"--no-{name}"])
    parser.add_argument(
        *negatives, dest=name, action="store_false", default=default, help=argparse.SUPPRESS
    )


class Parser(argparse.ArgumentParser):
    """argparse with the command line's conventions.

    A usage error is one line (`algoperf run: error: ...`, exit 2) rather than the whole usage
    block. A boolean flag followed by a word that is not true/false takes no value, so
    `--wait sweep.toml` leaves `sweep.toml` to the positional argument.
    """

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(self._bare_booleans(args), namespace)

    def _bare_booleans(self, args: list[str]) -> list[str]:
        flags = {
            option
            for action in self._actions
            if isinstance(action, BoolFlag)
            for option in action.option_strings
        }
        words = {*TRUE_WORDS, *FALSE_WORDS}
        rewritten = []
        for index, arg in enumerate(args):
            if arg == "--":
                return rewritten + args[index:]
            following = args[index + 1] if index + 1 < len(args) else None
            if arg in flags and (following is None or following.lower() not in words):
                arg = f"{arg}=true"
            rewritten.append(arg)
        return rewritten


def version_name(text: str) -> str:
    """A benchmark version as `vX.Y` (`1.0` is accepted for `v1.0`)."""
    return text if text.startswith("v") else f"v{text}"


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _base_type(annotation: str):
    hints = {"int": int, "str": str, "bool": bool, "float": float, "tuple[str": _names}
    for name, kind in hints.items():
        if annotation.startswith(name):
            return kind
    raise TypeError(f"unsupported config field type {annotation}")


def _help(doc: str, default) -> str:
    """The field's docstring, and its default where the docstring does not already say it."""
    if "default" in doc.lower() or default is None or default == "":
        return doc
    shown = str(default).lower() if isinstance(default, bool) else default
    return f"{doc} (default: {shown})"


def add_config_arguments(parser: argparse.ArgumentParser, config_class=RunConfig) -> None:
    """One option per config field, underscore and dashed spellings, help from its docstring.

    Options default to `argparse.SUPPRESS`, so the parsed namespace holds only the flags given
    and the dataclass keeps its own defaults. A bool field follows `add_bool_argument`.
    """
    from algoperf import versions

    choices = {**CHOICES, "benchmark_version": tuple(versions.VERSIONS)}
    docs = field_docs(config_class)
    for field in dataclasses.fields(config_class):
        annotation = field.type if isinstance(field.type, str) else str(field.type)
        kind = _base_type(annotation)
        help_text = _help(docs.get(field.name, ""), field.default)
        if kind is bool:
            add_bool_argument(parser, field.name, help=help_text, default=argparse.SUPPRESS)
            continue
        names = [f"--{field.name}"]
        if "_" in field.name:
            names.append(f"--{field.name.replace('_', '-')}")
        names += ALIASES.get(field.name, [])
        fixed = choices.get(field.name)
        parser.add_argument(
            *names,
            dest=field.name,
            type=version_name if field.name == "benchmark_version" else kind,
            choices=fixed,
            default=argparse.SUPPRESS,
            metavar="{" + ",".join(fixed) + "}" if fixed else field.name.upper(),
            help=help_text,
        )
