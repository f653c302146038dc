"""Every model in the registry, both frameworks, checked from data: the spec's parameter counts
(`WorkloadSpec.num_params`) and each workload's `testing.py` (`workloads.parity.ModelTests`). A new
workload gets every check here by declaring those two; nothing here names a workload.

- Full size, without init (torch on the meta device, JAX by `jax.eval_shape`): parameter and
  tensor counts, BN layers and statistics, parameter types equal across frameworks (and upstream's
  categories for the base), the weight map covering every tensor, the output layer.
- Tiny configuration: init, forward / loss / backward, BN update control, the dropout contract,
  label smoothing as upstream's submissions pass it (traced under `jax.jit`; a 0-d tensor in
  PyTorch), and torch <-> JAX parity with copied weights (EVAL and TRAIN logits, loss, one SGD
  step) within each workload's stated tolerances.
- `algoperf run` on the workload's fixture data, per base workload and framework, writing
  upstream's log layout.

Cost on a 2-core CPU: XLA compiles a small model's train step in ~5-7 s and its init in ~2-4 s,
so each JAX model gets one jitted function (EVAL and TRAIN forwards, loss, grads, the SGD step;
label smoothing and dropout rate are traced arguments) that serves its own init, the copied torch
weights and the dropout check alike; those cases are slow unless the workload says its JAX model
compiles at once. The CLI runs (a cold torch.compile each) are slow.
"""

from __future__ import annotations

import collections
import csv
import functools
import importlib
import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch

from algoperf import rng as np_rng
from algoperf import spec, workloads
from algoperf.param_types import infer_parameter_type
from algoperf.torch.workload import to_torch
from algoperf.workloads import parity

ROOT = pathlib.Path(__file__).resolve().parent.parent
TRAIN, EVAL = spec.ForwardPassMode.TRAIN, spec.ForwardPassMode.EVAL
LABEL_SMOOTHING, LEARNING_RATE, DROPOUT_RATE, BATCH_SEED = 0.1, 0.1, 0.5, 3
MODELS = [
    name
    for name in workloads.names()
    if any(name in workloads.available(fw) for fw in workloads.FRAMEWORKS)
]


def declarations(name: str) -> parity.ModelTests:
    module = f"algoperf.workloads.{workloads.base_name(name)}.testing"
    try:
        return importlib.import_module(module).TESTS
    except ModuleNotFoundError as error:
        if error.name != module:
            raise
        raise AssertionError(
            f"{name} has a model but no {module.replace('.', '/')}.py declaring its tests "
            "(TESTS = workloads.parity.ModelTests(...))"
        ) from None


def _declared(name: str, attribute: str, default):
    try:
        return getattr(declarations(name), attribute)
    except AssertionError:  # reported by test_every_model_declares_its_tests
        return default


def cases(*, frameworks=workloads.FRAMEWORKS, where=None, slow_jax: bool = True) -> list:
    """(name, framework) params over the registry; JAX cases of slow-compiling models are slow."""
    found = []
    for framework in frameworks:
        for name in workloads.available(framework):
            if where is not None and not where(name):
                continue
            slow = slow_jax and framework == "jax" and _declared(name, "slow_jax", True)
            marks = [pytest.mark.slow] if slow else []
            found.append(pytest.param(name, framework, marks=marks, id=f"{name}-{framework}"))
    return found


BOTH = [
    name for name in MODELS if all(name in workloads.available(fw) for fw in workloads.FRAMEWORKS)
]
"""Names with a model in both frameworks (parity)."""


def names_in_both() -> list:
    """BOTH as params, slow where the JAX model compiles slowly."""
    return [
        pytest.param(name, marks=[pytest.mark.slow] if _declared(name, "slow_jax", True) else [])
        for name in BOTH
    ]


def has_batch_norm(name: str) -> bool:
    return _declared(name, "batch_norm_layers", 0) > 0


def has_dropout(name: str) -> bool:
    return _declared(name, "has_dropout", False)


