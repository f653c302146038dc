"""Load a submission from a file path and check it, with one-line errors that name the fix; turn
what its functions raise or return wrongly at run time into `SubmissionFailed`."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import inspect
import keyword
import os
import pathlib
import sys
import warnings
from collections.abc import Callable
from types import ModuleType

import numpy as np

from algoperf.errors import StorageError, SubmissionFailed

# name -> number of positional parameters upstream passes (docs/rules.md, "Submission API").
REQUIRED = {
    "get_batch_size": 1,
    "init_optimizer_state": 5,
    "update_params": 11,
    "data_selection": 8,
}
OPTIONAL = {"prepare_for_eval": 10, "get_eval_batch_size": 1}
# What update_params and prepare_for_eval return (docs/rules.md, "Submission API").
UPDATE_RESULT = "(optimizer_state, params, model_state)"


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


def repository_root(path: pathlib.Path) -> pathlib.Path | None:
    """The folder a submission's absolute imports start from (docs/rules.md, "Submission API").

    The working directory, as upstream's runner, when the file lies under it and the working
    directory is not above the file's git repository; otherwise that repository's root (a
    folder holding `.git`); None when neither holds the file.
    """
    cwd = pathlib.Path.cwd().resolve()
    repository = next((p for p in path.parents if (p / ".git").exists()), None)
    if path.is_relative_to(cwd) and (repository is None or cwd.is_relative_to(repository)):
        return cwd
    return repository


def _module_name(path: pathlib.Path, root: pathlib.Path | None) -> str | None:
    """`path`'s dotted name: `algoperf.submissions.<...>` for a reference submission of this
    package, else its name under `root` (`submissions.self_tuning.mine.submission`); None when
    a part of it is no Python identifier."""
    installed = importlib.util.find_spec("algoperf.submissions").submodule_search_locations
    for location in map(pathlib.Path, installed or []):
        if path.is_relative_to(location.resolve()):
            root, prefix = location.resolve(), ("algoperf", "submissions")
            break
    else:
        prefix = ()
    if root is None:
        return None
    parts = (*prefix, *path.relative_to(root).with_suffix("").parts)
    if all(part.isidentifier() and not keyword.iskeyword(part) for part in parts):
        return ".".join(parts)
    return None


def _is_file(module_spec, path: pathlib.Path) -> bool:
    origin = getattr(module_spec, "origin", None)
    return origin is not None and pathlib.Path(origin).resolve() == path


def _find_by_name(name: str, path: pathlib.Path) -> bool:
    """Whether importing `name` would run the file at `path` (and nothing shadows it)."""
    loaded = sys.modules.get(name)
    if loaded is not None:
        return _is_file(getattr(loaded, "__spec__", None), path)
    try:
        return _is_file(importlib.util.find_spec(name), path)
    except (ImportError, ValueError):  # a parent is missing, or is a module, not a package
        return False


def _import(path: pathlib.Path) -> ModuleType:
    """Import the submission as upstream's runner does: by its dotted path from its repository's
    root, so `from .helpers import x` and `from submissions.<...>.helpers import x` work and give
    the same module; a file outside any root loads from its location under a private name.
    Its folder goes on `sys.path` too, for a vendored package beside it."""
    root = repository_root(path)
    for folder in (str(path.parent), os.getcwd(), *([str(root)] if root else [])):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    name = _module_name(path, root)
    if name is not None:
        if _find_by_name(name, path):
            try:
                return importlib.import_module(name)
            except Exception as error:
                sys.modules.pop(name, None)
                raise _import_failed(path, error) from error
        warnings.warn(
            f"submission {path}: `{name}` does not import this file (another "
            f"`{name.split('.')[0]}` package comes first, or a parent package fails to import); "
            f"loading it by its location, so its relative imports and imports through {root} "
            "may fail",
            stacklevel=3,
        )
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    module_name = f"algoperf_submission_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[module_name]
        raise _import_failed(path, error) from error
    return module


def _import_failed(path: pathlib.Path, error: Exception) -> SubmissionError:
    return SubmissionError(
        f"submission {path}: importing it failed with {type(error).__name__}: {error}"
    )


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


# ---------------------------------------------------------------------------------------------
# Run-time failures (docs/rules.md, "Exit status")


def _at(step: int | None) -> str:
    return "" if step is None else f" at step {step}"


def raised_in(function: str, error: BaseException, step: int | None = None) -> SubmissionFailed:
    """The `SubmissionFailed` for an exception the submission's `function` raised; the caller
    raises it `from error`, so the submission's traceback stays attached."""
    return SubmissionFailed(
        f"{function} raised {type(error).__name__}{_at(step)}: {error}",
        function=function,
        step=step,
    )


def wrong_result(function: str, value, step: int | None) -> SubmissionFailed:
    """The `SubmissionFailed` for an update_params/prepare_for_eval result that is not a triple."""
    return SubmissionFailed(
        f"{function} must return {UPDATE_RESULT}; it returned {_describe(value)}{_at(step)}",
        function=function,
        step=step,
    )


def _describe(value) -> str:
    if value is None:
        return "None"
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} of {len(value)} values"
    return f"a value of type {type(value).__name__}"


def call_guarded(function_name: str, function: Callable, *args, step: int | None = None):
    """`function(*args)`, with what it raises turned into `SubmissionFailed` (for the untimed
    calls; the loop's per-step calls catch inline). A `StorageError` (a file the data pipeline
    could not read) passes unchanged: it is not the submission's fault."""
    try:
        return function(*args)
    except StorageError:
        raise
    except Exception as error:
        raise raised_in(function_name, error, step) from error


def unpack_update_result(function: str, value, step: int | None) -> tuple:
    """`value` as the triple update_params/prepare_for_eval return, or `SubmissionFailed`."""
    try:
        optimizer_state, params, model_state = value
    except (TypeError, ValueError):
        raise wrong_result(function, value, step) from None
    return optimizer_state, params, model_state


def check_batch_size(function_name: str, value) -> int:
    """A batch size the submission's `function_name` returned, as an int >= 1.

    Python and numpy integers and integral floats (64.0) are accepted; bool, 0, negative and
    fractional values raise `SubmissionFailed` (a fraction would otherwise be cut silently).
    """
    if isinstance(value, float | np.floating) and float(value).is_integer():
        value = int(value)
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer) or value < 1:
        raise SubmissionFailed(
            f"{function_name} must return a positive integer batch size; it returned {value!r}",
            function=function_name,
        )
    return int(value)
