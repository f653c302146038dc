"""finewebedu_lm's decoder, loss and perplexity (docs/workloads.md, "finewebedu_lm"), what is
specific to them, without its data: the exact parameter count at full size in both frameworks;
RoPE, QK-norm, the GLU MLP, a block and the whole forward, PyTorch against JAX with copied
weights; the bfloat16 path against float32; causal masking; the loss against
`F.cross_entropy(label_smoothing=...)`; perplexity over real tokens only; the FLOPs formula
against PyTorch's FlopCounterMode; the init.

The registry suite (tests/test_workload_registry.py, from workloads/finewebedu_lm/testing.py)
adds the Workload-level checks: types, output layer, init / forward / loss / backward through
`workloads.load`, label smoothing as submissions pass it, one SGD step in both frameworks, and
`algoperf run` on the fixture.

Tolerances were measured on a 2-core x86 CPU (float32 unless a test says otherwise) and are set
about 10x above what was seen; a wrong pair layout, split or scale is O(0.1) or more.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from algoperf import metrics
from algoperf.torch.workload import TorchCollectives
from algoperf.workloads import finewebedu_lm, parity
from algoperf.workloads.finewebedu_lm import metrics as lm_metrics
from algoperf.workloads.finewebedu_lm import model_jax, model_torch, testing

FULL = dict(finewebedu_lm.SPEC.model_kwargs)
TINY = dict(testing.TINY)
FULL_SIZE_PARAMS = 252_815_372
FULL_SIZE_TENSORS = 86


class _Spec:
    model_kwargs = TINY


class _Workload:
    """What testing.make_batch reads of a workload."""

    spec = _Spec


def tiny_batch(batch_size: int = 4, seed: int = 3, seq_len: int | None = None) -> dict:
    return testing.make_batch(_Workload, batch_size, seed, seq_len)


def highest(fn):
    """A jitted function run at float32 matmul precision (XLA's CPU default, said explicitly)."""
    jitted = jax.jit(fn)

    def run(*args):
        with jax.default_matmul_precision("highest"):
            return np.asarray(jitted(*args))

    return run


@functools.cache
def tiny_models(compute_dtype: str = "float32"):
    """(torch model with randomised norms and attention scales, its flax variables, flax model)."""
    torch.manual_seed(0)
    kwargs = {**TINY, "compute_dtype": compute_dtype}
    model = model_torch.DecoderLM(**kwargs)
    testing.randomize_(model)
    return model, testing.torch_to_flax(model), model_jax.DecoderLM(**kwargs)


@functools.cache
def jax_forward(compute_dtype: str = "float32"):
    return highest(tiny_models(compute_dtype)[2].apply)


def torch_logits(model, inputs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(inputs)).numpy()


def relative_diff(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# --- size ---------------------------------------------------------------------------------
def test_full_size_parameter_count_in_both_frameworks():
    """252,815,372 parameters in 86 tensors (torch on the meta device, JAX by eval_shape):
    the embedding 50,257 x 1,024 counted once (it is the output layer too), 12 blocks of
    16,779,265, the final norm 1,024."""
    with torch.device("meta"):
        model = model_torch.DecoderLM(**FULL)
    torch_shapes = {key: tuple(p.shape) for key, p in model.named_parameters()}
    variables = jax.eval_shape(
        functools.partial(model_jax.DecoderLM(**FULL).init, train=False),
        jax.random.PRNGKey(0),
        jnp.ones((1, FULL["seq_len"]), jnp.int32),
    )
    jax_shapes = parity.shapes(variables["params"])
    for shapes in (torch_shapes, jax_shapes):
        assert sum(math.prod(s) for s in shapes.values()) == FULL_SIZE_PARAMS
        assert len(shapes) == FULL_SIZE_TENSORS
    assert lm_metrics.num_params(FULL) == FULL_SIZE_PARAMS
    assert torch_shapes["embed.weight"] == (50_257, 1_024)
    assert torch_shapes["layers.0.attn.qkv.weight"] == (3 * 1_024, 1_024)
    assert torch_shapes["layers.0.mlp.fc1.weight"] == (8_192, 1_024)
    assert torch_shapes["layers.0.mlp.fc2.weight"] == (1_024, 4_096)
    assert torch_shapes["layers.11.attn.attn_scale"] == ()
    # Every torch tensor has its flax twin through the weight map.
    mapped = parity.shapes(testing.torch_to_flax(model, convert=parity.to_shape)["params"])
    assert mapped == jax_shapes


# --- pieces: RoPE, QK-norm, GLU, a block ----------------------------------------------------
def test_rope_tables_and_rotation_agree_between_frameworks():
    cos_t, sin_t = model_torch.rope_tables(1_024, 128, "cpu")
    cos_j, sin_j = model_jax.rope_tables(1_024, 128)
    # Both from float64 angles rounded once: equal up to a last-bit rounding tie.
    np.testing.assert_allclose(cos_t.numpy(), cos_j, rtol=0, atol=1e-7)
    np.testing.assert_allclose(sin_t.numpy(), sin_j, rtol=0, atol=1e-7)
    x = np.random.default_rng(0).normal(size=(2, 24, 3, 16)).astype(np.float32)
    cos, sin = model_jax.rope_tables(24, 16)
    rotated_t = model_torch.apply_rope(torch.from_numpy(x), *model_torch.rope_tables(24, 16, "cpu"))
    rotated_j = np.asarray(model_jax.apply_rope(jnp.asarray(x), cos, sin))
    np.testing.assert_allclose(rotated_t.numpy(), rotated_j, rtol=0, atol=1e-6)  # seen 0


def test_rope_rotates_adjacent_pairs_by_position():
    """Pair (x[2i], x[2i+1]) turns by pos · θ^(-2i/d): the first pair by pos radians; each
    pair's norm is kept; a q·k product depends on the positions' difference only."""
    head_dim, length = 8, 12
    cos, sin = model_torch.rope_tables(length, head_dim, "cpu")
    unit = torch.zeros(1, length, 1, head_dim)
    unit[..., 0] = 1.0  # the first pair's first component
    rotated = model_torch.apply_rope(unit, cos, sin)[0, :, 0]
    positions = torch.arange(length, dtype=torch.float64)
    torch.testing.assert_close(rotated[:, 0].double(), positions.cos(), rtol=0, atol=1e-6)
    torch.testing.assert_close(rotated[:, 1].double(), positions.sin(), rtol=0, atol=1e-6)
    assert not rotated[:, 2:].any()  # the other pairs stay 0: pairs are adjacent, not halves
    # The slowest pair turns by pos · θ^(-6/8).
    x = torch.zeros(1, length, 1, head_dim)
    x[..., 6] = 1.0
    slow = model_torch.apply_rope(x, cos, sin)[0, :, 0, 6:].double()
    angles = positions * model_torch.ROPE_THETA ** (-6 / 8)
    torch.testing.assert_close(slow[:, 0], angles.cos(), rtol=0, atol=1e-6)
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 1, 1, 1, head_dim, generator=generator).unbind(0)  # one vector each
    q, k = q.expand(1, length, 1, head_dim), k.expand(1, length, 1, head_dim)
    q_rot, k_rot = model_torch.apply_rope(q, cos, sin), model_torch.apply_rope(k, cos, sin)
    pair_norms = q.unflatten(-1, (-1, 2)).norm(dim=-1)
    torch.testing.assert_close(q_rot.unflatten(-1, (-1, 2)).norm(dim=-1), pair_norms)
    scores = (q_rot[0, :, 0] @ k_rot[0, :, 0].T).double()  # [query pos, key pos]
    for offset in (0, 1, 5):
        diagonal = torch.diagonal(scores, offset)
        torch.testing.assert_close(diagonal, diagonal[:1].expand_as(diagonal), atol=1e-5, rtol=0)


def test_qk_norm_agrees_between_frameworks_and_is_safe_at_zero():
    x = np.random.default_rng(1).normal(size=(2, 5, 3, 16)).astype(np.float32) * 3.0
    x[0, 0, 0] = 0.0  # a zero vector stays 0 (no NaN): eps goes to the norm
    normed_t = model_torch.qk_norm(torch.from_numpy(x)).numpy()
    normed_j = np.asarray(model_jax.qk_norm(jnp.asarray(x)))
    np.testing.assert_allclose(normed_t, normed_j, rtol=0, atol=1e-6)  # seen 1.2e-7
    assert not normed_t[0, 0, 0].any()
    norms = np.linalg.norm(x.astype(np.float64), axis=-1)
    expected = norms / (norms + model_torch.QK_NORM_EPS)
    np.testing.assert_allclose(np.linalg.norm(normed_t, axis=-1), expected, rtol=1e-6)


def _copied(torch_module):
    return testing.torch_to_flax(torch_module)


def test_glu_mlp_is_sigmoid_glu_and_agrees_between_frameworks():
    torch.manual_seed(1)
    mlp = model_torch.GluMlp(32, 48)
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        hidden = mlp.fc1(x)
        first, second = hidden[..., :48], hidden[..., 48:]
        expected = mlp.fc2(first * torch.sigmoid(second))  # a · σ(b), not SiLU-gated
        out_t = mlp(x)
    torch.testing.assert_close(out_t, expected, rtol=0, atol=1e-6)
    flax_mlp = model_jax.GluMlp(48, 0.02, jnp.float32)
    out_j = highest(flax_mlp.apply)(_copied(mlp), x.numpy())
    assert relative_diff(out_j, out_t.numpy()) < 1e-5  # seen 1.8e-7


def test_block_agrees_between_frameworks():
    """One pre-norm block (RMSNorms, fused q/k/v, RoPE, QK-norm with its scale, causal SDPA,
    GLU MLP, residuals) with copied weights and non-trivial norm and attention scales."""
    torch.manual_seed(2)
    block = model_torch.Block(32, 2, 48, 16)
    testing.randomize_(block)
    x = torch.randn(3, 16, 32)
    cos, sin = model_torch.rope_tables(16, 16, "cpu")
    with torch.no_grad():
        out_t = block(x, cos, sin).numpy()
    flax_block = model_jax.Block(2, 48, 16, 0.02, jnp.float32)
    cos_j, sin_j = model_jax.rope_tables(16, 16)
    run = highest(lambda v, x: flax_block.apply(v, x, cos_j, sin_j))
    out_j = run(_copied(block), x.numpy())
    assert relative_diff(out_j, out_t) < 1e-5  # seen 1.2e-7
    assert relative_diff(out_t, x.numpy()) > 1e-2  # the block changed its input


# --- the whole model ------------------------------------------------------------------------
def test_forward_loss_and_ppl_agree_between_frameworks():
    model, variables, _ = tiny_models()
    batch = tiny_batch()
    logits_t = torch_logits(model, batch["inputs"])
    logits_j = jax_forward()(variables, batch["inputs"])
    assert logits_t.dtype == logits_j.dtype == np.float32
    assert logits_t.shape == (4, testing.SEQ_LEN, TINY["vocab_size"])
    assert np.abs(logits_t).max() > 0.1  # non-trivial logits
    assert relative_diff(logits_j, logits_t) < 1e-5  # seen 1.5e-7
    targets, weights = batch["targets"], batch["weights"]
    loss_t = model_torch.token_cross_entropy(
        torch.from_numpy(targets), torch.from_numpy(logits_t), torch.from_numpy(weights), 0.1
    )
    loss_j = model_jax.token_cross_entropy(targets, logits_j, weights, 0.1)
    mean_t = float(loss_t["summed"] / loss_t["n_valid_examples"])
    mean_j = float(loss_j["summed"] / loss_j["n_valid_examples"])
    assert abs(mean_t - mean_j) < 5e-6  # seen 4.8e-7
    ppl_t = _evaluate_torch([batch], logits_of=lambda b: torch_logits(model, b["inputs"]))
    ppl_j = _evaluate_jax([batch], logits_of=lambda b: jax_forward()(variables, b["inputs"]))
    assert ppl_t["num_examples"] == ppl_j["num_examples"] == 3
    assert abs(ppl_t["loss"] - ppl_j["loss"]) < 1e-6  # seen 0
    assert abs(ppl_t["ppl"] / ppl_j["ppl"] - 1.0) < 1e-6


def test_bfloat16_path_is_close_to_float32():
    """compute_dtype bfloat16 (torch autocast on the CPU; flax dtypes) against each framework's
    float32 forward with the same weights: logits within 3% of their scale (seen 0.35% in both:
    bf16 keeps 8 mantissa bits), the mean loss within 1e-2 (seen 5e-5); float32 logits out."""
    model, variables, _ = tiny_models()
    bf16_model, _, flax_bf16 = tiny_models("bfloat16")
    bf16_model.load_state_dict(model.state_dict())
    batch = tiny_batch()
    reference = {"pytorch": torch_logits(model, batch["inputs"])}
    reference["jax"] = jax_forward()(variables, batch["inputs"])
    lowered = {"pytorch": torch_logits(bf16_model, batch["inputs"])}
    lowered["jax"] = jax_forward("bfloat16")(variables, batch["inputs"])
    for framework, logits in lowered.items():
        assert logits.dtype == np.float32
        diff = relative_diff(logits, reference[framework])
        assert 1e-4 < diff < 3e-2, f"{framework}: {diff:.2e}"  # really bf16, and close
        losses = [
            model_jax.token_cross_entropy(batch["targets"], x, batch["weights"])
            for x in (logits, reference[framework])
        ]
        means = [float(x["summed"] / x["n_valid_examples"]) for x in losses]
        assert abs(means[0] - means[1]) < 1e-2, framework
    assert relative_diff(lowered["jax"], lowered["pytorch"]) < 3e-2  # seen 0.5%
    assert all(p.dtype == torch.float32 for p in bf16_model.parameters())


@pytest.mark.parametrize("framework", ["pytorch", "jax"])
def test_later_tokens_do_not_change_earlier_logits(framework):
    model, variables, _ = tiny_models()
    inputs = tiny_batch()["inputs"]
    changed = inputs.copy()
    changed[:, 9:] = (changed[:, 9:] + 7) % TINY["vocab_size"]
    if framework == "pytorch":
        before, after = torch_logits(model, inputs), torch_logits(model, changed)
    else:
        before, after = (jax_forward()(variables, x) for x in (inputs, changed))
    np.testing.assert_allclose(after[:, :9], before[:, :9], rtol=0, atol=1e-6)
    assert np.abs(after[:, 9:] - before[:, 9:]).max() > 1e-3


# --- loss and perplexity --------------------------------------------------------------------
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.3])
def test_loss_is_torch_cross_entropy_with_label_smoothing(label_smoothing):
    """Per token equal to `F.cross_entropy(label_smoothing=α)` in both frameworks, α a float
    or a 0-d tensor; masked tokens add 0; n_valid_examples is the mask's sum (every token
    without a mask); smoothing changes the loss."""
    rng = np.random.default_rng(4)
    logits = (3.0 * rng.normal(size=(3, 7, 50))).astype(np.float32)
    targets = rng.integers(0, 50, (3, 7)).astype(np.int32)
    mask = np.ones((3, 7), np.float32)
    mask[2] = 0.0
    expected = F.cross_entropy(
        torch.from_numpy(logits).flatten(0, 1),
        torch.from_numpy(targets).long().flatten(),
        reduction="none",
        label_smoothing=label_smoothing,
    ).view(3, 7)
    for smoothing in (label_smoothing, torch.tensor(label_smoothing)):
        out = model_torch.token_cross_entropy(
            torch.from_numpy(targets), torch.from_numpy(logits), torch.from_numpy(mask), smoothing
        )
        torch.testing.assert_close(out["per_example"], expected * torch.from_numpy(mask))
        assert out["n_valid_examples"].item() == 14
    out_j = model_jax.token_cross_entropy(targets, logits, mask, label_smoothing)
    np.testing.assert_allclose(
        np.asarray(out_j["per_example"]), expected.numpy() * mask, rtol=1e-6, atol=1e-6
    )
    unmasked = model_torch.token_cross_entropy(torch.from_numpy(targets), torch.from_numpy(logits))
    assert unmasked["n_valid_examples"].item() == 21
    assert float(model_jax.token_cross_entropy(targets, logits)["n_valid_examples"]) == 21
    unsmoothed = F.cross_entropy(
        torch.from_numpy(logits).flatten(0, 1), torch.from_numpy(targets).long().flatten()
    )
    assert (abs(expected.mean() - unsmoothed) > 1e-3) == (label_smoothing > 0)