# --- building models ------------------------------------------------------------------------
def tiny(name: str, framework: str):
    """A new Workload in the tiny configuration (never shared in PyTorch: the workload holds
    its model's BN modules)."""
    tests = declarations(name)
    return workloads.load(
        name, framework, model_kwargs=dict(tests.model_kwargs) or None, **tests.workload_options
    )


def numpy_batch(name: str, workload) -> dict:
    tests = declarations(name)
    if tests.make_batch is not None:
        return tests.make_batch(workload, tests.batch_size, BATCH_SEED)
    return workload.fake_batch(tests.batch_size, seed=BATCH_SEED)


def torch_to_flax(name: str):
    return declarations(name).torch_to_flax or parity.torch_to_flax


def _jax_variable_shapes(workload) -> dict:
    inputs = workload.init_inputs()  # one array, or a tuple of the positional inputs
    variables = jax.eval_shape(
        functools.partial(workload.model.init, train=False),
        {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)},
        *(inputs if isinstance(inputs, tuple) else (inputs,)),
    )
    return dict(variables)


@functools.cache
def full_size(name: str, framework: str) -> dict:
    """The full-size model's shapes, without init: {"params": {key: shape} in model order,
    "stats": BN running statistics, "bn_layers": int, "flax": the flax variables' shapes (the
    torch model's through the workload's weight map)}."""
    workload = workloads.load(name, framework, **declarations(name).workload_options)
    if framework == "pytorch":
        with torch.device("meta"):
            model = workload.build_model(**workload.spec.model_kwargs)
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        return {
            "params": {key: tuple(p.shape) for key, p in model.named_parameters()},
            "stats": {
                key: tuple(b.shape)
                for key, b in model.named_buffers()
                if key.endswith(("running_mean", "running_var"))
            },
            "bn_layers": len(norms),
            "flax": parity.shapes(torch_to_flax(name)(model, convert=parity.to_shape)),
        }
    variables = _jax_variable_shapes(workload)
    stats = parity.shapes(variables.get("batch_stats", {}))
    return {
        "params": parity.shapes(variables["params"]),
        "stats": stats,
        "bn_layers": len(stats) // 2,
        "flax": parity.shapes(variables),
    }


@functools.cache
def jax_program(name: str):
    """(jitted, call): one compile per model; `call(params, model_state, batch, label_smoothing,
    dropout_rate)` takes host arrays, so the workload's own init and copied torch weights share
    the compiled program."""
    twin = declarations(name).forward_twins.get(name, name)
    if twin != name:
        return jax_program(twin)
    jitted = parity.jax_train_step(tiny(name, "jax"), learning_rate=LEARNING_RATE)

    def call(params, model_state, batch, label_smoothing, dropout_rate):
        arguments = jax.device_get((params, model_state, batch))
        with jax.default_matmul_precision("highest"):
            out = jitted(*arguments, jax.random.PRNGKey(1), label_smoothing, dropout_rate)
        return jax.device_get(out)

    return jitted, call


@functools.cache
def jax_own_init(name: str) -> dict:
    """The JAX workload's own init_model_fn (tiny), then the jitted program on a fake batch.

    XLA compiles the init's random-number code slowly on a CPU with partitionable threefry (~1 s
    per distinct parameter shape); the checks read no particular random values, so the init
    draws with the classic threefry (the runner keeps its setting)."""
    workload = tiny(name, "jax")
    with jax.threefry_partitionable(False):
        params, model_state = workload.init_model_fn(jax.random.PRNGKey(0))
    params, model_state = jax.device_get((params, model_state))
    batch = numpy_batch(name, workload)
    results = jax_program(name)[1](params, model_state, batch, LABEL_SMOOTHING, 0.0)
    return {"workload": workload, "params": params, "state": model_state, **results}


def _assert_same_batch(torch_batch: dict, jax_batch: dict) -> None:
    """The two frameworks' batches hold the same values (images NCHW vs NHWC), leaf by leaf
    (a batch may be nested: ogbg's `inputs` is a dict of graph arrays)."""
    jax_leaves = parity.flatten(jax_batch)
    for key, value in parity.flatten(torch_batch).items():
        other = jax_leaves[key]
        if np.ndim(value) == 4 and np.shape(value) != np.shape(other):
            other = np.transpose(other, (0, 3, 1, 2))
        np.testing.assert_array_equal(value, other, err_msg=key)


