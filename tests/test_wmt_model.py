"""wmt's Transformer in both frameworks (workloads/wmt/model_torch.py, model_jax.py) beyond what
the registry suite checks: full-size parameter counts and types of every variant, the sinusoidal
table, the segment-aware shift and the masks (a packed row gives each of its pairs the logits it
gets alone), the loss against PyTorch's and optax's cross-entropy, PyTorch <-> JAX parity with
copied weights (encoder, full forward on packed rows, loss) for every variant, the cached decoder
step against the uncached forward, the init's statistics, and the eval outputs.
"""

from __future__ import annotations

import collections
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F

from algoperf import workloads
from algoperf.param_types import infer_parameter_type
from algoperf.workloads import parity
from algoperf.workloads.wmt import model_jax as MJ
from algoperf.workloads.wmt import model_torch as MT
from algoperf.workloads.wmt import testing

NAMES = ("wmt", "wmt_post_ln", "wmt_attention_temp", "wmt_glu_tanh")
KEYS = (
    "inputs",
    "targets",
    "inputs_position",
    "targets_position",
    "inputs_segmentation",
    "targets_segmentation",
)
VARIANT_KWARGS = {name: workloads.get_spec(name).model_kwargs for name in NAMES}


def tiny_kwargs(name: str) -> dict:
    return {**VARIANT_KWARGS[name], **testing.TINY}


@functools.cache
def torch_model(name: str, seed: int = 0):
    """The tiny model of `name`, randomised LN and biases, in eval mode (cached: read only)."""
    torch.manual_seed(seed)
    model = MT.Transformer(**tiny_kwargs(name)).eval()
    testing.randomize_(model, seed)
    return model


def flax_variables(model) -> dict:
    return testing.TESTS.torch_to_flax(model)


def sentence_pairs(seed: int, lengths) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(testing.random_sentence(rng, n), testing.random_sentence(rng, m)) for n, m in lengths]


def torch_logits(model, batch: dict, keys=KEYS, **options) -> np.ndarray:
    with torch.no_grad():
        arguments = [torch.from_numpy(batch[k]) if k in batch else None for k in keys]
        return model(*arguments, **options).numpy()


# --- full size ------------------------------------------------------------------------------
def full_size_shapes(name: str, framework: str) -> dict[str, tuple[int, ...]]:
    kwargs = workloads.get_spec(name).model_kwargs
    if framework == "pytorch":
        with torch.device("meta"):
            model = MT.Transformer(**kwargs)
        return {key: tuple(p.shape) for key, p in model.named_parameters()}
    tokens = jnp.ones((1, 8), jnp.int32)
    variables = jax.eval_shape(
        functools.partial(MJ.Transformer(**kwargs).init, train=False),
        {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)},
        tokens,
        tokens,
    )
    return parity.shapes(variables["params"])


@pytest.mark.parametrize("framework", ["pytorch", "jax"])
@pytest.mark.parametrize("name", NAMES)
def test_full_size_parameter_counts_and_types(name, framework):
    """133,521,408 / 146,116,608 / 133,517,312 parameters as upstream's, in 155 / 179 / 151
    tensors (upstream's PyTorch layout), and upstream's parameter types."""
    shapes = full_size_shapes(name, framework)
    counts = (sum(math.prod(s) for s in shapes.values()), len(shapes))
    assert counts == workloads.get_spec(name).num_params[framework]
    types = collections.Counter(infer_parameter_type(k, len(s)) for k, s in shapes.items())
    expected = collections.Counter(testing.TESTS.param_types)
    if name == "wmt_post_ln":  # no final encoder and decoder norms
        expected.subtract({t: 2 for t in expected if t.name.startswith("LAYER_NORM")})
    if name == "wmt_glu_tanh":  # a GLU weight and bias in each of the 12 FFNs
        expected.update({t: 12 for t in expected if t.name in ("WEIGHT", "BIAS")})
    assert types == expected


