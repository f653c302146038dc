"""ImageNet ViT (WORKLOADS.md §6) in both frameworks: exact parameter counts and types of the
full-size models, init / forward / loss / backward / dropout contract per variant, and torch <->
JAX parity (torch weights copied into flax: EVAL and TRAIN logits, one SGD step).

Cost on a 2-core CPU: the full-size models are only built (torch) or shape-evaluated
(`jax.eval_shape`). XLA compile time grows with the number of blocks (the full ViT-S: ~20 s for
init, ~30 s for a train step), so the JAX checks use one encoder block (`depth=1`, every other
size as the spec) and one jitted function per variant that serves both the init checks and parity;
those tests, ~10 s of compile per variant, are marked slow.
"""

from __future__ import annotations

import collections
import functools
import pathlib

import imagenet_fixture
import jax
import jax.numpy as jnp
import numpy as np
import parity_utils
import pytest
import torch
from flax import linen as flax_nn
from torch import nn

import workloads
from algoperf import rng as np_rng
from algoperf import spec
from algoperf.param_types import infer_parameter_type
from algoperf.torch.workload import to_torch
from workloads.imagenet import input_pipeline
from workloads.imagenet_vit import model_jax, model_torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
NAMES = ("imagenet_vit", "imagenet_vit_glu", "imagenet_vit_post_ln", "imagenet_vit_map")
# (elements, tensors), WORKLOADS.md §1. Upstream's PyTorch MAP head fuses k and v (213 tensors);
# ours keeps q, k, v apart in both frameworks, as upstream's JAX (215).
EXPECTED_PARAMS = {
    "imagenet_vit": (22_122_472, 200),
    "imagenet_vit_glu": (50_452_456, 224),
    "imagenet_vit_post_ln": (22_121_704, 198),
    "imagenet_vit_map": (23_896_552, 215),
}
VIT_B_DEFAULTS = (87_006_184, 200)  # the model classes' defaults (TESTS.md §2, test_num_params)
T = spec.ParameterType
# Parameter types of the full base ViT-S/16: patch conv, 12 blocks (2 LN, q/k/v/out, 2-layer
# MLP), final LN, pre_logits, head.
BASE_TYPES = {
    T.CONV_WEIGHT: 1,
    T.LAYER_NORM_SCALE: 25,
    T.LAYER_NORM_BIAS: 25,
    T.ATTENTION_Q: 12,
    T.ATTENTION_K: 12,
    T.ATTENTION_V: 12,
    T.ATTENTION_OUT: 12,
    T.ATTENTION_BIAS: 48,
    T.WEIGHT: 26,
    T.BIAS: 27,
}
TRAIN, EVAL = spec.ForwardPassMode.TRAIN, spec.ForwardPassMode.EVAL
BATCH_SIZE = 4
IMAGE_SIZE = 32  # 2 x 2 patches of 16 px; the parity batch is 32 x 48 (2 x 3), see below
LEARNING_RATE = 0.1
DROPOUT_RATE = 0.5

# Parity tolerances (float32 on the CPU). Measured on a 2-core x86 CPU, one encoder block, all
# four variants: EVAL and TRAIN logits 2.6e-6 to 3.3e-6 abs at max |logit| 3.8 to 4.7 (6.6e-7 to
# 7.1e-7 relative); loss <= 9.5e-7; params after the SGD step 1.2e-7 abs (they move by 2.5e-2 to
# 4.3e-2). The bounds leave ~10x (logits) and ~80x (params) for other CPUs' summation orders; a
# mapping error is far larger (patch kernel with H and W swapped: 3.6 abs on the logits).
LOGITS_RTOL = 1e-5  # max |torch - jax| logits / max |logits|
STEP_PARAMS_ATOL = 1e-5  # params (and loss) after one SGD step


def torch_params(model: nn.Module) -> tuple[int, int]:
    tensors = list(model.parameters())
    return sum(t.numel() for t in tensors), len(tensors)