@functools.cache
def parity_run(name: str) -> dict:
    """Torch weights (randomised where the init is degenerate) copied into flax; both frameworks
    run the same batch: {"torch", "jax", "initial" (flax variables before the step), and
    "jax_dropout" (TRAIN logits at DROPOUT_RATE) for models with dropout}."""
    tests = declarations(name)
    torch_workload, jax_workload = tiny(name, "pytorch"), tiny(name, "jax")
    model, _ = torch_workload.init_model_fn(np_rng.prng_key(0))
    if tests.randomize is not None:
        tests.randomize(model)
    to_flax = torch_to_flax(name)
    initial = to_flax(model)
    parity.assert_same_structure(initial, _jax_variable_shapes(jax_workload))
    torch_batch, jax_batch = numpy_batch(name, torch_workload), numpy_batch(name, jax_workload)
    _assert_same_batch(torch_batch, jax_batch)
    state = {key: value for key, value in initial.items() if key != "params"} or None
    call = jax_program(name)[1]
    outputs = {
        "initial": initial,
        "jax": call(initial["params"], state, jax_batch, LABEL_SMOOTHING, 0.0),
    }
    if tests.has_dropout:
        dropped = call(initial["params"], state, jax_batch, LABEL_SMOOTHING, DROPOUT_RATE)
        outputs["jax_dropout"] = dropped["train_logits"]
    batch = to_torch(torch_batch, torch.device("cpu"))
    outputs["torch"] = parity.torch_train_step(
        torch_workload, model, batch, learning_rate=LEARNING_RATE,
        label_smoothing=LABEL_SMOOTHING, to_flax=to_flax,
    )  # fmt: skip
    return outputs


def max_abs_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def _numel(shape) -> int:
    return math.prod(shape)


# --- declarations ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_every_model_declares_its_tests(name):
    workload_spec = workloads.get_spec(name)
    for framework in workloads.FRAMEWORKS:
        if name in workloads.available(framework):
            assert framework in workload_spec.num_params, (
                f"{name}: declare the full-size counts in SPEC.num_params[{framework!r}] "
                "(or the Variant's num_params where the variant changes them)"
            )
    tests = declarations(name)
    if name == workload_spec.base:
        assert tests.write_fixture is not None and tests.cli_metrics, (
            f"{name}: testing.py must say how to write its fixture data and which metrics its "
            "eval rows hold (ModelTests.write_fixture, cli_metrics)"
        )


# --- full size, without init ----------------------------------------------------------------
@pytest.mark.parametrize(("name", "framework"), cases(slow_jax=False))
def test_full_size_parameter_counts(name, framework):
    shapes = full_size(name, framework)
    params = shapes["params"]
    counts = (sum(_numel(s) for s in params.values()), len(params))
    assert counts == workloads.get_spec(name).num_params[framework]
    bn_layers = declarations(name).batch_norm_layers
    assert shapes["bn_layers"] == bn_layers and len(shapes["stats"]) == 2 * bn_layers
    # A running mean and var per BN scale element (JAX: batch_stats; torch: buffers).
    scale_elements = sum(
        _numel(s)
        for key, s in params.items()
        if infer_parameter_type(key, len(s)) == spec.ParameterType.BATCH_NORM_SCALE
    )
    assert sum(_numel(s) for s in shapes["stats"].values()) == 2 * scale_elements


@pytest.mark.parametrize("name", BOTH)
def test_full_size_types_and_weight_map_agree_between_frameworks(name):
    torch_shapes, jax_shapes = full_size(name, "pytorch"), full_size(name, "jax")
    torch_types, jax_types = (
        collections.Counter(infer_parameter_type(k, len(s)) for k, s in shapes["params"].items())
        for shapes in (torch_shapes, jax_shapes)
    )
    assert torch_types == jax_types
    expected = declarations(name).param_types
    if expected and name == workloads.base_name(name):
        assert torch_types == expected
    # Every torch tensor has a flax twin of the same shape through the weight map, by name.
    parity.assert_same_structure(torch_shapes["flax"], jax_shapes["flax"])


