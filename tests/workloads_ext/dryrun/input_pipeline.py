"""The dry-run data: `<data_dir>/dryrun/data.npz` (features, mask, labels), held in memory; batches
nest the model inputs: {"inputs": {"features", "mask"}, "targets", "weights"}."""

import pathlib

import numpy as np

from algoperf.data.arrays import ArrayPipeline, ArraySplit

SIZES = {"train": 200, "validation": 50, "test": 30}
NUM_FEATURES, NUM_LABELS = 8, 3


def write_fixture(data_dir, seed: int = 0) -> None:
    """A learnable dataset: each label is one feature's sign, features randomly masked."""
    rng = np.random.default_rng(seed)
    count = sum(SIZES.values())
    features = rng.normal(size=(count, NUM_FEATURES)).astype(np.float32)
    mask = (rng.random((count, NUM_FEATURES)) < 0.9).astype(np.float32)
    labels = (features[:, :NUM_LABELS] > 0).astype(np.float32)
    folder = pathlib.Path(data_dir) / "dryrun"
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "data.npz", features=features, mask=mask, labels=labels)


def _nest(flat):
    inputs = {"features": flat["features"], "mask": flat["mask"]}
    return {"inputs": inputs, "targets": flat["labels"], "weights": flat["weights"]}


class Pipeline(ArrayPipeline):
    def load_splits(self, data_dir):
        path = pathlib.Path(data_dir).expanduser() / "dryrun" / "data.npz"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; write it with write_fixture(DIR).")
        with np.load(path) as data:
            arrays = {key: data[key] for key in ("features", "mask", "labels")}
        splits, start = {}, 0
        for name, size in SIZES.items():
            splits[name] = ArraySplit({k: v[start : start + size] for k, v in arrays.items()})
            start += size
        return splits

    def train_batches(self, dataset, global_batch_size, **kwargs):
        return map(_nest, super().train_batches(dataset, global_batch_size, **kwargs))

    def eval_batches(self, dataset, split, global_batch_size, **kwargs):
        return map(_nest, super().eval_batches(dataset, split, global_batch_size, **kwargs))

    def train_chunks(self, *args, **kwargs):
        return None  # batches are nested: no flat chunk fast path

    def fake_batch(self, batch_size, *, seed=0):
        rng = np.random.default_rng(seed)
        flat = {
            "features": rng.normal(size=(batch_size, NUM_FEATURES)).astype(np.float32),
            "mask": np.ones((batch_size, NUM_FEATURES), np.float32),
            "labels": rng.integers(0, 2, (batch_size, NUM_LABELS)).astype(np.float32),
            "weights": np.ones(batch_size, np.float32),
        }
        return _nest(flat)
