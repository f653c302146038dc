"""JAX trial state on disk: an orbax checkpoint, leaves keyed by their path in the state tree.

The tree is stored as nested dicts keyed by each leaf's path (`params/Dense_0/kernel`,
`opt_state/1/0/mu/...`), so a checkpoint names every array with its dtype (bfloat16 included) and
shape; a restore matches leaves by path into the running trial's tree and refuses a checkpoint
whose paths, shapes or dtypes differ. Rank 0 alone writes (docs/rules.md, "Log files"): the state
is replicated, so its host copy is all of it, and orbax is told that this process alone takes
part, so it never waits for the others; every process reads. Checkpoints written before orbax
(`state.npz`, leaves by position) are still read.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from algoperf.checkpoint import CheckpointError

STATE_DIR = "state"
LEGACY_FILE = "state.npz"
EMPTY_KEY = "empty_arrays"
"""Custom-metadata entry listing the arrays of size 0 as [path, shape, dtype]."""


def _key(entry) -> str:
    for attribute in ("key", "idx", "name"):  # DictKey, SequenceKey / FlattenedIndexKey, GetAttrKey
        if hasattr(entry, attribute):
            return str(getattr(entry, attribute))
    return str(entry)


def _paths(tree) -> tuple[list[tuple[str, ...]], list[Any], Any]:
    """(path of each leaf, the leaves, the tree's structure)."""
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    paths = [tuple(_key(entry) for entry in path) for path, _ in with_paths]
    if len(set(paths)) != len(paths):
        raise ValueError("two leaves of the state tree have the same path; rename a key")
    return paths, [leaf for _, leaf in with_paths], treedef


def _nest(paths, values) -> dict:
    nested: dict = {}
    for path, value in zip(paths, values, strict=True):
        node = nested
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return nested


def _flat(nested, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    flat = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            flat.update(_flat(value, (*prefix, key)))
        else:
            flat[(*prefix, key)] = value
    return flat


def _checkpointer() -> ocp.Checkpointer:
    # This process alone takes part (a one-process barrier is skipped), so rank 0 can write
    # while the others wait in the runner's barrier, and each rank can read on its own.
    this = jax.process_index()
    options = ocp.options.MultiprocessingOptions(primary_host=this, active_processes={this})
    handler = ocp.PyTreeCheckpointHandler(multiprocessing_options=options)
    return ocp.Checkpointer(handler, multiprocessing_options=options)


def _host_copy(leaf) -> np.ndarray:
    if isinstance(leaf, jax.Array) and not (leaf.is_fully_addressable or leaf.is_fully_replicated):
        raise ValueError(
            f"a state array of shape {leaf.shape} is sharded over several processes; "
            "checkpoints hold replicated state only (docs/rules.md, Log files)"
        )
    return np.asarray(jax.device_get(leaf))


def save_tree(folder: pathlib.Path, tree) -> None:
    """Write `tree` (jax or numpy arrays in any pytree) to `folder/state`."""
    paths, leaves, _ = _paths(tree)
    host = [_host_copy(leaf) for leaf in leaves]
    # orbax refuses arrays of size 0; they hold no data, so their shape and dtype are enough.
    empty = [
        [list(path), list(x.shape), x.dtype.name] for path, x in zip(paths, host) if not x.size
    ]
    stored = [(path, x) for path, x in zip(paths, host) if x.size]
    with _checkpointer() as checkpointer:
        checkpointer.save(
            pathlib.Path(folder) / STATE_DIR,
            args=ocp.args.PyTreeSave(_nest(*zip(*stored, strict=True))),
            custom_metadata={EMPTY_KEY: empty},
        )


def read_arrays(folder: pathlib.Path) -> dict[str, np.ndarray]:
    """Every array of a checkpoint folder as numpy, keyed by its "/"-joined path.

    Raises:
      CheckpointError: no state in `folder`, or unreadable files.
    """
    with _checkpointer() as checkpointer:
        arrays = _read(checkpointer, pathlib.Path(folder) / STATE_DIR)
    return {"/".join(path): value for path, value in arrays.items()}


def restore_tree(folder: pathlib.Path, target):
    """The tree saved in `folder`, in the structure of `target` (numpy leaves, host memory).

    Leaves are matched by path; `target`'s leaves give the expected shapes and dtypes.

    Raises:
      CheckpointError: unreadable, or not the state of this model and optimizer.
    """
    folder = pathlib.Path(folder)
    paths, leaves, treedef = _paths(target)
    shapes = [(np.shape(leaf), _dtype(leaf)) for leaf in leaves]
    if not (folder / STATE_DIR).exists() and (folder / LEGACY_FILE).exists():
        return jax.tree.unflatten(treedef, _legacy_leaves(folder, shapes))
    with _checkpointer() as checkpointer:
        found = _saved_shapes(checkpointer, folder / STATE_DIR)
        _check_same(folder, found, dict(zip(paths, shapes, strict=True)))
        arrays = _read(checkpointer, folder / STATE_DIR)
    return jax.tree.unflatten(treedef, [arrays[path] for path in paths])


def _unreadable(folder, reason: BaseException | str) -> CheckpointError:
    if isinstance(reason, BaseException):
        lines = str(reason).splitlines()
        reason = f"{type(reason).__name__}: {lines[0][:200] if lines else ''}"
    return CheckpointError(
        f"checkpoint {folder} could not be loaded ({reason}); delete it to restart the trial."
    )


def _metadata(checkpointer, state_dir: pathlib.Path):
    if not state_dir.is_dir():
        raise _unreadable(state_dir.parent, f"no {state_dir.name}/ folder")
    try:
        metadata = checkpointer.metadata(state_dir)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise _unreadable(state_dir.parent, error) from None
    if metadata.item_metadata is None:
        raise _unreadable(state_dir.parent, f"unreadable metadata in {state_dir.name}/")
    return metadata


def _empty_arrays(metadata) -> dict[tuple[str, ...], np.ndarray]:
    empty = (metadata.custom_metadata or {}).get(EMPTY_KEY, [])
    return {tuple(path): np.zeros(shape, jax.numpy.dtype(dtype)) for path, shape, dtype in empty}


def _saved_shapes(checkpointer, state_dir: pathlib.Path) -> dict[tuple[str, ...], tuple]:
    """(shape, dtype) of each saved array by path, read without the arrays."""
    metadata = _metadata(checkpointer, state_dir)
    found = {
        path: (tuple(array.shape), np.dtype(array.dtype))
        for path, array in _flat(dict(metadata.item_metadata.tree)).items()
    }
    found.update({path: (x.shape, x.dtype) for path, x in _empty_arrays(metadata).items()})
    return found


def _read(checkpointer, state_dir: pathlib.Path) -> dict[tuple[str, ...], np.ndarray]:
    metadata = _metadata(checkpointer, state_dir)
    try:
        arrays = _flat(checkpointer.restore(state_dir))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise _unreadable(state_dir.parent, error) from None
    return {**arrays, **_empty_arrays(metadata)}


def _dtype(leaf) -> np.dtype:
    return np.dtype(leaf.dtype) if hasattr(leaf, "dtype") else np.asarray(leaf).dtype


def _canonical(dtype) -> np.dtype:
    """The dtype a leaf has once on the devices (float64 is float32 unless x64 is on): a fresh
    init may hold a Python float where the trial's state, restored and stepped, holds float32."""
    return np.dtype(jax.dtypes.canonicalize_dtype(dtype))


def _check_same(folder, found: dict, expected: dict) -> None:
    """Refuse unless both hold the same paths with the same shapes and device dtypes."""
    found = {path: (shape, _canonical(dtype)) for path, (shape, dtype) in found.items()}
    expected = {path: (shape, _canonical(dtype)) for path, (shape, dtype) in expected.items()}
    if found == expected:
        return
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    differ = sorted(path for path in set(found) & set(expected) if found[path] != expected[path])
    if differ:
        path = differ[0]
        what = (
            f"{'/'.join(path)} is {_describe(found[path])} there, {_describe(expected[path])} here"
        )
    elif missing:
        what = f"it lacks {'/'.join(missing[0])}"
    else:
        what = f"it has {'/'.join(extra[0])}, which this state lacks"
    count = len(missing) + len(extra) + len(differ)
    raise CheckpointError(
        f"checkpoint {folder} does not match this model/optimizer: {what}"
        f"{f' ({count} arrays differ)' if count > 1 else ''}; it belongs to another setup."
    )


def _describe(shape_dtype) -> str:
    shape, dtype = shape_dtype
    return f"{dtype} {shape}"


def _legacy_leaves(folder: pathlib.Path, expected: list) -> list[np.ndarray]:
    """Leaves of a `state.npz` (written before orbax: positional, no structure), checked against
    the target's shapes and dtypes. Its bfloat16 leaves come back as raw 2-byte records (`|V2`):
    they are viewed as the target's dtype of the same size."""
    try:
        with np.load(folder / LEGACY_FILE) as data:
            saved = [data[f"arr_{i}"] for i in range(len(data.files))]
    except (OSError, ValueError, KeyError, EOFError) as error:
        raise _unreadable(folder, error) from None
    if len(saved) != len(expected):
        raise CheckpointError(
            f"checkpoint {folder} does not match this model/optimizer ({len(saved)} arrays "
            f"saved, {len(expected)} expected); it belongs to another setup."
        )
    leaves = []
    for index, (array, (shape, dtype)) in enumerate(zip(saved, expected)):
        if array.dtype.kind == "V" and array.dtype.itemsize == dtype.itemsize:
            array = array.view(dtype)
        if array.shape != shape or _canonical(array.dtype) != _canonical(dtype):
            raise CheckpointError(
                f"checkpoint {folder} does not match this model/optimizer: array {index} is "
                f"{_describe((array.shape, array.dtype))} there, {_describe((shape, dtype))} "
                "here; it belongs to another setup."
            )
        leaves.append(array)
    return leaves