def output_params(name: str, torch_params: list[str]) -> list[str]:
    """The torch names of the output layer's parameters: the declared ones (a tied embedding),
    else the last layer's weight and bias."""
    return list(_declared(name, "output_params", ())) or torch_params[-2:]


@pytest.mark.parametrize(("name", "framework"), cases(slow_jax=False))
def test_output_params_are_the_output_layer(name, framework):
    """Torch: the last layer's weight and bias (full size), or the parameters the workload
    declares (a tied embedding). JAX: their twins, the same values once the (tiny, randomised)
    torch weights are copied across."""
    torch_workload = tiny(name, "pytorch")
    torch_params = list(full_size(name, "pytorch")["params"])
    picked = [key for key in torch_params if torch_workload.is_output_params(key)]
    expected = output_params(name, torch_params)
    assert picked == expected
    if not declarations(name).output_params:
        assert sorted(key.rsplit(".", 1)[-1] for key in picked) == ["bias", "weight"]
    if framework == "pytorch":
        return
    jax_workload = tiny(name, "jax")
    assert sum(
        jax_workload.is_output_params(tuple(k.split("/"))) for k in full_size(name, "jax")["params"]
    ) == len(expected)
    model, _ = torch_workload.init_model_fn(np_rng.prng_key(0))
    if declarations(name).randomize is not None:
        declarations(name).randomize(model)

    def values(named, is_output) -> list:  # layout-free: each tensor's sorted values
        return sorted(np.sort(np.asarray(v).ravel()).tolist() for k, v in named if is_output(k))

    copied = parity.flatten(torch_to_flax(name)(model)["params"]).items()
    jax_values = values(copied, lambda key: jax_workload.is_output_params(tuple(key.split("/"))))
    named = ((key, p.detach().numpy()) for key, p in model.named_parameters())
    assert jax_values == values(named, torch_workload.is_output_params)


# --- tiny configuration: init, forward, backward --------------------------------------------
def _check_outputs(name: str, workload, logits, loss_value: float, grads: dict, key_of) -> None:
    """Shared by both frameworks: `grads` {framework key: numpy grad}."""
    tests = declarations(name)
    assert logits.shape == (tests.batch_size, *tests.output_shape)
    assert np.isfinite(logits).all()
    assert np.isfinite(loss_value) and loss_value > 0
    if tests.zero_output_init:
        assert not np.any(logits)  # the output layer starts at zero
        np.testing.assert_allclose(loss_value, np.log(tests.output_shape[-1]), rtol=1e-6)
    assert all(np.isfinite(g).all() for g in grads.values())
    # Some grads are exactly 0 at init (e.g. behind a zero-init BN scale or head); the output
    # layer's must not be.
    output_grads = [g for key, g in grads.items() if workload.is_output_params(key_of(key))]
    assert len(output_grads) == (len(tests.output_params) or 2)
    assert all(np.abs(g).sum() > 0 for g in output_grads)


@pytest.mark.parametrize(("name", "framework"), cases())
def test_init_forward_loss_backward(name, framework):
    if framework == "jax":
        results = jax_own_init(name)
        workload, params = results["workload"], results["params"]
        # init_model_fn hands back the model's state (BN statistics) as model_state, whole
        # (upstream's JAX CIFAR drops it: docs/rules.md, "CIFAR details").
        expected_state = {k: v for k, v in _jax_variable_shapes(workload).items() if k != "params"}
        assert parity.shapes(results["state"] or {}) == parity.shapes(expected_state)
        assert (results["state"] is not None) == has_batch_norm(name)
        assert jax.tree.structure(workload.model_params_types) == jax.tree.structure(params)
        assert results["eval_logits"].shape == results["train_logits"].shape
        grads = {
            tuple(str(k.key) for k in path): g
            for path, g in jax.tree_util.tree_leaves_with_path(results["grads"])
        }
        assert len(grads) == len(jax.tree.leaves(params))
        _check_outputs(
            name, workload, results["train_logits"], float(results["loss"]), grads, tuple
        )
        return
    workload = tiny(name, framework)
    model, model_state = workload.init_model_fn(np_rng.prng_key(0))
    assert model_state is None
    assert workload.model_params_types == {
        key: infer_parameter_type(key, p.ndim) for key, p in model.named_parameters()
    }
    batch = to_torch(numpy_batch(name, workload), torch.device("cpu"))
    logits, _ = workload.model_fn(model, batch, None, TRAIN, None, True)
    out = workload.loss_fn(batch["targets"], logits, batch["weights"], LABEL_SMOOTHING)
    loss = out["summed"] / out["n_valid_examples"]
    loss.backward()
    grads = {key: p.grad.numpy() for key, p in model.named_parameters()}
    _check_outputs(name, workload, logits.detach().numpy(), loss.item(), grads, str)


