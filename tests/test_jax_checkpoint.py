"""JAX checkpoints (algoperf/jax/checkpoint.py): bfloat16 and nested trees round-trip exactly,
leaves are matched by path, a foreign or corrupt checkpoint is one line, checkpoints written
before orbax (`state.npz`) are still read, a failed write leaves the previous checkpoint usable,
and with two processes rank 0 writes alone while both read.

This file is also the two-process worker: `python tests/test_jax_checkpoint.py --worker RANK
--port PORT --folder DIR`.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from algoperf import checkpoint  # noqa: E402
from algoperf.jax import checkpoint as jax_checkpoint  # noqa: E402
from algoperf.jax.sharding import replicate  # noqa: E402
from algoperf.loop import LoopState, TrainVars  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
Pair = collections.namedtuple("Pair", ["second", "first"])  # fields out of alphabetical order


def nested_state():
    """A trial-like tree: bf16 params and Adam moments, namedtuples, lists, tuples, None,
    empty nodes, int and digit-string keys, a Python scalar."""
    params = {
        "Dense_0": {"kernel": jnp.arange(12, dtype=jnp.bfloat16).reshape(3, 4) / 7},
        "Dense_1": {"bias": jnp.linspace(-1, 1, 5, dtype=jnp.float32)},
        "blocks": [{"scale": jnp.full((2,), 0.1, jnp.bfloat16)}, (jnp.ones((1, 2)),)],
    }
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3, mu_dtype=jnp.bfloat16))
    opt_state = tx.init(params)
    opt_state = jax.tree.map(lambda x: x + jnp.asarray(0.3, x.dtype), opt_state)
    extra = {
        "pair": Pair(second=jnp.int32(7), first=np.float64(2.5)),
        "none": None,
        "empty": {},
        "by_int": {3: jnp.zeros((0, 4), jnp.bfloat16), 10: np.uint8(9)},
        "scalar": 0.25,
    }
    return {"params": params, "model_state": None, "opt_state": (opt_state, extra)}


def assert_identical(got, expected):
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()  # bit-exact, bfloat16 included


def test_bf16_and_nested_tree_round_trip(tmp_path):
    state = nested_state()
    jax_checkpoint.save_tree(tmp_path, state)
    restored = jax_checkpoint.restore_tree(tmp_path, nested_state())
    assert_identical(restored, state)
    arrays = jax_checkpoint.read_arrays(tmp_path)
    assert arrays["params/Dense_0/kernel"].dtype == jnp.bfloat16
    assert arrays["opt_state/1/pair/second"] == 7 and arrays["opt_state/1/by_int/3"].shape == (0, 4)


def test_backend_round_trip_keeps_the_update_function_and_replicates(tmp_path):
    from algoperf.jax.backend import JaxBackend

    state = replicate(nested_state())  # as the runner holds it: jax arrays, x64 off
    update = object()
    saved = TrainVars(state["params"], {"batch_stats": jnp.ones(3)}, (state["opt_state"], update))
    backend = JaxBackend()
    backend.save_state(tmp_path, saved)
    fresh = nested_state()  # a fresh init: Python and numpy scalars where the state has arrays
    target = TrainVars(fresh["params"], {"batch_stats": jnp.zeros(3)}, (fresh["opt_state"], update))
    restored = backend.load_state(tmp_path, target)
    assert restored.optimizer_state[1] is update
    assert_identical(restored.params, state["params"])
    assert_identical(restored.optimizer_state[0], state["opt_state"])
    np.testing.assert_array_equal(restored.model_state["batch_stats"], np.ones(3))
    assert all(leaf.is_fully_replicated for leaf in jax.tree.leaves(restored.params))


def changed(tree, path, value):
    node = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return tree


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: changed(t, ("params", "Dense_1", "bias"), jnp.zeros(6)), "Dense_1/bias is"),
        (lambda t: changed(t, ("params", "Dense_1", "bias"), jnp.zeros(5, jnp.bfloat16)), "bf"),
        (lambda t: changed(t, ("params", "Dense_1", "extra"), jnp.zeros(5)), "lacks params/"),
        (lambda t: t["params"].pop("Dense_0") and t, "it has params/Dense_0/kernel"),
    ],
)
def test_another_setup_is_refused_naming_the_array(tmp_path, edit, message):
    jax_checkpoint.save_tree(tmp_path, nested_state())
    with pytest.raises(checkpoint.CheckpointError) as caught:
        jax_checkpoint.restore_tree(tmp_path, edit(nested_state()))
    text = str(caught.value)
    assert message in text and "another setup" in text and "\n" not in text


def test_corrupt_checkpoint_is_one_line(tmp_path):
    jax_checkpoint.save_tree(tmp_path, nested_state())
    data = [p for p in (tmp_path / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    for path in data:
        path.write_bytes(b"truncated")
    with pytest.raises(checkpoint.CheckpointError) as caught:
        jax_checkpoint.restore_tree(tmp_path, nested_state())
    assert "could not be loaded" in str(caught.value) and "\n" not in str(caught.value)
    (tmp_path / "state" / "_METADATA").write_text("{")
    with pytest.raises(checkpoint.CheckpointError, match="could not be loaded"):
        jax_checkpoint.restore_tree(tmp_path, nested_state())


def test_a_checkpoint_written_before_orbax_is_read(tmp_path):
    """The old format: np.savez of the flattened leaves, bfloat16 stored as raw `|V2`."""
    state = nested_state()
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(jax.device_get(state))]
    np.savez(tmp_path / "state.npz", *leaves)
    with np.load(tmp_path / "state.npz") as data:
        assert "V" in {data[name].dtype.kind for name in data.files}  # bfloat16 lost its dtype
    assert_identical(jax_checkpoint.restore_tree(tmp_path, nested_state()), state)
    wrong = nested_state()
    wrong["params"]["Dense_1"]["bias"] = jnp.zeros(6)
    with pytest.raises(checkpoint.CheckpointError, match="another setup"):
        jax_checkpoint.restore_tree(tmp_path, wrong)


class FakeBackend:
    """The JAX backend's save_state/load_state on a plain dict state."""

    def save_state(self, folder, variables):
        jax_checkpoint.save_tree(folder, variables)

    def load_state(self, folder, variables):
        return jax_checkpoint.restore_tree(folder, variables)


