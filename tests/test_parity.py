"""Torch <-> JAX parity (TESTS.md §3, §5): torch weights copied into the flax tree give the same
EVAL logits and the same SGD step, within stated float32 tolerances on the CPU."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import parity_utils
import pytest
import torch

import workloads
from algoperf import rng as np_rng
from algoperf import spec
from algoperf.torch.workload import to_torch
from workloads.cifar import input_pipeline as cifar_pipeline
from workloads.mnist import input_pipeline as mnist_pipeline

TRAIN, EVAL = spec.ForwardPassMode.TRAIN, spec.ForwardPassMode.EVAL
LEARNING_RATE = 0.1
PIPELINES = {"mnist": mnist_pipeline, "cifar": cifar_pipeline}
BATCH_SIZES = {"mnist": 8, "cifar": 4}
TORCH_PREFIX = {"mnist": "net.", "cifar": ""}  # the torch MLP nests its layers in `net`

# Tolerances, float32 on the CPU (TF32/cudnn do not apply). Measured on a 2-core x86 CPU:
# mnist EVAL logits 3.9e-7 abs, mnist params after the step 1.5e-8 abs; cifar EVAL logits
# 7.7e-7 abs at max |logit| 0.77 (1.0e-6 relative), cifar params after the step 1.6e-7 abs,
# cifar TRAIN logits after the step 7.6e-6 abs at max |logit| 16 (4.8e-7 relative), running
# means 1.8e-7 abs.
# mnist: two dense layers, |logits| ~ 1: summation order alone differs by a few 1e-7; 1e-4 is
# the TESTS.md §5 bound (a mapping error, e.g. an untransposed kernel, is O(1)).
MNIST_LOGITS_ATOL = 1e-4
# mnist: one SGD step moves params by lr * grad ~ 1e-2; rounding of the grads is ~1e-8.
MNIST_PARAMS_ATOL = 1e-5
# cifar: 20 conv + BN layers with different conv kernels (oneDNN vs XLA/Eigen) and reduction
# orders; ~1e-6 relative per layer could compound to a few 1e-6 of the logit scale on another
# CPU. 1e-5 relative to max |logits| is 10x what we measure; a wrong transpose, a swapped BN
# statistic or an asymmetric padding shows up at 1e-2 or more.
CIFAR_EVAL_RTOL = 1e-5
# cifar, one SGD step in TRAIN mode: BN normalises with the statistics of a 4-image batch (64
# values per channel at the 4x4 stage), which amplifies rounding; same 1e-5 relative bound for
# the logits after the step, and 1e-5 absolute for params that move by up to ~6e-2.
CIFAR_STEP_RTOL = 1e-5
CIFAR_PARAMS_ATOL = 1e-5


@functools.cache
def torch_workload(name: str):
    return workloads.load(name, "pytorch")


@functools.cache
def jax_workload(name: str):
    return workloads.load(name, "jax")


def torch_model(name: str):
    """A freshly initialised torch model; cifar's BN layers get non-trivial values."""
    model, model_state = torch_workload(name).init_model_fn(np_rng.prng_key(0))
    if name == "cifar":
        parity_utils.randomize_batch_norm_(model, seed=0)
    return model, model_state


def jax_variables_from(name: str, model) -> tuple[dict, dict | None]:
    """(params, model_state) for the JAX workload holding the torch model's values."""
    workload = jax_workload(name)
    variables = parity_utils.torch_to_flax(model, strip_prefix=TORCH_PREFIX[name])
    reference = jax.eval_shape(
        functools.partial(workload.model.init, train=False),
        jax.random.PRNGKey(0),
        workload.init_inputs(),
    )
    parity_utils.assert_same_structure(variables, dict(reference))
    variables = jax.tree.map(jnp.asarray, variables)
    params = variables.pop("params")
    return params, (variables or None)


def batches(name: str) -> tuple[dict, dict]:
    """The same fake batch for torch (NCHW tensors) and JAX (NHWC arrays)."""
    numpy_batch = PIPELINES[name].fake_batch(BATCH_SIZES[name], layout="NCHW", seed=3)
    jax_batch = {key: jnp.asarray(value) for key, value in numpy_batch.items()}
    jax_batch["inputs"] = jnp.transpose(jax_batch["inputs"], (0, 2, 3, 1))
    return to_torch(numpy_batch, torch.device("cpu")), jax_batch


