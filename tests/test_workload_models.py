"""Every model workload x framework: init, forward on fake_batch, finite loss, backward, exact
parameter counts (WORKLOADS.md §1), parameter types equal across frameworks, BN update control.

The JAX ResNet-18 costs XLA compile time on a CPU (init ~10 s, one train-step compile ~10 s), so
each (workload, framework) is initialised once per session and the JAX checks share one jitted
function; those cases are marked slow.
"""

from __future__ import annotations

import collections
import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import workloads
from algoperf import rng as np_rng
from algoperf import spec
from algoperf.torch.workload import to_torch

BATCH_SIZE = 2
EXPECTED_PARAMS = {"mnist": (101_770, 4), "cifar": (11_173_962, 62)}  # (elements, tensors)
EXPECTED_BN_LAYERS = {"mnist": 0, "cifar": 20}
TRAIN, EVAL = spec.ForwardPassMode.TRAIN, spec.ForwardPassMode.EVAL
SLOW_JAX = {"cifar"}  # JAX ResNet-18 compiles for tens of seconds on a 2-core CPU


def _case(name: str, framework: str):
    marks = [pytest.mark.slow] if framework == "jax" and name in SLOW_JAX else []
    return pytest.param(name, framework, marks=marks, id=f"{name}-{framework}")


CASES = [_case(name, fw) for name in ("mnist", "cifar") for fw in ("pytorch", "jax")]
BN_CASES = [_case("cifar", fw) for fw in ("pytorch", "jax")]


def fake_batch(name: str, framework: str) -> dict:
    pipeline = importlib.import_module(f"workloads.{name}.input_pipeline")
    layout = "NCHW" if framework == "pytorch" else "NHWC"
    batch = pipeline.fake_batch(BATCH_SIZE, layout=layout, seed=1)
    if framework == "pytorch":
        return to_torch(batch, torch.device("cpu"))
    return {key: jnp.asarray(value) for key, value in batch.items()}


def fresh(name: str, framework: str):
    """A newly built and initialised (workload, params, model_state), for tests that mutate it."""
    workload = workloads.load(name, framework)
    rng = np_rng.prng_key(0) if framework == "pytorch" else jax.random.PRNGKey(0)
    return (workload, *workload.init_model_fn(rng))


@functools.cache
def initialised(name: str, framework: str):
    """(workload, params, model_state), built once per session; read-only."""
    return fresh(name, framework)


@functools.cache
def jax_results(name: str) -> dict:
    """Everything the JAX checks need, from one jitted function (one compile per workload)."""
    workload, params, model_state = initialised(name, "jax")
    batch = fake_batch(name, "jax")

    def run(params, model_state, batch, rng):
        def loss(params):
            logits, new_state = workload.model_fn(params, batch, model_state, TRAIN, rng, True)
            out = workload.loss_fn(batch["targets"], logits, batch["weights"])
            return out["summed"] / out["n_valid_examples"], (logits, new_state)

        (loss_value, (logits, updated)), grads = jax.value_and_grad(loss, has_aux=True)(params)
        _, frozen = workload.model_fn(params, batch, model_state, TRAIN, rng, False)
        eval_logits, eval_state = workload.model_fn(params, batch, model_state, EVAL, rng, False)
        return {
            "loss": loss_value,
            "logits": logits,
            "grads": grads,
            "state_update_true": updated,
            "state_update_false": frozen,
            "eval_logits": eval_logits,
            "state_eval": eval_state,
        }

    return jax.device_get(jax.jit(run)(params, model_state, batch, jax.random.PRNGKey(1)))


def param_counts(framework: str, params) -> tuple[int, int]:
    if framework == "pytorch":
        tensors = list(params.parameters())
        return sum(t.numel() for t in tensors), len(tensors)
    leaves = jax.tree.leaves(params)
    return sum(int(np.size(leaf)) for leaf in leaves), len(leaves)