def test_loss_takes_bfloat16_logits_in_float32():
    logits = torch.randn(2, 5, 40, generator=torch.Generator().manual_seed(5)) * 4
    targets = torch.randint(0, 40, (2, 5), generator=torch.Generator().manual_seed(6))
    from_bf16 = model_torch.token_cross_entropy(targets, logits.bfloat16())
    reference = model_torch.token_cross_entropy(targets, logits.bfloat16().float())
    assert from_bf16["summed"].dtype == torch.float32
    torch.testing.assert_close(from_bf16["per_example"], reference["per_example"])


def _evaluate_torch(batches, logits_of) -> dict:
    def compute(batch):
        tensors = {key: torch.from_numpy(value) for key, value in batch.items()}
        return model_torch.lm_eval_outputs(torch.from_numpy(logits_of(batch)), tensors)

    collectives = TorchCollectives(False, torch.device("cpu"))
    return metrics.evaluate(batches, compute, lm_metrics.METRICS, collectives)


def _evaluate_jax(batches, logits_of) -> dict:
    from algoperf.jax.workload import _JaxCollectives

    def compute(batch):
        return model_jax.lm_eval_outputs(jnp.asarray(logits_of(batch)), batch)

    return metrics.evaluate(batches, compute, lm_metrics.METRICS, _JaxCollectives())