def _torch_bn_stats(model) -> list[np.ndarray]:
    return [
        buffer.numpy().copy()
        for module in model.modules()
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)
        for buffer in (module.running_mean, module.running_var)
    ]


def _all_equal(a: list, b: list) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(("name", "framework"), cases(where=has_batch_norm))
def test_batch_norm_update_control(name, framework):
    """EVAL and TRAIN with update_batch_norm=False keep the running stats; True changes them."""
    if framework == "pytorch":
        workload = tiny(name, framework)
        model, model_state = workload.init_model_fn(np_rng.prng_key(0))
        batch = to_torch(numpy_batch(name, workload), torch.device("cpu"))
        initial = _torch_bn_stats(model)
        workload.model_fn(model, batch, model_state, EVAL, None, False)
        eval_after = _torch_bn_stats(model)
        workload.model_fn(model, batch, model_state, TRAIN, None, False)
        frozen_after = _torch_bn_stats(model)
        workload.model_fn(model, batch, model_state, TRAIN, None, True)
        updated_after = _torch_bn_stats(model)
    else:
        results = jax_own_init(name)
        initial = jax.tree.leaves(results["state"])
        eval_after = jax.tree.leaves(results["eval_state"])
        frozen_after = jax.tree.leaves(results["frozen_state"])
        updated_after = jax.tree.leaves(
            {k: v for k, v in results["variables"].items() if k != "params"}
        )
    assert initial and _all_equal(initial, eval_after) and _all_equal(initial, frozen_after)
    # Every running mean and var moves (momentum 0.1) on a random batch.
    assert not any(np.array_equal(x, y) for x, y in zip(initial, updated_after, strict=True))


