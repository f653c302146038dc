"""wmt's declarations for the registry suite (tests/test_workload_registry.py): a two-layer
Transformer of width 32 with the fixture's 256-piece vocabulary, and batches of packed rows as
the train pipeline packs them (several sentence pairs per row with their positions and segment
ids, a row with one pair, a padding row), so a wrong mask, shift or position shows.
"""

from __future__ import annotations

import functools

import numpy as np

from algoperf.spec import ParameterType as T
from algoperf.workloads import parity
from algoperf.workloads.wmt import fixture

VOCAB_SIZE = fixture.TOKENIZER_VOCAB
"""The fixture's tiny SentencePiece vocabulary (256 pieces)."""
LENGTH = 24
"""Positions of the test batches' rows (the real rows have 256, the fixture's 64)."""
TINY = {
    "vocab_size": VOCAB_SIZE,
    "emb_dim": 32,
    "num_heads": 4,
    "mlp_dim": 48,
    "num_layers": 2,
}
"""Every module of the full-size model, narrow: two encoder and two decoder layers, 4 heads of
8, an FFN wider than the model (so a transposed FFN weight shows), the fixture's vocabulary."""
EOS_ID = 2


def random_sentence(rng: np.random.Generator, length: int) -> np.ndarray:
    """`length` token ids: length - 1 ids in [3, VOCAB_SIZE) and EOS."""
    return np.append(rng.integers(3, VOCAB_SIZE, length - 1), EOS_ID).astype(np.int32)


def pack_rows(rows: list[list[tuple[np.ndarray, np.ndarray]]], length: int = LENGTH) -> dict:
    """The train batch format (docs/data.md, "wmt"): each row holds its (source, target)
    pairs one after the other, segment ids 1, 2, ... (0 on padding), positions counting from 0
    in every pair; `weights` 1 on real target tokens."""
    batch = {
        key: np.zeros((len(rows), length), np.int32)
        for key in (
            "inputs",
            "targets",
            "inputs_position",
            "targets_position",
            "inputs_segmentation",
            "targets_segmentation",
        )
    }
    for row, pairs in enumerate(rows):
        starts = {"inputs": 0, "targets": 0}
        for segment, pair in enumerate(pairs, start=1):
            for side, tokens in zip(("inputs", "targets"), pair):
                span = slice(starts[side], starts[side] + len(tokens))
                batch[side][row, span] = tokens
                batch[f"{side}_position"][row, span] = np.arange(len(tokens))
                batch[f"{side}_segmentation"][row, span] = segment
                starts[side] = span.stop
        assert max(starts.values()) <= length, "pairs longer than the row"
    batch["weights"] = (batch["targets"] > 0).astype(np.float32)
    return batch


def random_packs(workload, batch_size: int, seed: int) -> dict:
    """`batch_size` packed rows: 3, 2 or 1 pairs (of 2 to 7 tokens a side) in turn, and a
    padding row last."""
    del workload  # the same numpy batch in both frameworks
    rng = np.random.default_rng(seed)
    rows = []
    for row in range(batch_size - 1):
        count = 3 - row % 3
        rows.append(
            [
                (random_sentence(rng, rng.integers(2, 8)), random_sentence(rng, rng.integers(2, 8)))
                for _ in range(count)
            ]
        )
    rows.append([])
    return pack_rows(rows)


def padded_rows(pairs: list[tuple[np.ndarray, np.ndarray]], length: int = LENGTH) -> dict:
    """The eval batch format: one pair per row, zero-padded, no positions or segment ids."""
    batch = {side: np.zeros((len(pairs), length), np.int32) for side in ("inputs", "targets")}
    for row, pair in enumerate(pairs):
        for side, tokens in zip(("inputs", "targets"), pair):
            batch[side][row, : len(tokens)] = tokens
    batch["weights"] = (batch["targets"] > 0).astype(np.float32)
    return batch


def embedding_rule(module) -> parity.Leaves | None:
    """nn.Embedding weight -> flax Embed `embedding` (same [vocab, d] layout)."""
    from torch import nn

    if isinstance(module, nn.Embedding):
        return {"params": {"embedding": module.weight}}
    return None


def randomize_(model, seed: int = 0) -> None:
    """Non-trivial LayerNorm scales and biases and FFN biases (init: 1, 0 and ~1e-6), so the
    parity checks prove their mapping too."""
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.weight.add_(0.2 * torch.randn(module.weight.shape, generator=generator))
            if isinstance(module, nn.LayerNorm) or (
                isinstance(module, nn.Linear) and module.bias is not None
            ):
                module.bias.add_(0.1 * torch.randn(module.bias.shape, generator=generator))


TESTS = parity.ModelTests(
    model_kwargs=TINY,
    workload_options=fixture.PIPELINE_OPTIONS,
    batch_size=4,  # packed rows of 3, 2 and 1 pairs and a padding row
    output_shape=(LENGTH, VOCAB_SIZE),
    # Full-size base (upstream's PyTorch categories: q/k/v fused in self-attention, k/v in
    # cross-attention; one shared embedding, also the output layer).
    param_types={
        T.EMBEDDING: 1,
        T.ATTENTION_QKV: 12,
        T.ATTENTION_Q: 6,
        T.ATTENTION_KV: 6,
        T.ATTENTION_OUT: 18,
        T.WEIGHT: 24,
        T.BIAS: 24,
        T.LAYER_NORM_SCALE: 32,
        T.LAYER_NORM_BIAS: 32,
    },
    has_dropout=True,
    output_params=("shared_embedding.weight",),
    randomize=randomize_,
    torch_to_flax=functools.partial(parity.torch_to_flax, rules=(embedding_rule,)),
    make_batch=random_packs,
    logits_rtol=1e-5,
    step_atol=1e-5,
    write_fixture=fixture.write_fixture,
    fixture_sizes={"validation": fixture.SIZES["validation"], "test": fixture.SIZES["test"]},
    cli_options=(
        f"max_len={fixture.MAX_LEN},vocab_size={VOCAB_SIZE},model_kwargs={{'vocab_size':"
        f"{VOCAB_SIZE},'emb_dim':32,'num_heads':4,'mlp_dim':48,'num_layers':2}}"
    ),
    cli_metrics=("accuracy", "bleu", "loss"),
)
