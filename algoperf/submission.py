"""Load a submission from a file path and check it, with one-line errors that name the fix."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import inspect
import os
import pathlib
import sys
from collections.abc import Callable
from types import ModuleType

# name -> number of positional parameters upstream passes (docs/rules.md, "Submission API").
REQUIRED = {
    "get_batch_size": 1,
    "init_optimizer_state": 5,
    "update_params": 11,
    "data_selection": 8,
}
OPTIONAL = {"prepare_for_eval": 10, "get_eval_batch_size": 1}


class SubmissionError(ValueError):
    """A submission file that cannot be used; the message says what to fix."""


@dataclasses.dataclass(frozen=True)
class Submission:
    """The checked functions of a submission module."""

    path: pathlib.Path
    module: ModuleType
    get_batch_size: Callable
    init_optimizer_state: Callable
    update_params: Callable
    data_selection: Callable
    prepare_for_eval: Callable | None
    get_eval_batch_size: Callable | None
    update_params_takes_train_state: bool

    @property
    def name(self) -> str:
        return self.path.parent.name


def _accepts(function: Callable, count: int) -> bool:
    """Whether `function` can be called with `count` positional arguments."""
    try:
        inspect.signature(function).bind(*range(count))
    except TypeError:
        return False
    return True


def _import(path: pathlib.Path) -> ModuleType:
    # Sibling modules and the working directory must be importable (docs/rules.md,
    # "Submission API").
    for folder in (str(path.parent), os.getcwd()):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    module_name = f"algoperf_submission_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[module_name]
        raise SubmissionError(
            f"submission {path}: importing it failed with {type(error).__name__}: {error}"
        ) from error
    return module


def load_submission(path: str | os.PathLike) -> Submission:
    """Import the submission at `path` and check its functions.

    Raises:
      SubmissionError: missing file, import failure, or a missing/ill-formed function.
    """
    path = pathlib.Path(path).expanduser().resolve()
    if not path.is_file() or path.suffix != ".py":
        raise SubmissionError(f"submission {path}: not a .py file; pass --submission_path FILE.py")
    module = _import(path)
    functions: dict[str, Callable | None] = {}
    for name, arity in {**REQUIRED, **OPTIONAL}.items():
        function = getattr(module, name, None)
        if function is None:
            if name in REQUIRED:
                raise SubmissionError(
                    f"submission {path}: `{name}` is missing; a submission must define "
                    + ", ".join(REQUIRED)
                    + " (docs/rules.md, Submission API)."
                )
            functions[name] = None
            continue
        if not callable(function) or not _accepts(function, arity):
            raise SubmissionError(
                f"submission {path}: `{name}` must accept {arity} positional arguments "
                f"({_signature(function)} does not)."
            )
        functions[name] = function
    update_params = functions["update_params"]
    takes_train_state = "train_state" in inspect.signature(update_params).parameters
    return Submission(
        path=path,
        module=module,
        update_params_takes_train_state=takes_train_state,
        **functions,
    )


def _signature(function) -> str:
    try:
        return f"{getattr(function, '__name__', 'it')}{inspect.signature(function)}"
    except (TypeError, ValueError):
        return repr(function)