@pytest.mark.parametrize(("name", "framework"), cases(where=has_dropout))
def test_dropout_rate_applies_in_train_mode_only(name, framework):
    """Rate 0 in TRAIN mode gives the EVAL logits, a rate in EVAL mode changes nothing, a rate
    in TRAIN mode changes the logits. JAX: the rate is a traced call argument, and the two
    modes may run different kernels for the same function (wmt: jax.nn.dot_product_attention in
    EVAL, attention written out with its dropout in TRAIN), so they agree to the workload's
    parity tolerance (`logits_rtol` of the largest logit)."""
    if framework == "jax":
        outputs = parity_run(name)
        eval_logits = outputs["jax"]["eval_logits"]
        scale = float(np.max(np.abs(eval_logits)))
        difference = max_abs_diff(outputs["jax"]["train_logits"], eval_logits)
        assert difference < declarations(name).logits_rtol * scale, f"{difference:.2e}"
        assert max_abs_diff(outputs["jax_dropout"], eval_logits) > 1e-2
        return
    workload = tiny(name, framework)
    model, _ = workload.init_model_fn(np_rng.prng_key(0))
    if declarations(name).randomize is not None:
        declarations(name).randomize(model)
    batch = to_torch(numpy_batch(name, workload), torch.device("cpu"))

    def run(mode, rate=None):
        return workload.model_fn(model, batch, None, mode, None, False, rate)[0].detach()

    eval_logits = run(EVAL)
    torch.testing.assert_close(run(TRAIN, 0.0), eval_logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(run(EVAL, DROPOUT_RATE), eval_logits, rtol=0, atol=0)
    assert (run(TRAIN, DROPOUT_RATE) - eval_logits).abs().max() > 1e-2


@pytest.mark.parametrize(("name", "framework"), cases())
def test_label_smoothing_as_submissions_pass_it(name, framework):
    """JAX: the train step above is jitted with label_smoothing (and dropout_rate) traced: other
    values reuse the one compiled program. PyTorch: a 0-d tensor gives the float's loss. A
    loss without label smoothing (regression) gives the same value whatever is passed."""
    if framework == "jax":
        jitted, call = jax_program(name)
        results = jax_own_init(name)
        unsmoothed = call(
            results["params"], results["state"], numpy_batch(name, results["workload"]), 0.0, 0.0
        )
        assert jitted._cache_size() == 1  # one compile per model: the values were traced
        change = abs(float(unsmoothed["loss"]) - float(results["loss"]))
        assert change > 1e-6 if declarations(name).label_smoothing else change == 0.0
        return
    workload = tiny(name, framework)
    batch = to_torch(numpy_batch(name, workload), torch.device("cpu"))
    tests = declarations(name)
    logits = torch.randn(
        (tests.batch_size, *tests.output_shape), generator=torch.Generator().manual_seed(0)
    )
    as_float = workload.loss_fn(batch["targets"], logits, batch["weights"], LABEL_SMOOTHING)
    as_tensor = workload.loss_fn(
        batch["targets"], logits, batch["weights"], torch.tensor(LABEL_SMOOTHING)
    )
    unsmoothed = workload.loss_fn(batch["targets"], logits, batch["weights"], 0.0)
    for key in ("summed", "n_valid_examples", "per_example"):
        torch.testing.assert_close(as_tensor[key], as_float[key], rtol=1e-6, atol=1e-6)
    change = abs(as_float["summed"].item() - unsmoothed["summed"].item())
    assert change > 1e-6 if tests.label_smoothing else change == 0.0


# --- parity ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", names_in_both())
def test_parity_logits_and_loss(name):
    tests = declarations(name)
    outputs = parity_run(name)
    torch_out, jax_out = outputs["torch"], outputs["jax"]
    for key in ("eval_logits", "train_logits"):
        scale = float(np.max(np.abs(torch_out[key])))
        assert scale > 0.1, key  # randomised weights: non-trivial logits
        diff = max_abs_diff(torch_out[key], jax_out[key])
        assert diff < tests.logits_rtol * scale, f"{key}: max |diff| {diff:.2e} at {scale:.2f}"
    assert abs(torch_out["loss"] - float(jax_out["loss"])) < tests.step_atol


@pytest.mark.parametrize("name", names_in_both())
def test_parity_sgd_step(name):
    """One SGD step in TRAIN mode (BN on batch statistics, running stats updated)."""
    tests = declarations(name)
    outputs = parity_run(name)
    torch_out, jax_out = outputs["torch"], outputs["jax"]
    moved = parity.flatten(torch_out["variables"]["params"])
    diffs = {
        key: max_abs_diff(moved[key], value)
        for key, value in parity.flatten(jax_out["variables"]["params"]).items()
    }
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] < tests.step_atol, f"{worst}: {diffs[worst]:.2e}"
    # The step really moved the params (otherwise the comparison above proves nothing).
    before = parity.flatten(outputs["initial"]["params"])
    assert max(max_abs_diff(before[key], moved[key]) for key in moved) > 100 * tests.step_atol
    # Running means follow the same rule in both (torch momentum 0.1 = flax decay 0.9). Running
    # variances do not: torch stores the unbiased batch variance, flax the biased one.
    if "batch_stats" in outputs["initial"]:
        stats = parity.flatten(torch_out["variables"]["batch_stats"])
        for key, value in parity.flatten(jax_out["variables"]["batch_stats"]).items():
            if key.endswith("mean"):
                assert max_abs_diff(stats[key], value) < tests.step_atol, key