def test_ppl_is_exp_of_the_mean_nll_over_real_tokens_only():
    """Two eval batches, the second ending in padding rows whose ids, targets and logits are
    arbitrary: ppl = exp(Σ NLL / Σ tokens) over the real windows' tokens (not a mean of batch
    perplexities), unsmoothed, in both frameworks; num_examples counts real windows."""
    rng = np.random.default_rng(7)
    vocab, length = 30, 6
    rows = [
        {
            "inputs": rng.integers(0, vocab, (4, length)).astype(np.int32),
            "targets": rng.integers(0, vocab, (4, length)).astype(np.int32),
            "weights": np.ones((4, length), np.float32),
        }
        for _ in range(2)
    ]
    rows[1]["weights"][2:] = 0.0  # two padding rows
    logits = {
        id(batch): (2.0 * rng.normal(size=(4, length, vocab))).astype(np.float32) for batch in rows
    }
    logits[id(rows[1])][2:] = 1e4  # padding rows' logits: must not count
    real_logits = np.concatenate([logits[id(rows[0])], logits[id(rows[1])][:2]])
    real_targets = np.concatenate([rows[0]["targets"], rows[1]["targets"][:2]])
    nll = F.cross_entropy(
        torch.from_numpy(real_logits).double().flatten(0, 1),
        torch.from_numpy(real_targets).long().flatten(),
    ).item()
    for evaluate in (_evaluate_torch, _evaluate_jax):
        result = evaluate(rows, lambda batch: logits[id(batch)])
        assert result["num_examples"] == 6
        assert abs(result["loss"] - nll) < 1e-5
        assert abs(result["ppl"] / math.exp(nll) - 1.0) < 1e-5


