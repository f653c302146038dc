"""The JAX half of every Workload: flax init, forward with BN/dropout control, input and eval.

A workload's `model_jax.py` subclasses `JaxWorkload` (a classifier: `JaxClassifier` of
`algoperf.jax.classification`) and supplies the flax module (`build_model`), example inputs for
init, its loss and its per-batch eval outputs; data comes from the input pipeline it shares with
PyTorch (the data protocol, docs/data.md).
"""

from __future__ import annotations

import functools
import itertools
import pickle
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
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
    """Base for JAX workloads: a subclass adds `build_model`, `init_inputs`, `loss_fn` and
    `eval_outputs` (classifiers take the last two from `algoperf.jax.classification`)."""

    framework = "jax"

    def __init__(self, workload_spec, **kwargs) -> None:
        super().__init__(workload_spec, **kwargs)
        self._model: nn.Module | None = None

    # --- what a workload supplies ----------------------------------------------------------
    def build_model(self, **model_kwargs) -> nn.Module:
        raise NotImplementedError

    def init_inputs(self) -> jnp.ndarray | tuple:
        """Inputs with the real per-example shape, for `init`: one array, or a tuple of the
        model's positional inputs (as `model_inputs` gives them)."""
        raise NotImplementedError

    def model_inputs(self, batch) -> tuple:
        """The positional arguments of the model's `__call__`, taken from a batch (default: its
        `inputs`)."""
        return (batch["inputs"],)

    @property
    def shard(self) -> Shard:
        # One process feeds all its local devices; hosts split the global batch.
        return Shard(jax.process_index(), jax.process_count(), jax.local_device_count())

    @property
    def model(self) -> nn.Module:
        if self._model is None:
            self._model = self.build_model(**self.spec.model_kwargs)
        return self._model

    # --- model -----------------------------------------------------------------------------
    def init_model_fn(self, rng: spec.RandomState) -> spec.ModelInitState:
        params_rng, dropout_rng = jax.random.split(rng)
        inputs = self.init_inputs()
        inputs = inputs if isinstance(inputs, tuple) else (inputs,)
        variables = jax.jit(functools.partial(self.model.init, train=False))(
            {"params": params_rng, "dropout": dropout_rng}, *inputs
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
        inputs = self.model_inputs(augmented_and_preprocessed_input_batch)
        if train and model_state:
            # BN in train mode normalises with batch statistics; the new running averages are
            # kept only when update_batch_norm (the PyTorch semantics; upstream's JAX ResNet
            # switches to running averages instead; docs/rules.md, "BN update semantics").
            logits, new_state = self.model.apply(
                variables,
                *inputs,
                train=True,
                mutable=list(model_state),
                rngs={"dropout": rng},
                **kwargs,
            )
            return logits, (dict(new_state) if update_batch_norm else model_state)
        logits = self.model.apply(variables, *inputs, train=train, rngs={"dropout": rng}, **kwargs)
        return logits, model_state

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

    # --- eval (the loop itself is algoperf.metrics.evaluate) ----------------------------------
    @functools.cached_property
    def _eval_step(self):
        def step(params, model_state, batch, rng):
            logits, _ = self.model_fn(
                params, batch, model_state, spec.ForwardPassMode.EVAL, rng, False
            )
            return self.eval_outputs(logits, batch)

        return jax.jit(step, out_shardings=sharding.get_replicate_sharding())

    def _eval_batches(self, split, data_dir, global_batch_size):
        seed = self._eval_train_seed if split == "eval_train" else 0
        for batch in self.numpy_batches(split, data_dir, global_batch_size, seed, self.shard):
            yield sharding.shard_local_batch(batch)

    def _eval_compute(self, params, model_state, rng):
        return functools.partial(self._eval_step, params, model_state, rng=rng)

    def _collectives(self) -> _JaxCollectives:
        return _JaxCollectives()


class _JaxCollectives:
    """`algoperf.metrics.EvalCollectives` for JAX: adds under jit dispatch, multi-host gathers."""

    def add(self, totals, outputs):
        if totals is None:
            return dict(outputs)
        return jax.tree.map(jnp.add, totals, dict(outputs))

    def to_numpy(self, outputs):
        return {key: np.asarray(value) for key, value in jax.device_get(dict(outputs)).items()}

    def sum_over_ranks(self, values: np.ndarray) -> np.ndarray:
        if jax.process_count() == 1:
            return values
        from jax.experimental import multihost_utils

        return np.sum(multihost_utils.process_allgather(values), axis=0)

    def gather_over_ranks(self, rows: dict) -> dict:
        if jax.process_count() == 1:
            return rows
        everyone = _allgather_objects(rows)  # any shapes and dtypes (decoded strings too)
        return {key: np.concatenate([part[key] for part in everyone]) for key in rows}


def pack(obj) -> np.ndarray:
    """An object as a uint8 array (pickled), for collectives that move arrays only."""
    return np.frombuffer(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), np.uint8)


def unpack(packed: np.ndarray, length: int):
    return pickle.loads(packed[:length].tobytes())


def _allgather_objects(obj) -> list:
    """`obj` of every process, in process order (process_allgather needs equal shapes: each
    pickled payload is padded to the longest)."""
    from jax.experimental import multihost_utils

    payload = pack(obj)
    lengths = multihost_utils.process_allgather(np.asarray([len(payload)], np.int64)).reshape(-1)
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: len(payload)] = payload
    gathered = multihost_utils.process_allgather(padded)
    return [unpack(part, int(n)) for part, n in zip(gathered, lengths)]


def _is_typed_key(key) -> bool:
    return hasattr(key, "dtype") and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