# --- end to end: `algoperf run` on the fixture data -----------------------------------------
SMALL_BATCH_SUBMISSION = """
from algoperf.submissions.nadamw.{module} import (  # noqa: F401
    data_selection, init_optimizer_state, prepare_for_eval, update_params,
)


def get_batch_size(workload_name):
    return 4


def get_eval_batch_size(workload_name):
    return 4
"""
LOG_COLUMNS = {"global_step", "preemption_count", "score", "total_duration"} | {
    f"accumulated_{kind}_time" for kind in ("eval", "logging", "submission")
}
MAX_STEPS = 2


def algoperf_run(tmp_path: pathlib.Path, name: str, framework: str, data_dir, options: str):
    """`algoperf run` of MAX_STEPS NAdamW steps (batches of 4, torch.compile on, a cold inductor
    cache under tmp_path); the trial lands in tmp_path/exp/<name>/<name>_<framework>/trial_1."""
    module = "submission_torch" if framework == "pytorch" else "submission_jax"
    submission = tmp_path / "small_batches.py"
    submission.write_text(SMALL_BATCH_SUBMISSION.format(module=module))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PYTHONWARNINGS": "ignore",
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),
    }
    command = [
        sys.executable, "-m", "algoperf", "run",
        "--workload", name,
        "--framework", framework,
        "--submission_path", str(submission),
        "--tuning_search_space", str(ROOT / "submissions" / "nadamw" / "tuning_search_space.json"),
        "--data_dir", str(data_dir),
        "--experiment_dir", str(tmp_path / "exp"),
        "--experiment_name", name,
        "--rng_seed", "0",
        "--max_global_steps", str(MAX_STEPS),
        "--torch_compile", "true",
        "--workload_options", options,
        "--download", "false",
        "--progress", "false",
    ]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def expected_columns(name: str) -> set[str]:
    """Upstream's eval_measurements.csv columns for this workload."""
    workload_spec = workloads.get_spec(name)
    splits = ["train", "validation"] + (["test"] if workload_spec.num_test_examples else [])
    metrics = declarations(name).cli_metrics
    columns = {f"{split}/{metric}" for split in splits for metric in metrics}
    return LOG_COLUMNS | columns | {f"{split}/num_examples" for split in splits[1:]}


BASE_CASES = cases(where=lambda name: name == workloads.base_name(name), slow_jax=False)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "framework"), BASE_CASES)
def test_algoperf_run_on_the_fixture(tmp_path, name, framework):
    """NAdamW steps and evals through the real CLI, trial loop and input pipeline on the
    workload's format-exact fixture files (torch.compile on in PyTorch)."""
    tests = declarations(name)
    data_dir = tests.write_fixture(tmp_path / "data")
    result = algoperf_run(tmp_path, name, framework, data_dir, tests.cli_options)
    assert result.returncode == 0, result.stderr[-3000:]
    trial = tmp_path / "exp" / name / f"{name}_{framework}" / "trial_1"
    with open(trial / "eval_measurements.csv", newline="") as handle:
        header = next(csv.reader(handle))
        handle.seek(0)
        rows = list(csv.DictReader(handle))
    assert header == sorted(header) and set(header) == expected_columns(name)
    # The first eval right after step 1, the last at max_global_steps.
    assert rows[0]["global_step"] == "1" and rows[-1]["global_step"] == str(MAX_STEPS)
    last = rows[-1]
    for split, count in tests.fixture_sizes.items():
        assert last[f"{split}/num_examples"] == str(count), split
    for column in header:
        if column.endswith("loss"):
            assert np.isfinite(float(last[column])) and float(last[column]) > 0, column
        elif column.endswith("accuracy"):
            assert 0.0 <= float(last[column]) <= 1.0, column
    flags = json.loads((trial / "flags_0.json").read_text())
    assert flags["workload"] == name and flags["framework"] == framework
    assert flags["torch_compile"] is True and flags["workload_options"] == tests.cli_options
    compiled_files = [p for p in (tmp_path / "inductor").rglob("*") if p.is_file()]
    assert bool(compiled_files) == (framework == "pytorch")  # the compile really ran