def max_abs_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def _torch_outputs(name: str, model, model_state, batch) -> dict:
    """EVAL logits, then one SGD step in TRAIN mode, then TRAIN-mode logits of the new params."""
    workload = torch_workload(name)
    eval_logits, _ = workload.model_fn(model, batch, model_state, EVAL, None, False)
    logits, _ = workload.model_fn(model, batch, model_state, TRAIN, None, True)
    out = workload.loss_fn(batch["targets"], logits, batch["weights"])
    loss = out["summed"] / out["n_valid_examples"]
    loss.backward()
    with torch.no_grad():
        for param in model.parameters():
            param -= LEARNING_RATE * param.grad
    after_logits, _ = workload.model_fn(model, batch, model_state, TRAIN, None, False)
    return {
        "eval_logits": eval_logits.numpy(),
        "loss": loss.item(),
        "after_logits": after_logits.detach().numpy(),
        "variables": parity_utils.torch_to_flax(model, strip_prefix=TORCH_PREFIX[name]),
    }


def _jax_outputs(name: str, params, model_state, batch) -> dict:
    """The same as `_torch_outputs`, in one jitted function (the ResNet compiles once)."""
    workload = jax_workload(name)

    def run(params, model_state, batch, rng):
        eval_logits, _ = workload.model_fn(params, batch, model_state, EVAL, rng, False)

        def loss(params):
            logits, new_state = workload.model_fn(params, batch, model_state, TRAIN, rng, True)
            out = workload.loss_fn(batch["targets"], logits, batch["weights"])
            return out["summed"] / out["n_valid_examples"], new_state

        (loss_value, new_state), grads = jax.value_and_grad(loss, has_aux=True)(params)
        new_params = jax.tree.map(lambda p, g: p - LEARNING_RATE * g, params, grads)
        after_logits, _ = workload.model_fn(new_params, batch, new_state, TRAIN, rng, False)
        variables = {"params": new_params, **(new_state or {})}
        return {
            "eval_logits": eval_logits,
            "loss": loss_value,
            "after_logits": after_logits,
            "variables": variables,
        }

    with jax.default_matmul_precision("highest"):
        outputs = jax.jit(run)(params, model_state, batch, jax.random.PRNGKey(0))
    return jax.device_get(outputs)


@functools.cache
def outputs(name: str) -> dict:
    """{"torch": ..., "jax": ..., "initial": flax variables before the step}, computed once."""
    model, model_state = torch_model(name)
    params, jax_state = jax_variables_from(name, model)
    torch_batch, jax_batch = batches(name)
    initial = jax.device_get({"params": params, **(jax_state or {})})
    return {
        "jax": _jax_outputs(name, params, jax_state, jax_batch),
        "torch": _torch_outputs(name, model, model_state, torch_batch),
        "initial": initial,
    }


CASES = [pytest.param("mnist"), pytest.param("cifar", marks=pytest.mark.slow)]


@pytest.mark.parametrize("name", CASES)
def test_eval_logits_match(name):
    torch_logits = outputs(name)["torch"]["eval_logits"]
    jax_logits = outputs(name)["jax"]["eval_logits"]
    if name == "mnist":
        assert max_abs_diff(torch_logits, jax_logits) < MNIST_LOGITS_ATOL
    else:
        scale = np.max(np.abs(torch_logits))
        assert scale > 0.1  # randomised BN makes the logits non-trivial
        assert max_abs_diff(torch_logits, jax_logits) < CIFAR_EVAL_RTOL * scale


@pytest.mark.parametrize("name", CASES)
def test_sgd_step_matches(name):
    """One SGD step in TRAIN mode (cifar: BN on batch statistics, running stats updated)."""
    torch_out, jax_out = outputs(name)["torch"], outputs(name)["jax"]
    params_atol = MNIST_PARAMS_ATOL if name == "mnist" else CIFAR_PARAMS_ATOL
    assert abs(torch_out["loss"] - float(jax_out["loss"])) < params_atol
    moved = parity_utils.flatten(torch_out["variables"]["params"])
    for key, value in parity_utils.flatten(jax_out["variables"]["params"]).items():
        assert max_abs_diff(moved[key], value) < params_atol, key
    # The step really moved the params (otherwise the comparison above proves nothing).
    before = parity_utils.flatten(outputs(name)["initial"]["params"])
    assert max(max_abs_diff(before[k], moved[k]) for k in moved) > 100 * params_atol
    if name == "cifar":
        scale = np.max(np.abs(torch_out["after_logits"]))
        assert max_abs_diff(torch_out["after_logits"], jax_out["after_logits"]) < (
            CIFAR_STEP_RTOL * scale
        )
        # Running means follow the same rule in both (torch momentum 0.1 = flax decay 0.9).
        # Running variances do not: torch stores the unbiased batch variance, flax the biased
        # one (they differ by 1/(n-1) of the batch term, n = values per channel).
        stats = parity_utils.flatten(torch_out["variables"]["batch_stats"])
        for key, value in parity_utils.flatten(jax_out["variables"]["batch_stats"]).items():
            if key.endswith("mean"):
                assert max_abs_diff(stats[key], value) < CIFAR_PARAMS_ATOL, key