def test_full_size_weight_map_covers_every_tensor():
    with torch.device("meta"):
        model = MT.Transformer(**workloads.get_spec("wmt_glu_tanh").model_kwargs)
    mapped = parity.shapes(testing.TESTS.torch_to_flax(model, convert=parity.to_shape)["params"])
    assert mapped == full_size_shapes("wmt_glu_tanh", "jax")


# --- building blocks ------------------------------------------------------------------------
def test_position_table():
    """sin in the first half, cos in the second, frequency step -ln(10^4)/(d/2 - 1); the same
    table in both frameworks."""
    table = MT.position_table(256, 1024)
    np.testing.assert_array_equal(table, MJ.position_table(256, 1024))
    assert table.shape == (256, 1024) and table.dtype == np.float32
    position, i = 37, 100
    frequency = math.exp(-i * math.log(10_000.0) / 511)
    assert table[position, i] == pytest.approx(math.sin(position * frequency), abs=1e-7)
    assert table[position, 512 + i] == pytest.approx(math.cos(position * frequency), abs=1e-7)
    np.testing.assert_array_equal(table[0, :512], 0.0)
    np.testing.assert_array_equal(table[0, 512:], 1.0)


def test_shift_right_restarts_every_segment():
    targets = np.array([[5, 6, 2, 7, 2, 8, 9, 2, 0, 0]], np.int32)
    segments = np.array([[1, 1, 1, 2, 2, 3, 3, 3, 0, 0]], np.int32)
    expected = [[0, 5, 6, 0, 7, 0, 8, 9, 0, 0]]
    torch_shifted = MT.shift_right(torch.from_numpy(targets), torch.from_numpy(segments))
    assert torch_shifted.tolist() == expected
    assert np.asarray(MJ.shift_right(targets, segments)).tolist() == expected
    assert MT.shift_right(torch.from_numpy(targets)).tolist() == [[0, 5, 6, 2, 7, 2, 8, 9, 2, 0]]


def test_real_tokens_count_an_unknown_id_inside_a_sentence():
    """Validity is 'at or before the row's last non-zero id' (the pipeline's weights count an
    id 0 inside a sentence as a real token), not `id > 0` (upstream's)."""
    tokens = np.array([[5, 0, 6, 2, 0, 0], [0, 0, 0, 0, 0, 0], [3, 4, 5, 6, 7, 2]], np.int32)
    expected = [[True] * 4 + [False] * 2, [False] * 6, [True] * 6]
    assert MT.real_tokens(torch.from_numpy(tokens)).tolist() == expected
    assert np.asarray(MJ.real_tokens(tokens)).tolist() == expected


def test_a_packed_row_gives_each_pair_its_logits_alone():
    """Segment masks, given positions and the segment-aware shift: the logits of every pair of
    a packed row equal those of the pair alone in a padded row (no packing keys)."""
    model = torch_model("wmt")
    pairs = sentence_pairs(1, [(5, 7), (9, 3), (2, 6)])
    packed = testing.pack_rows([pairs])
    packed_logits = torch_logits(model, packed)[0]
    alone = torch_logits(model, testing.padded_rows(pairs))
    start = 0
    for row, (_, target) in enumerate(pairs):
        span = slice(start, start + len(target))
        np.testing.assert_allclose(
            packed_logits[span], alone[row, : len(target)], rtol=0, atol=2e-5
        )
        start = span.stop
    # Without the segment ids the pairs would see each other: the check above has teeth.
    mixed = torch_logits(model, packed, keys=("inputs", "targets", "inputs_position"))[0]
    assert np.abs(mixed[3:7] - alone[1, :4]).max() > 1e-2


