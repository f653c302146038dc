"""`algoperf.search_space`: search-space loading, Halton sampling, point checks, hparams JSON."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest

from algoperf import rng, search_space

DICT_SPACE = {
    "learning_rate": {"min": 1e-4, "max": 1e-1, "scaling": "log"},
    "one_minus_beta1": {"min": 0.02, "max": 0.2, "scaling": "linear"},
    "warmup_factor": {"feasible_points": [0.02, 0.05, 0.1]},
    "label_smoothing": {"feasible_points": [0.1]},
    "use_nesterov": {"feasible_points": [True, False]},
}
LIST_SPACE = [
    {"learning_rate": 1e-3, "weight_decay": 0.1},
    {"learning_rate": 3e-3, "weight_decay": 0.01},
    {"learning_rate": 1e-2, "weight_decay": 0.0},
]


@pytest.fixture
def space() -> search_space.SearchSpace:
    return search_space.load_search_space(DICT_SPACE)


def _values(points, key):
    return np.array([getattr(point, key) for point in points])


def test_points_within_bounds_and_plain_types(space):
    points = search_space.sample_points(space, 64, seed=0)
    assert len(points) == 64
    assert type(points[0]).__name__ == "Hyperparameters"
    assert points[0]._fields == tuple(sorted(DICT_SPACE))
    for point in points:
        assert 1e-4 <= point.learning_rate <= 1e-1
        assert 0.02 <= point.one_minus_beta1 <= 0.2
        assert point.label_smoothing == 0.1
        assert type(point.learning_rate) is float and type(point.use_nesterov) is bool
        assert search_space.point_in_space(space, point) == []
    json.dumps([point._asdict() for point in points])


def test_log_scaling_splits_at_geometric_midpoint():
    space = search_space.load_search_space({"lr": {"min": 1e-4, "max": 1e-1, "scaling": "log"}})
    values = _values(search_space.sample_points(space, 256, seed=1), "lr")
    assert abs(np.mean(values < 10**-2.5) - 0.5) < 0.1
    # Two of the three decades lie below 1e-2; linear scaling would put only ~9% there.
    assert abs(np.mean(values < 1e-2) - 2 / 3) < 0.1


def test_linear_scaling_splits_at_arithmetic_midpoint():
    space = search_space.load_search_space({"x": {"min": -2.0, "max": 6.0, "scaling": "linear"}})
    values = _values(search_space.sample_points(space, 256, seed=1), "x")
    assert abs(np.mean(values < 2.0) - 0.5) < 0.1
    assert values.min() >= -2.0 and values.max() <= 6.0


def test_discrete_values_come_from_feasible_points_and_all_appear(space):
    points = search_space.sample_points(space, 64, seed=3)
    assert set(_values(points, "warmup_factor").tolist()) == {0.02, 0.05, 0.1}
    assert {point.use_nesterov for point in points} == {True, False}


def test_single_feasible_point_takes_no_dimension():
    fixed = {"a": {"feasible_points": ["adam"]}}
    points = search_space.sample_points(search_space.load_search_space(fixed), 3, seed=0)
    assert [point.a for point in points] == ["adam"] * 3
    with_range = dict(fixed, b={"min": 0.0, "max": 1.0, "scaling": "linear"})
    without = {"b": with_range["b"]}
    sampled_with = search_space.sample_points(search_space.load_search_space(with_range), 5, seed=4)
    sampled_without = search_space.sample_points(search_space.load_search_space(without), 5, seed=4)
    assert [point.b for point in sampled_with] == [point.b for point in sampled_without]


def test_studies_and_seeds_get_different_points_reproducibly(space):
    first = search_space.sample_points(space, 5, seed=7, study_index=0)
    assert search_space.sample_points(space, 5, seed=7, study_index=0) == first
    assert search_space.sample_points(space, 5, seed=7, study_index=1) != first
    assert search_space.sample_points(space, 5, seed=8, study_index=0) != first
    other_study = _values(
        search_space.sample_points(space, 5, seed=7, study_index=1), "learning_rate"
    )
    assert not set(other_study.tolist()) & set(_values(first, "learning_rate").tolist())


def test_halton_seed_is_stable():
    assert rng.halton_seed(0, 0) == rng.halton_seed(0, 0)
    assert rng.halton_seed(0, 0) != rng.halton_seed(0, 1)
    assert isinstance(rng.halton_seed(3, 2), int)


def test_list_form_returns_points_in_order_and_warns_when_short():
    space = search_space.load_search_space(LIST_SPACE)
    assert space.is_list_form and space.keys == ("learning_rate", "weight_decay")
    two = search_space.sample_points(space, 2, seed=0, study_index=4)
    assert [point._asdict() for point in two] == LIST_SPACE[:2]
    with pytest.warns(UserWarning, match="only 3 points"):
        all_points = search_space.sample_points(space, 5, seed=0)
    assert [point._asdict() for point in all_points] == LIST_SPACE


def test_load_from_file(tmp_path):
    path = tmp_path / "tuning_search_space.json"
    path.write_text(json.dumps(DICT_SPACE))
    assert search_space.load_search_space(path) == search_space.load_search_space(DICT_SPACE)
    assert search_space.load_search_space(str(path)).keys == tuple(sorted(DICT_SPACE))


def test_invalid_json_file_names_the_file(tmp_path):
    path = tmp_path / "broken_space.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="broken_space.json.*not valid JSON"):
        search_space.load_search_space(path)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        search_space.load_search_space(tmp_path / "absent.json")


def _lr(**spec):
    return {"learning_rate": spec}


@pytest.mark.parametrize(
    "bad_space, match",
    [
        (_lr(min=0.1, max=0.01, scaling="linear"), "'learning_rate'.*min must be < max"),
        (_lr(min=0.1, max=0.1, scaling="linear"), "'learning_rate'.*min must be < max"),
        (_lr(min=0.0, max=0.1, scaling="log"), "'learning_rate'.*'log' scaling needs min > 0"),
        (_lr(min=-1.0, max=0.1, scaling="log"), "'learning_rate'.*'log' scaling needs min > 0"),
        (_lr(min=0.1, max=1.0, scaling="exp"), "'learning_rate'.*unknown scaling 'exp'"),
        (_lr(min=0.1, scaling="log"), r"'learning_rate'.*missing \['max'\]"),
        (_lr(max=0.1, scaling="log"), r"'learning_rate'.*missing \['min'\]"),
        (_lr(min=0.1, max=1.0), r"'learning_rate'.*missing \['scaling'\]"),
        (_lr(min="0.1", max=1.0, scaling="log"), "'learning_rate'.*min must be a finite number"),
        (_lr(min=0.1, max=None, scaling="log"), "'learning_rate'.*max must be a finite number"),
        (_lr(min=True, max=2, scaling="linear"), "'learning_rate'.*min must be a finite number"),
        (_lr(min=0.1, max=math.inf, scaling="log"), "'learning_rate'.*max must be a finite"),
        (_lr(min=0.1, max=1.0, scaling="log", step=2), "'learning_rate'.*unknown fields"),
        (_lr(feasible_points=[]), "'learning_rate'.*feasible_points is empty"),
        (_lr(feasible_points=0.1), "'learning_rate'.*feasible_points must be a list"),
        (_lr(feasible_points=[[0.1]]), "'learning_rate'.*must be a finite number, string"),
        (_lr(feasible_points=[0.1], min=0.0), "'learning_rate'.*cannot be combined"),
        ({"learning_rate": 0.1}, "'learning_rate'.*expected a dict"),
        ({"learning-rate": {"feasible_points": [1]}}, "'learning-rate'.*identifiers"),
        ({}, "search space is empty"),
        ([], "search space is empty"),
        (3, "must be a dict of key specs or a list"),
        (
            [{"learning_rate": 0.1, "weight_decay": 0.0}, {"learning_rate": 0.2}],
            r"point 1.*\['weight_decay'\].*same keys",
        ),
        ([{"learning_rate": 0.1}, 0.2], "point 1.*expected a non-empty dict"),
        ([{"learning_rate": math.nan}], "'learning_rate'.*finite number"),
    ],
)
def test_malformed_space_raises_value_error(bad_space, match):
    with pytest.raises(ValueError, match=match):
        search_space.load_search_space(bad_space)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_trials": 0, "seed": 0}, "num_trials must be >= 1"),
        ({"num_trials": 2, "seed": -1}, "seed and study_index must be >= 0"),
        ({"num_trials": 2, "seed": 0, "study_index": -1}, "seed and study_index must be >= 0"),
        ({"num_trials": 2.0, "seed": 0}, "num_trials must be an int"),
    ],
)
def test_sample_points_rejects_bad_arguments(space, kwargs, match):
    with pytest.raises(ValueError, match=match):
        search_space.sample_points(space, **kwargs)


def test_hparams_json_round_trip(space, tmp_path):
    point = search_space.sample_points(space, 3, seed=5)[2]
    path = tmp_path / "hparams.json"
    path.write_text(json.dumps(search_space.hparams_to_json(point)))
    reread = search_space.hparams_from_json(json.loads(path.read_text()), space)
    assert reread == point
    assert reread._fields == point._fields
    assert type(reread).__name__ == "Hyperparameters"
    assert search_space.hparams_to_json({"b": np.float32(0.5), "a": np.int64(3)}) == {
        "a": 3,
        "b": 0.5,
    }


def test_hparams_from_json_checks_the_space(space):
    data = search_space.hparams_to_json(search_space.sample_points(space, 1, seed=0)[0])
    data["learning_rate"] = 0.5
    with pytest.raises(ValueError, match="'learning_rate'.*outside"):
        search_space.hparams_from_json(data, space)
    assert search_space.hparams_from_json(data).learning_rate == 0.5


def test_hyperparameters_pickle():
    point = search_space.sample_points(search_space.load_search_space(LIST_SPACE), 1, seed=0)[0]
    assert pickle.loads(pickle.dumps(point)) == point


def test_point_in_space_reports_violations(space):
    point = search_space.sample_points(space, 1, seed=2)[0]._asdict()
    assert search_space.point_in_space(space, point) == []
    at_bound = dict(point, learning_rate=1e-1 * (1 + 1e-9))
    assert search_space.point_in_space(space, at_bound) == []
    too_big = dict(point, learning_rate=0.2)
    assert any(
        "'learning_rate'" in v and "outside" in v
        for v in search_space.point_in_space(space, too_big)
    )
    not_feasible = dict(point, warmup_factor=0.07)
    assert "feasible_points" in search_space.point_in_space(space, not_feasible)[0]
    assert search_space.point_in_space(space, dict(point, use_nesterov=1)) != []
    assert (
        "not a finite number"
        in search_space.point_in_space(space, dict(point, learning_rate="x"))[0]
    )
    wrong_keys = dict(point, momentum=0.9)
    del wrong_keys["one_minus_beta1"]
    violations = search_space.point_in_space(space, wrong_keys)
    assert "missing key 'one_minus_beta1'" in violations
    assert "unknown key 'momentum'" in violations


def test_point_in_space_list_form():
    space = search_space.load_search_space(LIST_SPACE)
    assert search_space.point_in_space(space, LIST_SPACE[1]) == []
    mixed = {"learning_rate": 1e-3, "weight_decay": 0.01}
    assert "none of the 3 list-form points" in search_space.point_in_space(space, mixed)[0]
    assert search_space.point_in_space(space, {"learning_rate": 1e-3}) == [
        "missing key 'weight_decay'"
    ]