# --- FLOPs, init, options -------------------------------------------------------------------
def test_flops_per_token_is_what_flop_counter_mode_counts():
    """With the math attention kernel (explicit q·kᵀ and weights·v matmuls over the full
    square), FlopCounterMode's forward count x3 per token is exactly metrics.flops_per_token;
    and the full-size figure is 6 · 252,789,760 + 12 · 12 · 1,024 · 1,024."""
    model, _, _ = tiny_models()
    inputs = torch.from_numpy(tiny_batch()["inputs"])
    math_kernel = torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH)
    with torch.no_grad(), math_kernel, FlopCounterMode(display=False) as counter:
        model(inputs)
    tokens = inputs.numel()
    assert 3 * counter.get_total_flops() == lm_metrics.flops_per_token(TINY) * tokens
    assert lm_metrics.flops_per_token(FULL) == 6 * 252_789_760 + 12 * 12 * 1_024 * 1_024


def test_init_follows_upstream():
    """N(0, 0.02) for the embedding, q/k/v and fc1; N(0, 0.02/√(2·layers)) for the projections
    that end a residual branch; norm scales 1; attention scales log2(L² - L) (19.99859 at
    L = 1,024), in both frameworks."""
    kwargs = {**TINY, "vocab_size": 512, "emb_dim": 64, "mlp_dim": 192, "num_layers": 2}
    torch.manual_seed(0)
    torch_params = {
        k: p.detach().numpy() for k, p in model_torch.DecoderLM(**kwargs).named_parameters()
    }
    with jax.threefry_partitionable(False):
        variables = jax.jit(functools.partial(model_jax.DecoderLM(**kwargs).init, train=False))(
            jax.random.PRNGKey(0), jnp.ones((1, 16), jnp.int32)
        )
    jax_params = {
        key.replace("/", ".").replace("_0.", ".0.").replace("_1.", ".1."): value
        for key, value in parity.flatten(jax.device_get(variables["params"])).items()
    }
    residual = 0.02 / math.sqrt(4)
    expected_std = {"embed": 0.02, "qkv": 0.02, "fc1": 0.02, "out": residual, "fc2": residual}
    for params in (torch_params, jax_params):
        stds = {}
        for key, value in params.items():
            module = key.split(".")[-2]
            if module in expected_std:
                stds[module] = float(np.std(value))
                assert abs(float(np.mean(value))) < 0.1 * expected_std[module], key
        assert stds.keys() == expected_std.keys()
        for module, std in stds.items():
            assert abs(std / expected_std[module] - 1) < 0.05, (module, std)
        scales = [v for k, v in params.items() if k.endswith("attn_scale")]
        np.testing.assert_allclose(scales, math.log2(16 * 16 - 16), rtol=1e-7)
        norms = [v for k, v in params.items() if "norm" in k]
        assert len(norms) == 5 and all(np.all(v == 1.0) for v in norms)
    assert abs(math.log2(1_024**2 - 1_024) - 19.99859) < 1e-5