def test_padding_rows_and_positions_stay_finite_with_finite_gradients():
    """A row of padding only (every key hidden: attention over all keys uniformly, as
    jax.nn.dot_product_attention does) gives finite logits and gradients."""
    torch.manual_seed(0)
    model = MT.Transformer(**testing.TINY).train()
    batch = testing.random_packs(None, 3, 0)  # the last row is padding
    arguments = [torch.from_numpy(batch[k]) for k in KEYS]
    logits = model(*arguments, dropout_rate=0.1)
    losses = MT.token_cross_entropy(
        arguments[1], logits, torch.from_numpy(batch["weights"]), label_smoothing=0.1
    )
    (losses["summed"] / losses["n_valid_examples"]).backward()
    assert torch.isfinite(logits).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


# --- loss -----------------------------------------------------------------------------------
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.35])
def test_loss_is_label_smoothed_cross_entropy_over_real_tokens(smoothing):
    rng = np.random.default_rng(0)
    logits = (3 * rng.normal(size=(3, 5, 11))).astype(np.float32)
    labels = rng.integers(0, 11, (3, 5)).astype(np.int32)
    weights = (rng.random((3, 5)) < 0.7).astype(np.float32)
    reference = F.cross_entropy(
        torch.from_numpy(logits).permute(0, 2, 1),
        torch.from_numpy(labels).long(),
        reduction="none",
        label_smoothing=smoothing,
    ).numpy()
    soft = optax.smooth_labels(jax.nn.one_hot(labels, 11), smoothing)
    optax_reference = np.asarray(optax.softmax_cross_entropy(logits, soft))
    np.testing.assert_allclose(reference, optax_reference, rtol=1e-5, atol=1e-6)
    for out in (
        MT.token_cross_entropy(
            torch.from_numpy(labels), torch.from_numpy(logits), torch.from_numpy(weights),
            torch.tensor(smoothing),
        ),
        MJ.token_cross_entropy(labels, logits, weights, jnp.float32(smoothing)),
    ):  # fmt: skip
        out = {key: np.asarray(value) for key, value in out.items()}
        np.testing.assert_allclose(out["per_example"], reference * weights, rtol=1e-5, atol=1e-6)
        assert out["summed"] == pytest.approx((reference * weights).sum(), rel=1e-5)
        assert out["n_valid_examples"] == weights.sum()


def test_eval_outputs_in_both_frameworks():
    """Sums over real target tokens (unsmoothed loss, argmax hits, count) and real rows; the
    padding row adds nothing."""
    rng = np.random.default_rng(1)
    batch = testing.padded_rows(sentence_pairs(2, [(3, 4), (5, 6), (2, 2)]) + [])
    batch = {k: np.concatenate([v, np.zeros_like(v[:1])]) for k, v in batch.items()}
    logits = rng.normal(size=(*batch["targets"].shape, testing.VOCAB_SIZE)).astype(np.float32)
    logits[0, 1, batch["targets"][0, 1]] = 50.0  # one sure hit
    weights = batch["weights"]
    per_token = F.cross_entropy(
        torch.from_numpy(logits).permute(0, 2, 1),
        torch.from_numpy(batch["targets"]).long(),
        reduction="none",
    ).numpy()
    hits = (logits.argmax(-1) == batch["targets"]) * weights
    torch_out = MT.wmt_eval_outputs(torch.from_numpy(logits), parity_batch(batch, torch))
    jax_out = MJ.wmt_eval_outputs(jnp.asarray(logits), parity_batch(batch, jnp))
    for out in (torch_out, jax_out):
        out = {key: np.asarray(value) for key, value in out.items()}
        assert out["loss_sum"] == pytest.approx((per_token * weights).sum(), rel=1e-5)
        assert out["correct"] == hits.sum() >= 1
        assert out["token_count"] == weights.sum() == 4 + 6 + 2
        assert out["num_examples"] == 3
        assert out["valid"].tolist() == [1, 1, 1, 0]


def parity_batch(batch: dict, module) -> dict:
    convert = torch.from_numpy if module is torch else jnp.asarray
    return {key: convert(value) for key, value in batch.items()}


# --- init -----------------------------------------------------------------------------------
INIT_KWARGS = {"vocab_size": 2_000, "emb_dim": 128, "num_heads": 4, "mlp_dim": 192, "num_layers": 1}


