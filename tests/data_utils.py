"""Test helper: one call for a pipeline's train or eval batches (the protocol's two methods)."""

from __future__ import annotations

from algoperf.data.sharding import Shard


def batches(
    pipeline,
    dataset,
    split: str,
    global_batch_size: int,
    *,
    seed: int,
    shard: Shard | None = None,
    num_eval_train_examples: int = 0,
    start_step: int = 0,
):
    """`pipeline.train_batches` for `train`, else `pipeline.eval_batches`."""
    shard = shard or Shard()
    if split == "train":
        return pipeline.train_batches(
            dataset, global_batch_size, seed=seed, shard=shard, start_step=start_step
        )
    return pipeline.eval_batches(
        dataset, split, global_batch_size, seed=seed, shard=shard,
        num_eval_train_examples=num_eval_train_examples,
    )  # fmt: skip
