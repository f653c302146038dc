"""The JAX half of every Workload: flax init, forward with BN/dropout control, loss, input, eval.

A workload's `model_jax.py` subclasses `JaxWorkload` and supplies the flax module (`build_model`),
example inputs for init, and its data (`numpy_batches`, shared with PyTorch through the
workload's input pipeline).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from algoperf import spec
from algoperf.data.sharding import Shard
from algoperf.jax import sharding
from algoperf.param_types import infer_parameter_type
from algoperf.rng import seed_from_key
from algoperf.workload_base import SpecWorkload


def _path_name(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


class JaxWorkload(SpecWorkload):
    """Base for JAX workloads; classification loss and metrics by default."""

    framework = "jax"

    def __init__(self, workload_spec, **kwargs) -> None:
        super().__init__(workload_spec, **kwargs)
        self._model: nn.Module | None = None

    # --- what a workload supplies ----------------------------------------------------------
    def build_model(self, **model_kwargs) -> nn.Module:
        raise NotImplementedError

    def init_inputs(self) -> jnp.ndarray:
        """A batch of inputs with the real per-example shape, for `init`."""
        raise NotImplementedError

    @property
    def shard(self) -> Shard:
        # One process feeds all its local devices; hosts split the global batch.
        return Shard(jax.process_index(), jax.process_count())

    @property
    def model(self) -> nn.Module:
        if self._model is None:
            self._model = self.build_model(**self.spec.model_kwargs)
        return self._model

    # --- model -----------------------------------------------------------------------------
    def init_model_fn(self, rng: spec.RandomState) -> spec.ModelInitState:
        params_rng, dropout_rng = jax.random.split(rng)
        variables = jax.jit(functools.partial(self.model.init, train=False))(
            {"params": params_rng, "dropout": dropout_rng}, self.init_inputs()
        )
        variables = dict(variables)
        params = variables.pop("params")
        model_state = variables or None
        self._param_shapes = jax.tree.map(lambda x: spec.ShapeTuple(x.shape), params)
        self._param_types = jax.tree_util.tree_map_with_path(
            lambda path, x: infer_parameter_type(_path_name(path), x.ndim), params
        )
        return sharding.replicate(params), sharding.replicate(model_state)

    def model_fn(
        self,
        params: spec.ParameterContainer,
        augmented_and_preprocessed_input_batch: dict[str, spec.Tensor],
        model_state: spec.ModelAuxiliaryState,
        mode: spec.ForwardPassMode,
        rng: spec.RandomState,
        update_batch_norm: bool,
        dropout_rate: float | None = None,
    ) -> tuple[spec.Tensor, spec.ModelAuxiliaryState]:
        train = mode == spec.ForwardPassMode.TRAIN
        variables = {"params": params, **(model_state or {})}
        kwargs = {}
        if self.spec.default_dropout_rate is not None:
            kwargs["dropout_rate"] = (
                self.spec.default_dropout_rate if dropout_rate is None else dropout_rate
            )
        inputs = augmented_and_preprocessed_input_batch["inputs"]
        if train and model_state:
            # BN in train mode normalises with batch statistics; the new running averages are
            # kept only when update_batch_norm (the PyTorch semantics; upstream's JAX ResNet
            # switches to running averages instead, spec/WORKLOADS.md §2).
            logits, new_state = self.model.apply(
                variables,
                inputs,
                train=True,
                mutable=list(model_state),
                rngs={"dropout": rng},
                **kwargs,
            )
            return logits, (dict(new_state) if update_batch_norm else model_state)
        logits = self.model.apply(variables, inputs, train=train, rngs={"dropout": rng}, **kwargs)
        return logits, model_state

    # --- loss ------------------------------------------------------------------------------
    def loss_fn(
        self,
        label_batch: spec.Tensor,
        logits_batch: spec.Tensor,
        mask_batch: spec.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> dict[str, spec.Tensor]:
        """Softmax cross-entropy; integer labels or soft label rows."""
        num_classes = logits_batch.shape[-1]
        if label_batch.ndim == logits_batch.ndim:
            one_hot = label_batch.astype(logits_batch.dtype)
        else:
            one_hot = jax.nn.one_hot(label_batch, num_classes, dtype=logits_batch.dtype)
        smoothed = optax.smooth_labels(one_hot, label_smoothing) if label_smoothing else one_hot
        per_example = optax.softmax_cross_entropy(logits_batch, smoothed)
        if mask_batch is not None:
            per_example = per_example * mask_batch
            n_valid = mask_batch.sum()
        else:
            n_valid = jnp.asarray(per_example.shape[0], dtype=per_example.dtype)
        return {
            "summed": per_example.sum(),
            "n_valid_examples": n_valid,
            "per_example": per_example,
        }

    def eval_metric_sums(self, logits, batch) -> dict[str, jnp.ndarray]:
        weights = batch["weights"]
        targets = batch["targets"]
        labels = targets.argmax(-1) if targets.ndim == logits.ndim else targets
        correct = (logits.argmax(-1) == labels).astype(weights.dtype)
        losses = self.loss_fn(targets, logits, weights)["per_example"]
        return {
            "accuracy": (correct * weights).sum(),
            "loss": losses.sum(),
            "num_examples": weights.sum(),
        }

    # --- data ------------------------------------------------------------------------------
    def _build_input_queue(
        self,
        data_rng: spec.RandomState,
        split: str,
        data_dir: str,
        global_batch_size: int,
        cache: bool | None = None,
        repeat_final_dataset: bool | None = None,
        num_batches: int | None = None,
        start_batch: int = 0,
    ) -> Iterator[dict[str, jax.Array]]:
        seed = seed_from_key(jax.random.key_data(data_rng) if _is_typed_key(data_rng) else data_rng)
        if split == "train":
            self._eval_train_seed = seed
        # start_batch (ours, not upstream's): continue the train stream of a resumed trial.
        # Called here, not inside a generator, so the dataset is read now (the runner builds the
        # queue before the clock starts), not in the first timed step.
        batches = self.numpy_batches(
            split, data_dir, global_batch_size, seed, self.shard, start_step=start_batch
        )
        if num_batches is not None:
            batches = itertools.islice(batches, num_batches)
        return (sharding.shard_local_batch(batch) for batch in batches)

    @functools.cached_property
    def _eval_step(self):
        def step(params, model_state, batch, rng):
            logits, _ = self.model_fn(
                params, batch, model_state, spec.ForwardPassMode.EVAL, rng, False
            )
            return self.eval_metric_sums(logits, batch)

        return jax.jit(step, out_shardings=sharding.get_replicate_sharding())

    def _eval_model_on_split(
        self,
        split: str,
        num_examples: int,
        global_batch_size: int,
        params: spec.ParameterContainer,
        model_state: spec.ModelAuxiliaryState,
        rng: spec.RandomState,
        data_dir: str,
        global_step: int = 0,
    ) -> dict[str, float]:
        del num_examples, global_step  # every example of the split is visited exactly once
        seed = self._eval_train_seed if split == "eval_train" else 0
        sums = None
        for numpy_batch in self.numpy_batches(split, data_dir, global_batch_size, seed, self.shard):
            batch = sharding.shard_local_batch(numpy_batch)
            batch_sums = self._eval_step(params, model_state, batch, rng)
            sums = batch_sums if sums is None else jax.tree.map(jnp.add, sums, batch_sums)
        values = {k: float(v) for k, v in jax.device_get(sums).items()}
        count = values.pop("num_examples")
        results = {key: value / max(count, 1.0) for key, value in values.items()}
        results["num_examples"] = int(round(count))
        return results


def _is_typed_key(key) -> bool:
    return hasattr(key, "dtype") and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
