"""External-tuning search spaces: load `tuning_search_space.json`, sample trial points, check them.

Framework-free (numpy, scipy, stdlib). Sampling is scrambled Halton seeded per (seed, study), so
each study gets its own points, unlike upstream, whose sampler repeats one set in every study.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import math
import os
import types
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from algoperf import rng

SCALINGS = ("linear", "log")
# Range bounds are checked with this relative tolerance (JSON round-trips and exp/log rounding).
RANGE_RTOL = 1e-6
_RANGE_KEYS = frozenset({"min", "max", "scaling"})
_SCALAR_TYPES = (str, int, float, bool, type(None))


@dataclasses.dataclass(frozen=True, kw_only=True)
class RangeParam:
    """A continuous hyperparameter sampled in [min, max]."""

    name: str
    """The search-space key."""
    min: float
    """Lower bound (inclusive)."""
    max: float
    """Upper bound; sampled values stay below it, checks include it."""
    scaling: Literal["linear", "log"]
    """`linear` maps u to min + u·(max−min); `log` to min·exp(u·ln(max/min))."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DiscreteParam:
    """A hyperparameter chosen from a list of feasible points."""

    name: str
    """The search-space key."""
    feasible_points: tuple[Any, ...]
    """The allowed values (JSON scalars); one value takes no Halton dimension."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SearchSpace:
    """A validated search space: either per-key specs (dict form) or fixed points (list form)."""

    params: tuple[RangeParam | DiscreteParam, ...] = ()
    """Dict form: one spec per key, sorted by name. Empty in list form."""
    points: tuple[Mapping[str, Any], ...] = ()
    """List form: the complete points in file order (read-only mappings). Empty in dict form."""

    def __post_init__(self) -> None:
        if bool(self.params) == bool(self.points):
            raise ValueError(
                "SearchSpace needs exactly one of params (dict form) or points (list form)"
            )

    @property
    def is_list_form(self) -> bool:
        """Whether the space is a fixed list of points."""
        return bool(self.points)

    @property
    def keys(self) -> tuple[str, ...]:
        """The hyperparameter names, sorted (the `Hyperparameters` field order)."""
        if self.points:
            return tuple(sorted(self.points[0]))
        return tuple(param.name for param in self.params)


# ---------------------------------------------------------------------------------------------
# Hyperparameters namedtuple


@functools.cache
def hyperparameters_type(keys: tuple[str, ...]) -> type:
    """The `Hyperparameters` namedtuple class for these keys (fields sorted; one class per set).

    Args:
        keys: Search-space keys, in any order.
    """
    cls = collections.namedtuple("Hyperparameters", sorted(keys))
    # A dynamically made class cannot be pickled by name; rebuild it from its fields instead
    # (spawned workers and DDP ranks may receive a point).
    cls.__reduce__ = lambda self: (_rebuild_hyperparameters, (self._fields, tuple(self)))
    return cls


def _rebuild_hyperparameters(fields: tuple[str, ...], values: tuple[Any, ...]) -> Any:
    return hyperparameters_type(tuple(fields))(*values)


def _make_point(values: Mapping[str, Any]) -> Any:
    cls = hyperparameters_type(tuple(sorted(values)))
    return cls(**{key: _plain(value) for key, value in values.items()})


def _plain(value: Any) -> Any:
    """Turns numpy scalars into the Python scalars JSON can hold."""
    return value.item() if isinstance(value, np.generic) else value


# ---------------------------------------------------------------------------------------------
# Loading and validation


def load_search_space(path_or_dict: str | os.PathLike | Mapping | Sequence) -> SearchSpace:
    """Reads and validates a search space in upstream's `tuning_search_space.json` format.

    Args:
        path_or_dict: A path to the JSON file, or its already-parsed content: a dict mapping
            each key to `{"min", "max", "scaling"}` or `{"feasible_points"}`, or a list of
            complete points.

    Returns:
        The validated `SearchSpace`.

    Raises:
        FileNotFoundError: The path does not exist.
        ValueError: The file is not JSON, or the space is malformed (the message names the key).
    """
    content = path_or_dict
    if isinstance(path_or_dict, str | os.PathLike):
        try:
            with open(path_or_dict) as file:
                content = json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"search space file {os.fspath(path_or_dict)!r} is not valid JSON: {error}"
            ) from error
    if isinstance(content, Mapping):
        return _parse_dict_form(content)
    if isinstance(content, Sequence) and not isinstance(content, str | bytes):
        return _parse_list_form(content)
    raise ValueError(
        "search space must be a dict of key specs or a list of points, "
        f"got {type(content).__name__}"
    )


def _check_key(key: Any, where: str) -> None:
    if not isinstance(key, str) or not key.isidentifier() or key.startswith("_"):
        raise ValueError(
            f"{where} key {key!r}: keys must be Python identifiers not starting with '_' "
            "(they become Hyperparameters attributes)"
        )


def _check_scalar(value: Any, where: str) -> Any:
    value = _plain(value)
    if not isinstance(value, _SCALAR_TYPES) or (
        isinstance(value, float) and not math.isfinite(value)
    ):
        raise ValueError(f"{where}: value {value!r} must be a finite number, string, bool or null")
    return value


def _parse_dict_form(content: Mapping) -> SearchSpace:
    if not content:
        raise ValueError("search space is empty: give at least one hyperparameter")
    params = []
    for key in sorted(content, key=str):
        _check_key(key, "search space")
        spec = content[key]
        where = f"search space key {key!r}"
        if not isinstance(spec, Mapping):
            raise ValueError(
                f"{where}: expected a dict with min/max/scaling or feasible_points, "
                f"got {type(spec).__name__}"
            )
        if "feasible_points" in spec:
            params.append(_parse_discrete(key, spec, where))
        else:
            params.append(_parse_range(key, spec, where))
    return SearchSpace(params=tuple(params))


def _parse_discrete(key: str, spec: Mapping, where: str) -> DiscreteParam:
    extra = sorted(set(spec) - {"feasible_points"}, key=str)
    if extra:
        raise ValueError(f"{where}: feasible_points cannot be combined with {extra}; remove them")
    points = spec["feasible_points"]
    if not isinstance(points, Sequence) or isinstance(points, str | bytes):
        raise ValueError(f"{where}: feasible_points must be a list, got {type(points).__name__}")
    if not points:
        raise ValueError(f"{where}: feasible_points is empty; give at least one value")
    values = tuple(_check_scalar(value, f"{where} feasible_points") for value in points)
    return DiscreteParam(name=key, feasible_points=values)


def _parse_range(key: str, spec: Mapping, where: str) -> RangeParam:
    missing = sorted(_RANGE_KEYS - set(spec))
    if missing:
        raise ValueError(
            f"{where}: missing {missing}; give min, max and scaling, or feasible_points"
        )
    extra = sorted(set(spec) - _RANGE_KEYS, key=str)
    if extra:
        raise ValueError(f"{where}: unknown fields {extra}; allowed are min, max, scaling")
    bounds = {}
    for field in ("min", "max"):
        value = _plain(spec[field])
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"{where}: {field} must be a finite number, got {value!r}")
        bounds[field] = float(value)
    scaling = spec["scaling"]
    if scaling not in SCALINGS:
        raise ValueError(f"{where}: unknown scaling {scaling!r}; use 'linear' or 'log'")
    if not bounds["min"] < bounds["max"]:
        raise ValueError(
            f"{where}: min must be < max, got min={bounds['min']}, max={bounds['max']}"
        )
    if scaling == "log" and bounds["min"] <= 0:
        raise ValueError(f"{where}: 'log' scaling needs min > 0, got min={bounds['min']}")
    return RangeParam(name=key, min=bounds["min"], max=bounds["max"], scaling=scaling)


def _parse_list_form(content: Sequence) -> SearchSpace:
    if not content:
        raise ValueError("search space is empty: the list of points has no entries")
    points = []
    for index, point in enumerate(content):
        where = f"search space point {index}"
        if not isinstance(point, Mapping) or not point:
            raise ValueError(
                f"{where}: expected a non-empty dict of hyperparameters, got {point!r}"
            )
        if points and set(point) != set(points[0]):
            differing = sorted(set(point) ^ set(points[0]), key=str)
            raise ValueError(
                f"{where}: keys {differing} differ from point 0; every point needs the same keys"
            )
        for key in point:
            _check_key(key, where)
        values = {key: _check_scalar(point[key], f"{where} key {key!r}") for key in sorted(point)}
        points.append(types.MappingProxyType(values))
    return SearchSpace(points=tuple(points))


# ---------------------------------------------------------------------------------------------
# Sampling


def sample_points(
    space: SearchSpace, num_trials: int, *, seed: int, study_index: int = 0
) -> list[Any]:
    """Draws the trial points of one study.

    Dict form: scrambled Halton points over the non-fixed keys, mapped per docs/rules.md,
    "External tuning"; the same (seed, study_index) gives the same points, another study gets
    other points. List form: the first min(num_trials, len(points)) points in order, the same
    for every study.

    Args:
        space: The search space.
        num_trials: How many points to return (at least 1).
        seed: Non-negative tuning seed.
        study_index: Non-negative study number; each study gets its own points.

    Returns:
        A list of `Hyperparameters` namedtuples holding plain Python values.
    """
    for name, value in (("num_trials", num_trials), ("seed", seed), ("study_index", study_index)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if num_trials < 1:
        raise ValueError(f"num_trials must be >= 1, got {num_trials}")
    if seed < 0 or study_index < 0:
        raise ValueError(f"seed and study_index must be >= 0, got {seed} and {study_index}")
    if space.is_list_form:
        if num_trials > len(space.points):
            warnings.warn(
                f"asked for {num_trials} trials but the list-form search space has only "
                f"{len(space.points)} points; running {len(space.points)}",
                stacklevel=2,
            )
        return [_make_point(point) for point in space.points[:num_trials]]
    varying = [param for param in space.params if not _is_fixed(param)]
    if varying:
        from scipy.stats import qmc  # imported here: scipy.stats takes seconds to load

        sampler = qmc.Halton(d=len(varying), scramble=True, seed=rng.halton_seed(seed, study_index))
        unit_points = sampler.random(num_trials)
    else:
        unit_points = np.zeros((num_trials, 0))
    fixed = {param.name: param.feasible_points[0] for param in space.params if _is_fixed(param)}
    points = []
    for unit_row in unit_points:
        values = dict(fixed)
        for param, unit in zip(varying, unit_row):
            values[param.name] = _map_unit(param, float(unit))
        points.append(_make_point(values))
    return points


def _is_fixed(param: RangeParam | DiscreteParam) -> bool:
    return isinstance(param, DiscreteParam) and len(param.feasible_points) == 1


def _map_unit(param: RangeParam | DiscreteParam, unit: float) -> Any:
    """Maps u in [0, 1) to a value of the parameter (docs/rules.md, "External tuning")."""
    if isinstance(param, DiscreteParam):
        index = min(math.floor(unit * len(param.feasible_points)), len(param.feasible_points) - 1)
        return param.feasible_points[index]
    if param.scaling == "log":
        value = param.min * math.exp(unit * math.log(param.max / param.min))
    else:
        value = param.min + unit * (param.max - param.min)
    # Rounding in exp/log may step a hair outside the bounds.
    return min(max(value, param.min), param.max)


# ---------------------------------------------------------------------------------------------
# Checking and JSON


def _as_dict(point: Any) -> dict[str, Any]:
    if hasattr(point, "_asdict"):
        return dict(point._asdict())
    if isinstance(point, Mapping):
        return dict(point)
    raise ValueError(f"a point must be a dict or Hyperparameters namedtuple, got {point!r}")


def _same_value(left: Any, right: Any) -> bool:
    # bool is an int subclass: keep True distinct from 1.
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    numbers = (int, float)
    if isinstance(left, numbers) and isinstance(right, numbers):
        return math.isclose(left, right, rel_tol=1e-9, abs_tol=0.0)
    return type(left) is type(right) and left == right


def point_in_space(space: SearchSpace, point: Mapping[str, Any] | Any) -> list[str]:
    """Lists why a point is not in the space (empty when it is).

    Args:
        space: The search space.
        point: A dict or `Hyperparameters` namedtuple.

    Returns:
        One message per violation: missing or unknown keys, out-of-range or non-numeric range
        values (bounds get a relative tolerance of `RANGE_RTOL`), values outside
        feasible_points, or (list form) a point equal to none of the listed points.
    """
    values = {key: _plain(value) for key, value in _as_dict(point).items()}
    violations = [f"missing key {key!r}" for key in space.keys if key not in values]
    violations += [f"unknown key {key!r}" for key in sorted(values) if key not in space.keys]
    if violations:
        return violations
    if space.is_list_form:
        for candidate in space.points:
            if all(_same_value(values[key], candidate[key]) for key in space.keys):
                return []
        return [f"point matches none of the {len(space.points)} list-form points"]
    for param in space.params:
        message = _param_violation(param, values[param.name])
        if message:
            violations.append(message)
    return violations


def _param_violation(param: RangeParam | DiscreteParam, value: Any) -> str | None:
    if isinstance(param, DiscreteParam):
        if any(_same_value(value, feasible) for feasible in param.feasible_points):
            return None
        return (
            f"key {param.name!r}: {value!r} is not in feasible_points {list(param.feasible_points)}"
        )
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return f"key {param.name!r}: {value!r} is not a finite number"
    tolerance = RANGE_RTOL * max(abs(param.min), abs(param.max))
    if param.min - tolerance <= value <= param.max + tolerance:
        return None
    return f"key {param.name!r}: {value!r} is outside [{param.min}, {param.max}]"


def hparams_to_json(point: Any) -> dict[str, Any]:
    """The JSON-ready dict of a point (keys sorted), as written to `hparams.json`.

    Args:
        point: A `Hyperparameters` namedtuple or a dict.
    """
    values = {key: _plain(value) for key, value in sorted(_as_dict(point).items())}
    for key, value in values.items():
        _check_scalar(value, f"hyperparameter {key!r}")
    return values


def hparams_from_json(data: Mapping[str, Any], space: SearchSpace | None = None) -> Any:
    """Rebuilds a `Hyperparameters` namedtuple from the content of `hparams.json`.

    Args:
        data: The parsed JSON dict.
        space: If given, the point must lie in it.

    Raises:
        ValueError: A key is not an identifier, a value is not a JSON scalar, or the point is
            outside `space` (the message lists every violation).
    """
    if not isinstance(data, Mapping) or not data:
        raise ValueError(f"hparams must be a non-empty dict of hyperparameters, got {data!r}")
    for key, value in data.items():
        _check_key(key, "hparams")
        _check_scalar(value, f"hparams key {key!r}")
    if space is not None:
        violations = point_in_space(space, data)
        if violations:
            raise ValueError(
                "hparams are not in the search space: "
                + "; ".join(violations)
                + ". Delete the stale hparams.json or fix the search space"
            )
    return _make_point(data)