def _init_statistics(params: dict[str, np.ndarray], dim: int, mlp_dim: int) -> None:
    """Embedding N(0, 1); each d x d block of the fused projections and every other projection
    xavier-uniform; FFN biases N(0, 1e-6); norms 1 and 0."""
    for key, value in params.items():
        leaf = key.rsplit("/", 1)[-1]
        if "embed" in key:
            assert abs(value.std() - 1.0) < 0.01 and abs(value.mean()) < 0.01, key
        elif "norm" in key:
            np.testing.assert_array_equal(value, 1.0 if leaf in ("scale", "weight") else 0.0)
        elif leaf == "bias":
            assert 0 < value.std() < 3e-6, key
        else:  # [in, out] kernels
            fan_in, fan_out = value.shape
            parts = fan_out // dim if ("in_proj" in key or "kv_proj" in key) else 1
            for block in np.split(value, parts, axis=1):
                bound = math.sqrt(6.0 / (block.shape[0] + block.shape[1]))
                assert np.abs(block).max() <= bound, key
                assert abs(block.std() - bound / math.sqrt(3)) < 0.05 * bound, key
    assert {v.shape for k, v in params.items() if k.endswith("linear1/kernel")} == {(dim, mlp_dim)}


def test_init_statistics_in_both_frameworks():
    torch.manual_seed(0)
    model = MT.Transformer(**INIT_KWARGS)
    torch_params = parity.flatten(flax_variables(model)["params"])
    _init_statistics(torch_params, 128, 192)
    variables = jax.jit(functools.partial(MJ.Transformer(**INIT_KWARGS).init, train=False))(
        {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)},
        jnp.ones((1, 8), jnp.int32),
        jnp.ones((1, 8), jnp.int32),
    )
    jax_params = {k: np.asarray(v) for k, v in parity.flatten(variables["params"]).items()}
    assert set(jax_params) == set(torch_params)
    _init_statistics(jax_params, 128, 192)


