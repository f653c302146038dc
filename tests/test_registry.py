"""The workload registry against the spec: names, targets, budgets (docs/workloads.md)."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the repository may not be pip-installed
    sys.path.insert(0, str(ROOT))

from algoperf import workloads  # noqa: E402

BASES_V06 = (
    "criteo1tb",
    "fastmri",
    "imagenet_resnet",
    "imagenet_vit",
    "librispeech_conformer",
    "librispeech_deepspeech",
    "ogbg",
    "wmt",
)
BASES_V10 = (*BASES_V06, "finewebedu_lm")

# docs/workloads.md, "Variants": (val, test) per variant.
VARIANT_TARGETS = {
    "criteo1tb_layernorm": (0.123757, 0.126152),
    "criteo1tb_resnet": (0.12415, 0.12648),
    "criteo1tb_embed_init": (0.129657, 0.131967),
    "fastmri_model_size": (0.723559, 0.740726),
    "fastmri_tanh": (0.717840, 0.734505),
    "fastmri_layernorm": (0.723284, 0.739996),
    "imagenet_resnet_silu": (0.75445, 0.6323),
    "imagenet_resnet_gelu": (0.76765, 0.6519),
    "imagenet_resnet_large_bn_init": (0.76526, 0.6423),
    "imagenet_vit_glu": (0.75738, 0.6359),
    "imagenet_vit_post_ln": (0.75312, 0.6286),
    "imagenet_vit_map": (0.77113, 0.6523),
    "librispeech_conformer_attention_temperature": (0.109977, 0.068065),
    "librispeech_conformer_layernorm": (0.09731, 0.05996),
    "librispeech_conformer_gelu": (0.094114, 0.056629),
    "librispeech_deepspeech_tanh": (0.150883, 0.098613),
    "librispeech_deepspeech_no_resnet": (0.131564, 0.079297),
    "librispeech_deepspeech_norm_and_spec_aug": (0.14342, 0.090976),
    "ogbg_gelu": (0.27771, 0.262926),
    "ogbg_silu": (0.282178, 0.272144),
    "ogbg_model_size": (0.269446, 0.253051),
    "wmt_post_ln": (30.0779, 29.8982),
    "wmt_attention_temp": (29.3379, 29.4143),  # not upstream PyTorch's typo 229.4143
    "wmt_glu_tanh": (29.5779, 29.0515),
}

# docs/workloads.md, "Base workloads": (val, test) per base workload.
BASE_TARGETS = {
    "mnist": (0.97, 0.97),
    "cifar": (0.85, 0.85),
    "criteo1tb": (0.123735, 0.126041),
    "fastmri": (0.723653, 0.740633),
    "imagenet_resnet": (0.77431, 0.6560),
    "imagenet_vit": (0.77309, 0.6519),
    "librispeech_conformer": (0.085884, 0.052981),
    "librispeech_deepspeech": (0.119936, 0.074143),
    "finewebedu_lm": (22.2995, None),
    "ogbg": (0.28098, 0.268729),
    "wmt": (30.8491, 30.7219),
}

ALL_NAMES = {
    # development workloads
    "mnist",
    "cifar",
    "criteo1tb_test",
    # the 8 v0.5/v0.6 bases and the v1.0 addition
    "criteo1tb",
    "fastmri",
    "imagenet_resnet",
    "imagenet_vit",
    "librispeech_conformer",
    "librispeech_deepspeech",
    "ogbg",
    "wmt",
    "finewebedu_lm",
    # variants
    "criteo1tb_layernorm",
    "criteo1tb_resnet",
    "criteo1tb_embed_init",
    "fastmri_model_size",
    "fastmri_tanh",
    "fastmri_layernorm",
    "imagenet_resnet_silu",
    "imagenet_resnet_gelu",
    "imagenet_resnet_large_bn_init",
    "imagenet_vit_glu",
    "imagenet_vit_post_ln",
    "imagenet_vit_map",
    "librispeech_conformer_attention_temperature",
    "librispeech_conformer_layernorm",
    "librispeech_conformer_gelu",
    "librispeech_deepspeech_tanh",
    "librispeech_deepspeech_no_resnet",
    "librispeech_deepspeech_norm_and_spec_aug",
    "ogbg_gelu",
    "ogbg_silu",
    "ogbg_model_size",
    "wmt_post_ln",
    "wmt_attention_temp",
    "wmt_glu_tanh",
}

# v0.5 held-out variants and their validation targets (docs/rules.md, "Held-out workloads (v0.5)").
HELD_OUT_V05 = {
    "librispeech_conformer_layernorm": 0.09731,
    "imagenet_resnet_large_bn_init": 0.76526,
    "ogbg_model_size": 0.269446,
    "wmt_glu_tanh": 29.5779,
    "fastmri_tanh": 0.717840,
    "criteo1tb_embed_init": 0.129657,
}


def test_names_are_exactly_upstreams():
    assert len(ALL_NAMES) == 36  # 11 workloads (8 + LM + 2 dev) + 25 variant rows incl. test
    names = workloads.names()
    assert len(names) == len(set(names)), "duplicate registry names"
    assert set(names) == ALL_NAMES


@pytest.mark.parametrize("name", sorted(VARIANT_TARGETS))
def test_variant_targets(name):
    spec = workloads.get_spec(name)
    val, test = VARIANT_TARGETS[name]
    assert spec.name == name
    assert spec.validation_target == val
    assert spec.test_target == test


@pytest.mark.parametrize("name", sorted(BASE_TARGETS))
def test_base_targets(name):
    spec = workloads.get_spec(name)
    val, test = BASE_TARGETS[name]
    assert spec.name == spec.base == name
    assert spec.validation_target == val
    assert spec.test_target == test


def test_criteo1tb_test_reuses_base_targets():
    spec = workloads.get_spec("criteo1tb_test")
    base = workloads.get_spec("criteo1tb")
    assert (spec.validation_target, spec.test_target) == (base.validation_target, base.test_target)
    assert spec.model_kwargs["vocab_size"] == 65_536
    assert base.model_kwargs["vocab_size"] == 4_194_304


def _budget_sum(version, bases):
    return sum(workloads.get_spec(n).budget(version).max_allowed_runtime_sec for n in bases)


def test_budget_sums():
    assert _budget_sum("v0.5", BASES_V06) == 340_292
    assert _budget_sum("v0.6", BASES_V06) == 305_827
    assert _budget_sum("v1.0", BASES_V10) == 265_883
    assert _budget_sum("v1.0", BASES_V06) == 233_916


def test_scored_workloads_match_budgets():
    assert set(workloads.SCORED_WORKLOADS["v0.5"]) == set(BASES_V06)
    assert set(workloads.SCORED_WORKLOADS["v0.6"]) == set(BASES_V06)
    assert set(workloads.SCORED_WORKLOADS["v1.0"]) == set(BASES_V10)
    for version, bases in workloads.SCORED_WORKLOADS.items():
        for base in bases:
            workloads.get_spec(base).budget(version)  # raises if missing


def test_finewebedu_lm_only_in_v1():
    spec = workloads.get_spec("finewebedu_lm")
    assert set(spec.budgets) == {"v1.0"}
    assert spec.num_test_examples is None
    assert spec.test_target is None
    assert not spec.higher_is_better


def test_variants_keep_base_budgets_and_facts():
    for name in workloads.names():
        spec = workloads.get_spec(name)
        if spec.base == name:
            continue
        base = workloads.get_spec(spec.base)
        assert name in base.variants
        assert dict(spec.budgets) == dict(base.budgets)
        assert spec.dataset == base.dataset
        assert spec.target_metric_name == base.target_metric_name
        assert spec.loss_type == base.loss_type
        assert spec.num_train_examples == base.num_train_examples
        assert set(base.model_kwargs) <= set(spec.model_kwargs)
        expected_batch = 128 if name == "librispeech_deepspeech_norm_and_spec_aug" else None
        assert spec.eval_batch_size == (expected_batch or base.eval_batch_size)


def test_variant_overrides_only_known_model_kwargs():
    # A variant may only override keys its base declares (a typo would be silently ignored).
    for name in workloads.names():
        base_name = workloads.base_name(name)
        if base_name == name:
            continue
        variant = workloads._table()[name][1]
        unknown = set(variant.model_kwargs) - set(workloads.get_spec(base_name).model_kwargs)
        assert not unknown, f"{name} overrides undeclared model kwargs {unknown}"


def test_every_base_has_a_budget_per_version():
    for base in BASES_V06:
        assert set(workloads.get_spec(base).budgets) == {"v0.5", "v0.6", "v1.0"}


def test_load_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as info:
        workloads.load("nonexistent", "pytorch")
    message = str(info.value)
    assert "nonexistent" in message
    for name in ("mnist", "criteo1tb_test", "finewebedu_lm", "wmt_glu_tanh"):
        assert name in message


def test_load_lm_in_v05_raises():
    with pytest.raises(ValueError, match="v0.5"):
        workloads.load("finewebedu_lm", "pytorch", benchmark_version="v0.5")


def test_held_out_v05_variants():
    held_out = workloads.HELD_OUT_WORKLOADS["v0.5"]
    assert set(held_out) == set(HELD_OUT_V05)
    registered = set(workloads.names())
    for name in held_out:
        assert name in registered
        spec = workloads.get_spec(name)
        assert spec.base != name
        assert spec.base in name  # each held-out variant belongs to the base it names
        assert spec.validation_target == HELD_OUT_V05[name]
        assert spec.validation_target == VARIANT_TARGETS[name][0]
        assert spec.test_target == VARIANT_TARGETS[name][1]
    assert workloads.HELD_OUT_WORKLOADS["v0.6"] == ()
    assert workloads.HELD_OUT_WORKLOADS["v1.0"] == ()


def test_compile_lists_v1():
    # v1.0's compile lists (docs/workloads.md, compile policy).
    # v1.0's, plus ogbg: its packed batches have static shapes, so it compiles once (upstream
    # left it eager); and finewebedu_lm's loss: the per-token loss over [B, T, vocab] logits fuses
    # (479 vs 1,326 ms forward + backward on the CPU, workloads/finewebedu_lm/__init__.py).
    compiled_model = {"fastmri", "imagenet_resnet", "imagenet_vit", "wmt", "finewebedu_lm", "ogbg"}
    compiled_loss = {
        "fastmri", "librispeech_deepspeech", "ogbg", "wmt", "imagenet_vit", "finewebedu_lm",
    }  # fmt: skip
    for base in BASES_V10:
        spec = workloads.get_spec(base)
        assert spec.compile_model == (base in compiled_model), base
        assert spec.compile_loss == (base in compiled_loss), base


def test_listing_specs_imports_no_framework():
    code = (
        "import sys\nfrom algoperf import workloads\n"
        "for n in workloads.names():\n"
        "    workloads.get_spec(n)\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'jax' not in sys.modules, 'jax imported'\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
