"""finewebedu_lm's declarations for the registry suite (tests/test_workload_registry.py): a
two-layer decoder (d 32, 2 heads of 16) over the fixture's tiny tokenizer (320 ids) on windows of
16 tokens, batches with a padding row, and the weight map of its RMSNorms, embedding and
attention scales; the fixture is workloads/finewebedu_lm/fixture.py's."""

from __future__ import annotations

import functools

import numpy as np

from algoperf.spec import ParameterType as T
from algoperf.workloads import parity
from algoperf.workloads.finewebedu_lm import fixture

TINY = {
    "vocab_size": fixture.TOKENIZER_VOCAB,
    "seq_len": fixture.SEQ_LEN,
    "emb_dim": 32,
    "num_heads": 2,
    "num_layers": 2,
    "mlp_dim": 48,
    "compute_dtype": "float32",
}
"""Every module of the full-size model, small. mlp_dim 48 (not 4·32) so that the GLU's two
halves and the fused q/k/v thirds have different widths: a swapped split shows as a shape error."""
SEQ_LEN = TINY["seq_len"]


def make_batch(workload, batch_size: int, seed: int, seq_len: int | None = None) -> dict:
    """A batch as the pipeline gives it (docs/data.md, "FineWeb-Edu"): windows of seq_len + 1
    random token ids below the model's vocabulary, `inputs` int32 [B, T] = window[:-1],
    `targets` int32 [B, T] = window[1:], `weights` float32 [B, T] 1 on real rows; the last row is
    padding (ids 0, weight 0) when there are several rows."""
    model_kwargs = workload.spec.model_kwargs
    seq_len = seq_len or model_kwargs["seq_len"]
    rng = np.random.default_rng(seed)
    windows = rng.integers(0, model_kwargs["vocab_size"], (batch_size, seq_len + 1), np.int32)
    weights = np.ones((batch_size, seq_len), np.float32)
    if batch_size > 1:
        windows[-1] = 0
        weights[-1] = 0.0
    return {
        "inputs": np.ascontiguousarray(windows[:, :-1]),
        "targets": np.ascontiguousarray(windows[:, 1:]),
        "weights": weights,
    }


def norms_embedding_and_scales(module) -> parity.Leaves | None:
    """RMSNorm weight -> scale, Embedding weight -> embedding, and the attention module's own
    scalar `attn_scale` (its q/k/v and out projections map generically)."""
    from torch import nn

    from algoperf.workloads.finewebedu_lm import model_torch

    if isinstance(module, nn.RMSNorm):
        return {"params": {"scale": module.weight}}
    if isinstance(module, nn.Embedding):
        return {"params": {"embedding": module.weight}}
    if isinstance(module, model_torch.Attention):
        return {"params": {"attn_scale": module.attn_scale}}
    return None


torch_to_flax = functools.partial(parity.torch_to_flax, rules=(norms_embedding_and_scales,))
"""torch decoder -> flax variables: Linear by name, plus the rules above."""


def randomize_(model, seed: int = 0) -> None:
    """Non-trivial norm scales (init 1) and attention scales (init log2(L² - L), the same in
    every layer), so the parity checks prove their mapping too."""
    import torch

    from algoperf.workloads.finewebedu_lm import model_torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.RMSNorm):
                module.weight.add_(0.2 * torch.randn(module.weight.shape, generator=generator))
            if isinstance(module, model_torch.Attention):
                module.attn_scale.mul_(0.5 + torch.rand((), generator=generator))


CLI_OPTIONS = (
    f"seq_len={SEQ_LEN},vocab_size={TINY['vocab_size']},model_kwargs={{'vocab_size':"
    f"{TINY['vocab_size']},'seq_len':{SEQ_LEN},'emb_dim':32,'num_heads':2,'num_layers':2,"
    "'mlp_dim':48}"
)
"""The CLI run's options: the tiny model over the fixture's tokenizer (compute_dtype left at
"auto": float32 on the CPU)."""

TESTS = parity.ModelTests(
    model_kwargs=TINY,
    workload_options=fixture.PIPELINE_OPTIONS,
    batch_size=4,  # 3 windows and a padding row
    output_shape=(SEQ_LEN, TINY["vocab_size"]),
    # Full size: the embedding (also the output layer), 12 x (2 norms, fused q/k/v, out, the
    # attention scale, fc1, fc2), the final norm.
    param_types={
        T.EMBEDDING: 1,
        T.LAYER_NORM_SCALE: 25,
        T.ATTENTION_QKV: 12,
        T.ATTENTION_OUT: 12,
        T.WEIGHT: 36,
    },
    output_params=("embed.weight",),
    randomize=randomize_,
    torch_to_flax=torch_to_flax,
    make_batch=make_batch,
    # Measured: see tests/test_finewebedu_lm_model.py's parity tests for the per-piece figures.
    logits_rtol=1e-5,
    step_atol=1e-5,
    write_fixture=fixture.write_fixture,
    fixture_sizes={"validation": fixture.SIZES["validation"]},
    cli_options=CLI_OPTIONS,
    cli_metrics=("loss", "ppl"),
)