def jax_shapes(workload) -> dict:
    """The flax params tree as shapes only (no compile, no memory)."""
    variables = jax.eval_shape(
        functools.partial(workload.model.init, train=False),
        jax.random.PRNGKey(0),
        workload.init_inputs(),
    )
    assert set(variables) == {"params"}  # no BN state anywhere
    return variables["params"]


def jax_params(tree) -> tuple[int, int]:
    leaves = jax.tree.leaves(tree)
    return sum(int(np.prod(leaf.shape)) for leaf in leaves), len(leaves)


def _jax_name(path) -> str:
    return "/".join(str(k.key) for k in path)


# --- full-size structure ------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_full_size_parameter_counts_and_types(name):
    spec_ = workloads.get_spec(name)
    torch_model = workloads.load(name, "pytorch").build_model(**spec_.model_kwargs)
    shapes = jax_shapes(workloads.load(name, "jax"))
    assert torch_params(torch_model) == EXPECTED_PARAMS[name]
    assert jax_params(shapes) == EXPECTED_PARAMS[name]
    torch_types = collections.Counter(
        infer_parameter_type(key, p.ndim) for key, p in torch_model.named_parameters()
    )
    jax_types = collections.Counter(
        infer_parameter_type(_jax_name(path), len(leaf.shape))
        for path, leaf in jax.tree_util.tree_leaves_with_path(shapes)
    )
    assert torch_types == jax_types
    if name == "imagenet_vit":
        assert torch_types == BASE_TYPES
    # Every torch tensor has a flax twin of the same shape (the parity mapping, by name).
    copied = {k: v.shape for k, v in parity_utils.flatten(torch_to_flax(torch_model)).items()}
    assert copied == {k: tuple(v.shape) for k, v in parity_utils.flatten(shapes).items()}


def test_model_defaults_are_vit_b16():
    """Upstream's test_num_params builds the model classes with their defaults (ViT-B/16)."""
    assert torch_params(model_torch.ViT()) == VIT_B_DEFAULTS
    variables = jax.eval_shape(
        model_jax.ViT().init, jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3))
    )
    assert jax_params(variables["params"]) == VIT_B_DEFAULTS


def test_position_embedding_matches_the_formula_in_both_frameworks():
    width, omega = 384, 1.0 / 10_000 ** (np.arange(96) / 95)
    pe_torch = model_torch.sincos_posemb(2, 3, width, "cpu").numpy()
    pe_jax = model_jax.sincos_posemb(2, 3, width)
    assert pe_torch.shape == pe_jax.shape == (6, width)
    np.testing.assert_allclose(pe_torch, pe_jax, atol=1e-7)
    row, col = 1, 2  # token 5 of a 2 x 3 grid, row-major
    expected = np.concatenate(
        [np.sin(col * omega), np.cos(col * omega), np.sin(row * omega), np.cos(row * omega)]
    )
    np.testing.assert_allclose(pe_jax[row * 3 + col], expected, atol=1e-6)


def test_bad_image_size_is_a_clear_error():
    model = model_torch.ViT(width=32, depth=1, num_heads=2, patch_size=16)
    with pytest.raises(ValueError, match="not a multiple of the patch size 16"):
        model(torch.zeros(1, 3, 24, 32))
    with pytest.raises(ValueError, match="not a multiple of the patch 16"):
        jax.eval_shape(
            model_jax.ViT(width=32, depth=1, num_heads=2).init,
            jax.random.PRNGKey(0),
            jnp.zeros((1, 24, 32, 3)),
        )


# --- PyTorch: full-size models on a small image -------------------------------------------
def fake_batch(layout: str, image_size: int = IMAGE_SIZE) -> dict:
    return input_pipeline.fake_batch(BATCH_SIZE, layout=layout, seed=1, image_size=image_size)