def save_step(trial, step, state):
    meta = checkpoint.Meta("mnist", "jax", "v1.0", "external", 0, 0, 8, step, 0.0)
    return checkpoint.save(trial, FakeBackend(), state, LoopState(global_step=step), meta)


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    first = nested_state()
    save_step(tmp_path, 1, first)

    def fail(self, directory, *args, **kwargs):
        (pathlib.Path(directory) / "partial").write_bytes(b"half")
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(ocp.PyTreeCheckpointHandler, "save", fail)
    with pytest.raises(Exception, match="Input/output error"):
        save_step(tmp_path, 2, nested_state())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_1"]
    folder = checkpoint.latest(tmp_path)
    assert folder.name == "checkpoint_1"
    assert_identical(jax_checkpoint.restore_tree(folder, nested_state()), first)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_processes_rank_zero_writes_and_both_read(tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                str(rank),
                "--port",
                str(port),
                "--folder",
                str(tmp_path),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    outputs = [worker.communicate(timeout=180)[0] for worker in workers]
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-3000:]
    results = [json.loads((tmp_path / f"rank_{rank}.json").read_text()) for rank in (0, 1)]
    assert results == [{"identical": True, "replicated": True}] * 2
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == ["state"]


def worker(rank: int, port: int, folder: pathlib.Path) -> None:
    """One of two processes: a replicated state over both, rank 0 saves it while rank 1 waits
    at a barrier, then both restore it."""
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=rank)
    from jax.experimental import multihost_utils

    state = replicate(nested_state())
    target = folder / "checkpoint"
    if rank == 0:
        target.mkdir()
        jax_checkpoint.save_tree(target, state)
    multihost_utils.sync_global_devices("saved")
    restored = replicate(jax_checkpoint.restore_tree(target, replicate(nested_state())))
    try:
        assert_identical(jax.device_get(restored), jax.device_get(state))
        identical = True
    except AssertionError:
        identical = False
    replicated = all(leaf.is_fully_replicated for leaf in jax.tree.leaves(restored))
    result = {"identical": identical, "replicated": replicated}
    (folder / f"rank_{rank}.json").write_text(json.dumps(result))
    multihost_utils.sync_global_devices("done")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--folder", type=pathlib.Path, required=True)
    args = parser.parse_args()
    worker(args.worker, args.port, args.folder)