# --- dropout --------------------------------------------------------------------------------
def test_attention_probabilities_are_dropped_in_both_frameworks():
    """The attention probabilities see the one dropout rate in TRAIN mode in both frameworks
    (upstream's JAX had none): with every other dropout out of the way, two TRAIN draws differ
    and EVAL mode ignores the rate."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 32)).astype(np.float32)
    mask = np.ones((2, 1, 6, 6), bool)
    torch.manual_seed(0)
    attention = MT.SelfAttention(32, 4, 1.0)
    bias = torch.zeros(2, 1, 6, 6)
    with torch.no_grad():
        attention.train()
        draws = [attention(torch.from_numpy(x), bias, 0.5).numpy() for _ in range(2)]
        attention.eval()
        eval_out = attention(torch.from_numpy(x), bias, 0.5).numpy()
        np.testing.assert_array_equal(eval_out, attention(torch.from_numpy(x), bias, 0.0).numpy())
    assert np.abs(draws[0] - draws[1]).max() > 1e-2

    module = MJ.SelfAttention(32, 4, 1.0)
    params = module.init(jax.random.PRNGKey(0), x, mask, False, 0.0)

    @functools.partial(jax.jit, static_argnums=0)
    def run(train, rate, seed):
        rngs = {"dropout": jax.random.PRNGKey(seed)}
        return module.apply(params, x, mask, train, rate, rngs=rngs)

    assert np.abs(run(True, 0.5, 1) - run(True, 0.5, 2)).max() > 1e-2
    np.testing.assert_array_equal(run(False, 0.5, 1), run(False, 0.0, 1))
    # The written-out TRAIN path at a (traced) rate 0 is jax.nn.dot_product_attention's.
    np.testing.assert_allclose(run(True, 0.0, 1), run(False, 0.0, 1), atol=1e-6)


# --- parity PyTorch <-> JAX with copied weights ---------------------------------------------
PARITY_SMOOTHING = 0.1


def torch_parity_run(name: str, batch: dict) -> dict:
    """Encoder output, EVAL and TRAIN (rate 0) logits, the smoothed loss and its gradients in
    flax layout, from the tiny randomised torch model."""
    model = MT.Transformer(**tiny_kwargs(name))
    model.load_state_dict(torch_model(name).state_dict())
    arguments = [torch.from_numpy(batch[k]) for k in KEYS]
    out = {"variables": flax_variables(model)}
    model.eval()
    with torch.no_grad():
        out["encoded"] = model.encode(arguments[0], arguments[2], arguments[4]).numpy()
        out["eval_logits"] = model(*arguments).numpy()
    model.train()
    logits = model(*arguments, dropout_rate=0.0)
    losses = MT.token_cross_entropy(
        arguments[1], logits, torch.from_numpy(batch["weights"]), PARITY_SMOOTHING
    )
    loss = losses["summed"] / losses["n_valid_examples"]
    loss.backward()
    out["train_logits"], out["loss"] = logits.detach().numpy(), loss.item()
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(param.grad)
    out["grads"] = parity.flatten(flax_variables(model)["params"])
    return out


@functools.cache
def jax_parity_program(name: str):
    model = MJ.Transformer(**tiny_kwargs(name))

    def run(params, batch, rng):
        arguments = [batch[k] for k in KEYS]
        encoded = model.apply({"params": params}, *arguments[:1], arguments[2], arguments[4],
                              method=MJ.Transformer.encode)  # fmt: skip
        eval_logits = model.apply({"params": params}, *arguments)

        def loss_of(params):
            logits = model.apply(
                {"params": params}, *arguments, train=True, dropout_rate=0.0 * rng[0],
                rngs={"dropout": rng},
            )  # fmt: skip
            losses = MJ.token_cross_entropy(
                batch["targets"], logits, batch["weights"], PARITY_SMOOTHING
            )
            return losses["summed"] / losses["n_valid_examples"], logits

        (loss, train_logits), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
        return {
            "encoded": encoded, "eval_logits": eval_logits, "train_logits": train_logits,
            "loss": loss, "grads": grads,
        }  # fmt: skip

    return jax.jit(run, compiler_options=parity.FAST_COMPILE)


@functools.cache
def parity_run(name: str) -> tuple[dict, dict]:
    batch = testing.random_packs(None, 4, 3)
    torch_out = torch_parity_run(name, batch)
    with jax.default_matmul_precision("highest"):
        jax_out = jax_parity_program(name)(
            torch_out["variables"]["params"], batch, jax.random.PRNGKey(0)
        )
    jax_out = jax.device_get(jax_out)
    jax_out["grads"] = parity.flatten(jax_out["grads"])
    return torch_out, jax_out


def relative_diff(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(a).max())


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_parity_encoder_forward_loss_and_gradients(name):
    """Copied weights, packed rows (3, 2 and 1 pairs and a padding row): the encoder output
    and the EVAL and TRAIN logits agree to 1e-5 relative, the loss to 1e-5 and every
    gradient to 1e-4 of its tensor's largest. Measured on a 2-core x86 CPU over the four
    variants: outputs <= 6.6e-7 relative, loss <= 9.5e-7, gradients <= 5.1e-6 relative (float32
    rounding in other orders; a wrong mask, shift, position, scale or weight map is O(1))."""
    torch_out, jax_out = parity_run(name)
    for key in ("encoded", "eval_logits", "train_logits"):
        assert np.abs(torch_out[key]).max() > 0.5, key
        assert relative_diff(torch_out[key], jax_out[key]) < 1e-5, key
    assert abs(torch_out["loss"] - float(jax_out["loss"])) < 1e-5
    assert set(torch_out["grads"]) == set(jax_out["grads"])
    for key, grad in torch_out["grads"].items():
        assert np.abs(grad).max() > 0, key
        assert relative_diff(grad, jax_out["grads"][key]) < 1e-4, key


# --- the decoder step with a key/value cache ------------------------------------------------
DECODE_PAIRS = [(5, 7), (9, 3), (2, 10)]
BEAMS = 2


def teacher_forced_steps(step, cache, context, targets: np.ndarray, to_array) -> np.ndarray:
    """Log-probabilities [N, L, V] of driving `step` with the targets shifted right, each
    source's row repeated for BEAMS beams."""
    rows = np.repeat(targets, BEAMS, axis=0)
    previous = np.zeros(len(rows), np.int32)
    found = []
    for t in range(rows.shape[1]):
        log_probs, cache = step(to_array(previous), cache, to_array(np.int32(t)), context)
        found.append(np.asarray(log_probs))
        previous = rows[:, t]
    return np.stack(found, axis=1)