@pytest.mark.parametrize("name", NAMES)
def test_torch_forward_loss_backward_and_dropout(name):
    workload = workloads.load(name, "pytorch", image_size=IMAGE_SIZE)
    model, model_state = workload.init_model_fn(np_rng.prng_key(0))
    assert model_state is None
    assert collections.Counter(workload.model_params_types.values()) == collections.Counter(
        infer_parameter_type(key, p.ndim) for key, p in model.named_parameters()
    )
    batch = to_torch(fake_batch("NCHW"), torch.device("cpu"))
    logits, _ = workload.model_fn(model, batch, None, TRAIN, None, True)
    assert logits.shape == (BATCH_SIZE, 1000)
    assert torch.count_nonzero(logits) == 0  # the head starts at zero (spec §6)
    loss = workload.loss_fn(batch["targets"], logits, batch["weights"])
    loss_value = loss["summed"] / loss["n_valid_examples"]
    assert torch.isclose(loss_value, torch.tensor(np.log(1000.0), dtype=torch.float32))
    loss_value.backward()
    grads = {key: p.grad for key, p in model.named_parameters()}
    assert len(grads) == EXPECTED_PARAMS[name][1]
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    output_grads = [g for key, g in grads.items() if workload.is_output_params(key)]
    assert len(output_grads) == 2 and all(g.abs().sum() > 0 for g in output_grads)
    # Dropout contract: the rate applies in TRAIN mode only; the spec default is 0.
    with torch.no_grad():
        nn.init.normal_(model.head.weight, std=0.1)

    def run(mode, rate=None):
        return workload.model_fn(model, batch, None, mode, None, False, rate)[0].detach()

    eval_logits = run(EVAL)
    torch.testing.assert_close(run(TRAIN), eval_logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(run(EVAL, DROPOUT_RATE), eval_logits, rtol=0, atol=0)
    assert (run(TRAIN, DROPOUT_RATE) - eval_logits).abs().max() > 1e-2


# --- JAX checks and torch <-> JAX parity, one encoder block ----------------------------------
def one_block(name: str, framework: str):
    """The workload with one encoder block (every other size as the spec), on small images."""
    return workloads.load(name, framework, model_kwargs={"depth": 1}, image_size=IMAGE_SIZE)


def torch_to_flax(model: nn.Module) -> dict:
    """The flax params tree holding the torch ViT's values (Linear/Conv2d/LayerNorm, probe)."""
    params: dict = {}

    def put(path, value):
        tree = params
        for key in path[:-1]:
            tree = tree.setdefault(key, {})
        assert path[-1] not in tree, path
        tree[path[-1]] = value.detach().cpu().numpy().copy()

    for module_name, module in model.named_modules():
        path = parity_utils.flax_path(module_name)
        if isinstance(module, nn.Linear):
            put((*path, "kernel"), module.weight.T)
        elif isinstance(module, nn.Conv2d):
            put((*path, "kernel"), module.weight.permute(2, 3, 1, 0))  # OIHW -> HWIO
        elif isinstance(module, nn.LayerNorm):
            put((*path, "scale"), module.weight)
        elif isinstance(module, model_torch.MAPHead):
            put((*path, "probe"), module.probe)
            continue
        elif any(True for _ in module.parameters(recurse=False)):
            raise TypeError(f"no flax mapping for {type(module).__name__} at {module_name!r}")
        else:
            continue
        put((*path, "bias"), module.bias)
    return params


def randomize_(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial LN scales/biases, MLP biases and head: a fresh ViT has LN 1/0, MLP biases
    ~1e-6 and a zero head, so its logits would be 0 and prove nothing."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.add_(0.2 * torch.randn(module.weight.shape, generator=generator))
                module.bias.add_(0.2 * torch.randn(module.bias.shape, generator=generator))
            elif isinstance(module, model_torch.MLP):
                for linear in (module.fc1, module.fc2):
                    linear.bias.add_(0.1 * torch.randn(linear.bias.shape, generator=generator))
        model.head.weight.copy_(0.1 * torch.randn(model.head.weight.shape, generator=generator))
        model.head.bias.copy_(0.1 * torch.randn(model.head.bias.shape, generator=generator))


@functools.cache
def jax_step(name: str):
    """One jitted function: EVAL and TRAIN logits, loss, grads, the SGD step, TRAIN logits with
    dropout (each extra forward costs seconds of XLA compile on a 2-core CPU)."""
    workload = one_block(name, "jax")

    def run(params, batch, rng):
        eval_logits, _ = workload.model_fn(params, batch, None, EVAL, rng, False)

        def loss(params):
            logits, _ = workload.model_fn(params, batch, None, TRAIN, rng, True, 0.0)
            out = workload.loss_fn(batch["targets"], logits, batch["weights"])
            return out["summed"] / out["n_valid_examples"], logits

        (loss_value, train_logits), grads = jax.value_and_grad(loss, has_aux=True)(params)
        new_params = jax.tree.map(lambda p, g: p - LEARNING_RATE * g, params, grads)
        dropout_logits, _ = workload.model_fn(params, batch, None, TRAIN, rng, False, DROPOUT_RATE)
        return {
            "eval_logits": eval_logits,
            "train_logits": train_logits,
            "loss": loss_value,
            "grads": grads,
            "params": new_params,
            "dropout_logits": dropout_logits,
        }

    compiled = jax.jit(run)

    def call(params, batch):
        # Host arrays in: init_model_fn's replicated params and the copied torch weights then
        # share one compiled program (a different input sharding would compile it again).
        params, batch = jax.device_get((params, batch))
        with jax.default_matmul_precision("highest"):
            return jax.device_get(compiled(params, batch, jax.random.PRNGKey(1)))

    return workload, call


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_jax_init_forward_loss_backward_and_dropout(name):
    workload, step = jax_step(name)
    params, model_state = workload.init_model_fn(jax.random.PRNGKey(0))
    assert model_state is None
    torch_workload = one_block(name, "pytorch")
    torch_model, _ = torch_workload.init_model_fn(np_rng.prng_key(0))
    assert collections.Counter(jax.tree.leaves(workload.model_params_types)) == (
        collections.Counter(torch_workload.model_params_types.values())
    )
    out = step(params, jax_batch(numpy_batch()))
    assert out["eval_logits"].shape == (BATCH_SIZE, 1000)
    assert not np.any(out["eval_logits"])  # the head starts at zero (spec §6)
    np.testing.assert_allclose(out["loss"], np.log(1000.0), rtol=1e-6)
    grads = dict(jax.tree_util.tree_leaves_with_path(out["grads"]))
    assert all(np.isfinite(g).all() for g in grads.values())
    output_grads = [g for path, g in grads.items() if workload.is_output_params(_keys(path))]
    assert len(output_grads) == 2 and all(np.abs(g).sum() > 0 for g in output_grads)


def numpy_batch() -> dict[str, np.ndarray]:
    """NCHW, 32 x 48 pixels: a 2 x 3 token grid, so swapped rows and columns would show."""
    rng = np.random.default_rng(3)
    return {
        "inputs": rng.standard_normal((BATCH_SIZE, 3, 32, 48)).astype(np.float32),
        "targets": rng.integers(0, 1000, BATCH_SIZE),
        "weights": np.ones(BATCH_SIZE, np.float32),
    }


def jax_batch(batch: dict[str, np.ndarray]) -> dict:
    out = {k: jnp.asarray(v) for k, v in batch.items()}
    out["inputs"] = jnp.transpose(out["inputs"], (0, 2, 3, 1))  # NHWC
    return out


def _keys(path) -> tuple[str, ...]:
    return tuple(k.key for k in path)


@functools.cache
def parity(name: str) -> dict:
    """Torch and JAX outputs from the same weights and the same (non-square) batch."""
    torch_workload = one_block(name, "pytorch")
    model, _ = torch_workload.init_model_fn(np_rng.prng_key(0))
    randomize_(model)
    params = jax.tree.map(jnp.asarray, torch_to_flax(model))
    workload, step = jax_step(name)
    parity_utils.assert_same_structure(params, jax_shapes(workload))
    jax_out = step(params, jax_batch(numpy_batch()))
    batch = to_torch(numpy_batch(), torch.device("cpu"))
    eval_logits, _ = torch_workload.model_fn(model, batch, None, EVAL, None, False)
    train_logits, _ = torch_workload.model_fn(model, batch, None, TRAIN, None, True, 0.0)
    out = torch_workload.loss_fn(batch["targets"], train_logits, batch["weights"])
    loss = out["summed"] / out["n_valid_examples"]
    loss.backward()
    with torch.no_grad():
        for param in model.parameters():
            param -= LEARNING_RATE * param.grad
    torch_out = {
        "eval_logits": eval_logits.numpy(),
        "train_logits": train_logits.detach().numpy(),
        "loss": loss.item(),
        "params": torch_to_flax(model),
    }
    return {"torch": torch_out, "jax": jax_out, "initial": jax.device_get(params)}


def max_abs_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_parity_logits(name):
    result = parity(name)
    torch_out, jax_out = result["torch"], result["jax"]
    for key in ("eval_logits", "train_logits"):
        scale = float(np.max(np.abs(torch_out[key])))
        assert scale > 0.1  # randomised head and norms: non-trivial logits
        diff = max_abs_diff(torch_out[key], jax_out[key])
        assert diff < LOGITS_RTOL * scale, (
            f"{key}: max |diff| {diff:.2e} at max |logit| {scale:.2f}"
        )


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_parity_sgd_step(name):
    result = parity(name)
    torch_out, jax_out = result["torch"], result["jax"]
    assert abs(torch_out["loss"] - float(jax_out["loss"])) < STEP_PARAMS_ATOL
    moved = parity_utils.flatten(torch_out["params"])
    diffs = {
        key: max_abs_diff(moved[key], value)
        for key, value in parity_utils.flatten(jax_out["params"]).items()
    }
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] < STEP_PARAMS_ATOL, f"{worst}: {diffs[worst]:.2e}"
    before = parity_utils.flatten(result["initial"])
    assert max(max_abs_diff(before[k], moved[k]) for k in moved) > 100 * STEP_PARAMS_ATOL


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_jax_dropout_changes_train_logits(name):
    jax_out = parity(name)["jax"]
    assert max_abs_diff(jax_out["dropout_logits"], jax_out["eval_logits"]) > 1e-2


def test_jax_dropout_rate_is_a_call_argument():
    """Inverted dropout: the kept fraction is 1 - rate, kept values scaled by 1 / (1 - rate);
    off in eval mode and at rate 0; a traced rate works under jit."""

    class Probe(flax_nn.Module):
        @flax_nn.compact
        def __call__(self, x, train, rate):
            return model_jax.dropout(self, x, rate, train)

    x = jnp.ones((100_000,))
    rngs = {"dropout": jax.random.PRNGKey(0)}
    traced = jax.jit(lambda x, rate: Probe().apply({}, x, True, rate, rngs=rngs))
    out = np.asarray(traced(x, 0.25))
    assert abs(np.mean(out == 0) - 0.25) < 0.01
    np.testing.assert_allclose(np.unique(out), [0.0, 1 / 0.75], rtol=1e-6)
    assert np.array_equal(Probe().apply({}, x, False, 0.25, rngs=rngs), x)
    assert np.array_equal(Probe().apply({}, x, True, 0.0, rngs=rngs), x)


# --- end to end: `algoperf run` on the fixture JPEG tree -------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("framework", ["pytorch", "jax"])
def test_algoperf_run_on_the_fixture_tree(tmp_path, framework):
    """A few NAdamW steps and the evals of imagenet_vit through the real CLI, runner and JPEG
    pipeline (torch.compile on in PyTorch); one encoder block and 32 px images keep the
    compiles to seconds."""
    inductor_cache = tmp_path / "inductor"  # cold, as in CI; its files prove the compile ran
    result = imagenet_fixture.run_on_fixture_tree(
        tmp_path,
        "imagenet_vit",
        framework,
        "image_size=32,num_workers=0,model_kwargs={'depth':1}",
        env={"TORCHINDUCTOR_CACHE_DIR": str(inductor_cache)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trial = tmp_path / "exp" / "imagenet_vit" / f"imagenet_vit_{framework}" / "trial_1"
    flags = imagenet_fixture.check_fixture_run(trial)
    assert flags["torch_compile"] is True and flags["workload"] == "imagenet_vit"
    compiled_files = [p for p in inductor_cache.rglob("*") if p.is_file()]
    assert bool(compiled_files) == (framework == "pytorch")