@pytest.mark.parametrize(("name", "framework"), CASES)
def test_exact_parameter_counts(name, framework):
    _, params, model_state = initialised(name, framework)
    assert param_counts(framework, params) == EXPECTED_PARAMS[name]
    if framework == "pytorch":
        bn_layers = [m for m in params.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert len(bn_layers) == EXPECTED_BN_LAYERS[name]
        assert model_state is None
    elif EXPECTED_BN_LAYERS[name]:
        # init_model_fn must hand back the batch_stats (upstream's JAX CIFAR drops them).
        stats = jax.tree.leaves(model_state["batch_stats"])
        assert len(stats) == 2 * EXPECTED_BN_LAYERS[name]
    else:
        assert model_state is None


@pytest.mark.parametrize(("name", "framework"), CASES)
def test_output_params_are_the_last_layer(name, framework):
    workload, params, _ = initialised(name, framework)
    if framework == "pytorch":
        keys = [key for key, _ in params.named_parameters()]
    else:
        keys = [
            tuple(k.key for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(params)
        ]
    assert sum(workload.is_output_params(key) for key in keys) == 2  # weight/kernel and bias


def _key(framework: str, path) -> spec.ParameterKey:
    return path if framework == "pytorch" else tuple(k.key for k in path)


@pytest.mark.parametrize(("name", "framework"), CASES)
def test_forward_loss_backward(name, framework):
    if framework == "jax":
        results = jax_results(name)
        workload = initialised(name, framework)[0]
        logits, loss_value = results["logits"], float(results["loss"])
        grads = dict(jax.tree_util.tree_leaves_with_path(results["grads"]))
        assert results["eval_logits"].shape == (BATCH_SIZE, 10)
    else:
        workload, model, model_state = fresh(name, framework)
        batch = fake_batch(name, framework)
        logits, _ = workload.model_fn(model, batch, model_state, TRAIN, None, True)
        loss = workload.loss_fn(batch["targets"], logits, batch["weights"])
        loss_value = loss["summed"] / loss["n_valid_examples"]
        loss_value.backward()
        grads = {key: p.grad.numpy() for key, p in model.named_parameters()}
        logits, loss_value = logits.detach().numpy(), loss_value.item()
    assert logits.shape == (BATCH_SIZE, 10)
    assert np.isfinite(logits).all()
    assert np.isfinite(loss_value) and loss_value > 0
    assert len(grads) == EXPECTED_PARAMS[name][1]
    assert all(np.isfinite(g).all() for g in grads.values())
    # Some grads are exactly 0 at init (each block's last BN scale is 0, so the convs before
    # it get none); the output layer's must not be.
    output_grads = [g for k, g in grads.items() if workload.is_output_params(_key(framework, k))]
    assert len(output_grads) == 2
    assert all(np.abs(g).sum() > 0 for g in output_grads)


@pytest.mark.parametrize(
    "name", [pytest.param("mnist"), pytest.param("cifar", marks=pytest.mark.slow)]
)
def test_param_types_equal_between_frameworks(name):
    torch_workload = initialised(name, "pytorch")[0]
    jax_workload = initialised(name, "jax")[0]
    torch_types = collections.Counter(torch_workload.model_params_types.values())
    jax_types = collections.Counter(jax.tree.leaves(jax_workload.model_params_types))
    assert torch_types == jax_types
    if name == "cifar":
        assert torch_types == {
            spec.ParameterType.CONV_WEIGHT: 20,
            spec.ParameterType.BATCH_NORM_SCALE: 20,
            spec.ParameterType.BATCH_NORM_BIAS: 20,
            spec.ParameterType.WEIGHT: 1,
            spec.ParameterType.BIAS: 1,
        }


def _torch_bn_stats(model) -> list[np.ndarray]:
    return [
        buffer.numpy().copy()
        for module in model.modules()
        if isinstance(module, torch.nn.BatchNorm2d)
        for buffer in (module.running_mean, module.running_var)
    ]


def _all_equal(a: list, b: list) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(("name", "framework"), BN_CASES)
def test_batch_norm_update_control(name, framework):
    """EVAL and TRAIN with update_batch_norm=False keep the running stats; True changes them."""
    if framework == "pytorch":
        workload, model, model_state = fresh(name, framework)
        batch = fake_batch(name, framework)
        initial = _torch_bn_stats(model)
        workload.model_fn(model, batch, model_state, EVAL, None, False)
        eval_after = _torch_bn_stats(model)
        workload.model_fn(model, batch, model_state, TRAIN, None, False)
        frozen_after = _torch_bn_stats(model)
        workload.model_fn(model, batch, model_state, TRAIN, None, True)
        updated_after = _torch_bn_stats(model)
    else:
        results = jax_results(name)
        initial = jax.tree.leaves(jax.device_get(initialised(name, framework)[2]))
        eval_after = jax.tree.leaves(results["state_eval"])
        frozen_after = jax.tree.leaves(results["state_update_false"])
        updated_after = jax.tree.leaves(results["state_update_true"])
    assert len(initial) == 2 * EXPECTED_BN_LAYERS[name]
    assert _all_equal(initial, eval_after)
    assert _all_equal(initial, frozen_after)
    # Every layer's running mean and var move (momentum 0.1) on a random batch.
    assert not any(np.array_equal(x, y) for x, y in zip(initial, updated_after, strict=True))