def assert_steps_match(steps: np.ndarray, reference: np.ndarray, weights: np.ndarray) -> None:
    real = weights > 0
    for beam in range(BEAMS):
        diff = np.abs(steps[beam::BEAMS] - reference)[real].max()
        # Measured <= 1.9e-6 (log-probabilities down to about -8).
        assert diff < 1e-5, f"beam {beam}: {diff:.2e}"


@pytest.mark.parametrize("name", ["wmt", "wmt_post_ln"])
def test_torch_decoder_step_equals_the_uncached_forward(name):
    """Step t of the cached decoder (beams of a source attending to its unrepeated encoder
    keys and values) gives the log-probabilities the teacher-forced forward gives at t, on
    every real target position."""
    model = torch_model(name)
    batch = testing.padded_rows(sentence_pairs(4, DECODE_PAIRS))
    reference = torch.from_numpy(torch_logits(model, batch)).log_softmax(-1).numpy()
    with torch.no_grad():
        context = model.decode_context(torch.from_numpy(batch["inputs"]))
        cache = model.init_cache(len(DECODE_PAIRS) * BEAMS, testing.LENGTH)
        steps = teacher_forced_steps(
            model.decode_step, cache, context, batch["targets"], lambda a: torch.tensor(a)
        )
    assert_steps_match(steps, reference, batch["weights"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["wmt", "wmt_post_ln"])
def test_jax_decoder_step_equals_the_uncached_forward(name):
    model, variables = MJ.Transformer(**tiny_kwargs(name)), flax_variables(torch_model(name))
    batch = testing.padded_rows(sentence_pairs(4, DECODE_PAIRS))
    logits = model.apply(variables, batch["inputs"], batch["targets"])
    reference = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    context = model.apply(variables, batch["inputs"], method=MJ.Transformer.decode_context)
    rows = len(DECODE_PAIRS) * BEAMS
    cache = model.apply(variables, rows, testing.LENGTH, method=MJ.Transformer.init_cache)

    @jax.jit
    def step(tokens, cache, t, context):
        return model.apply(variables, tokens, cache, t, context, method=MJ.Transformer.decode_step)

    steps = teacher_forced_steps(step, cache, context, batch["targets"], jnp.asarray)
    assert_steps_match(steps, reference, batch["weights"])


def sequence_score(log_probs: np.ndarray, tokens: np.ndarray) -> float:
    """A sequence's search score from teacher-forced log-probabilities [L, V]: its tokens' sum
    up to and including EOS (all of them without one) over the length penalty."""
    from algoperf.workloads.wmt.decode import EOS_ID, length_penalty

    ends = np.flatnonzero(tokens == EOS_ID)
    length = ends[0] + 1 if ends.size else len(tokens)
    total = log_probs[np.arange(length), tokens[:length]].sum()
    return float(total / length_penalty(length))


def test_torch_beam_search_scores_are_the_forward_scores():
    """The beams the search returns score, under the uncached teacher-forced forward, what the
    search says they score (the cache, positions and masks of decoding are the forward's)."""
    model = torch_model("wmt")
    batch = testing.padded_rows(sentence_pairs(5, DECODE_PAIRS))
    found = MT.translate(model, torch.from_numpy(batch["inputs"]))
    tokens, scores = found.tokens.numpy(), found.scores.numpy()
    assert tokens.shape == (len(DECODE_PAIRS), 4, testing.LENGTH)
    for row in range(len(DECODE_PAIRS)):
        for beam in range(4):
            targets = {"inputs": batch["inputs"][row : row + 1], "targets": tokens[row, beam][None]}
            targets["targets"] = targets["targets"].astype(np.int32)
            log_probs = torch.from_numpy(torch_logits(model, targets)).log_softmax(-1)[0].numpy()
            assert sequence_score(log_probs, tokens[row, beam]) == pytest.approx(
                scores[row, beam], abs=1e-4
            )


@pytest.mark.slow
def test_beam_search_finds_the_same_translations_in_both_frameworks():
    model = torch_model("wmt")
    batch = testing.padded_rows(sentence_pairs(5, DECODE_PAIRS))
    torch_found = MT.translate(model, torch.from_numpy(batch["inputs"]))
    jax_model = MJ.Transformer(**tiny_kwargs("wmt"))
    params = flax_variables(model)["params"]
    jax_found = jax.jit(functools.partial(MJ.translate, jax_model))(params, batch["inputs"])
    np.testing.assert_array_equal(np.asarray(jax_found.tokens), torch_found.tokens.numpy())
    np.testing.assert_allclose(np.asarray(jax_found.scores), torch_found.scores.numpy(), atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_torch_forward_backward_every_variant(name):
    """TRAIN mode with dropout on packed rows: finite logits, a gradient on every tensor."""
    torch.manual_seed(0)
    model = MT.Transformer(**tiny_kwargs(name)).train()
    batch = testing.random_packs(None, 4, 1)
    arguments = [torch.from_numpy(batch[k]) for k in KEYS]
    logits = model(*arguments, dropout_rate=0.1)
    assert logits.shape == (4, testing.LENGTH, testing.VOCAB_SIZE)
    losses = MT.token_cross_entropy(arguments[1], logits, torch.from_numpy(batch["weights"]), 0.1)
    (losses["summed"] / losses["n_valid_examples"]).backward()
    for key, param in model.named_parameters():
        assert torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, key


def test_torch_translations_do_not_depend_on_the_cache_growing(monkeypatch):
    """Rows of 48 positions: a cache started at 32 positions and doubled by the search (to 48)
    finds what a 48-position cache finds; a padding source changes nothing for the others."""
    model = torch_model("wmt")
    batch = testing.padded_rows(sentence_pairs(6, DECODE_PAIRS), length=48)
    inputs = torch.from_numpy(batch["inputs"])
    grown = MT.translate(model, inputs)
    assert grown.steps > MT.INITIAL_CACHE_LEN  # the search did grow the cache
    monkeypatch.setattr(MT, "INITIAL_CACHE_LEN", 48)
    whole = MT.translate(model, inputs)
    torch.testing.assert_close(grown.tokens, whole.tokens, rtol=0, atol=0)
    torch.testing.assert_close(grown.scores, whole.scores, rtol=0, atol=0)
    padded = torch.cat([inputs, torch.zeros_like(inputs[:1])])
    valid = torch.tensor([True] * len(DECODE_PAIRS) + [False])
    with_padding = MT.translate(model, padded, valid)
    torch.testing.assert_close(with_padding.tokens[:-1], grown.tokens, rtol=0, atol=0)


@pytest.mark.slow
def test_torch_compiled_search_finds_the_eager_translations():
    """The decoder step traces whole (beam_search(compile=True) compiles with fullgraph)."""
    model = torch_model("wmt")
    inputs = torch.from_numpy(testing.padded_rows(sentence_pairs(5, DECODE_PAIRS))["inputs"])
    eager = MT.translate(model, inputs)
    compiled = MT.translate(model, inputs, compile=True)
    torch.testing.assert_close(compiled.tokens, eager.tokens, rtol=0, atol=0)
    torch.testing.assert_close(compiled.scores, eager.scores, rtol=1e-5, atol=1e-5)