def test_compute_dtype_option():
    """ "auto" is float32 on a CPU in both frameworks; an unknown value is a clear error."""
    assert not model_torch.DecoderLM(**TINY).uses_bfloat16(torch.device("cpu"))
    assert model_torch.DecoderLM(**{**TINY, "compute_dtype": "auto"}).uses_bfloat16(
        torch.device("cuda")
    )
    assert model_jax.resolve_compute_dtype("auto") == jnp.float32
    with pytest.raises(ValueError, match="compute_dtype"):
        model_torch.DecoderLM(**{**TINY, "compute_dtype": "fp16"})
    with pytest.raises(ValueError, match="compute_dtype"):
        model_jax.resolve_compute_dtype("fp16")


@pytest.mark.slow
def test_compiled_forward_and_backward_match_eager():
    """torch.compile (the workload's default policy) gives eager's logits and gradients."""
    torch.manual_seed(3)
    eager = model_torch.DecoderLM(**TINY)
    compiled_source = model_torch.DecoderLM(**TINY)
    compiled_source.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_source)
    batch = tiny_batch()
    inputs, targets = torch.from_numpy(batch["inputs"]), torch.from_numpy(batch["targets"])
    weights = torch.from_numpy(batch["weights"])
    results = []
    for model, params in ((eager, eager), (compiled, compiled_source)):
        logits = model(inputs)
        out = model_torch.token_cross_entropy(targets, logits, weights, 0.1)
        (out["summed"] / out["n_valid_examples"]).backward()
        grads = {k: p.grad.clone() for k, p in params.named_parameters()}
        results.append((logits.detach(), grads))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-6)
    for key, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][key], grad, rtol=1e-4, atol=1e-7, msg=key)
