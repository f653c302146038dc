"""Reference submissions (`submissions/`): API surface, shared schedule and optimizers, and a short
MNIST training run of every submission x framework that must beat 80% validation accuracy."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import io
import json
import math
import os
import pathlib
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest

from algoperf import rng as np_rng
from algoperf import workloads
from algoperf.search_space import load_search_space, sample_points
from algoperf.submissions.common import batch_sizes, schedules

SUBMISSIONS_DIR = pathlib.Path(__file__).resolve().parents[1] / "submissions"
SUBMISSIONS = ("nadamw", "nadamw_self_tuning", "adamw", "sgd_nesterov")
SELF_TUNING = frozenset({"nadamw_self_tuning"})
FILE_OF = {"pytorch": "submission_torch.py", "jax": "submission_jax.py"}
FRAMEWORK_MODULE = {"pytorch": "torch", "jax": "jax"}
# Upstream's positional arity of each submission function (update_params may add train_state).
ARITY = {
    "get_batch_size": 1,
    "init_optimizer_state": 5,
    "update_params": 11,
    "prepare_for_eval": 10,
    "data_selection": 8,
}
NUM_TRAIN_STEPS = 150
MIN_VALIDATION_ACCURACY = 0.80
FALLBACK_WARNING = "ignore:MNIST not found"
CASES = [(name, framework) for name in SUBMISSIONS for framework in FILE_OF]


@functools.cache
def load_submission(name: str, framework: str) -> types.ModuleType:
    """Imports a submission from its file path, as the runner does."""
    pytest.importorskip(FRAMEWORK_MODULE[framework])
    path = SUBMISSIONS_DIR / name / FILE_OF[framework]
    module_spec = importlib.util.spec_from_file_location(f"_submission_{name}_{framework}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def first_point(name: str):
    """The first trial point of the submission's search space (None for self-tuning)."""
    if name in SELF_TUNING:
        return None
    space = load_search_space(SUBMISSIONS_DIR / name / "tuning_search_space.json")
    return sample_points(space, 1, seed=0)[0]


# ---------------------------------------------------------------------------------------------
# API surface


def _required_positional(fn) -> list[str]:
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind in kinds and p.default is inspect.Parameter.empty
    ]


@pytest.mark.parametrize(("name", "framework"), CASES)
def test_api_functions_and_arity(name, framework):
    module = load_submission(name, framework)
    for function_name, arity in ARITY.items():
        fn = getattr(module, function_name, None)
        assert callable(fn), f"{name}/{FILE_OF[framework]} lacks {function_name}"
        assert len(_required_positional(fn)) == arity, function_name
    update_parameters = inspect.signature(module.update_params).parameters
    assert list(update_parameters)[ARITY["update_params"] :] == ["train_state"]
    assert update_parameters["train_state"].default is None


@pytest.mark.parametrize("name", SUBMISSIONS)
def test_search_space_files(name):
    path = SUBMISSIONS_DIR / name / "tuning_search_space.json"
    if name in SELF_TUNING:
        assert not path.exists(), "self-tuning submissions have no search space"
        return
    content = json.loads(path.read_text())
    if name == "nadamw":
        assert isinstance(content, list) and len(content) == 5
    else:
        assert isinstance(content, dict)
    point = first_point(name)
    for key in ("learning_rate", "one_minus_beta1", "weight_decay", "warmup_factor"):
        assert getattr(point, key) > 0, key
    assert 0 <= point.label_smoothing < 1 and 0 <= point.warmup_factor < 1


def test_batch_sizes_cover_every_base_workload():
    for base in workloads.BASE_WORKLOADS:
        assert batch_sizes.get_batch_size(base) % 8 == 0, base  # divisible by 8 GPUs
    assert batch_sizes.get_batch_size("mnist") == 128
    assert batch_sizes.get_batch_size("finewebedu_lm") == 64
    variants = [n for n in workloads.names() if n not in workloads.BASE_WORKLOADS]
    assert variants
    for variant in variants:
        with pytest.raises(ValueError, match="base"):
            batch_sizes.get_batch_size(variant)


# ---------------------------------------------------------------------------------------------
# Schedule


def test_warmup_cosine_schedule():
    schedule = schedules.WarmupCosine(peak_lr=2e-3, warmup_steps=10, total_steps=110)
    lrs = [schedule(step) for step in range(130)]
    assert lrs[0] == 0.0
    assert lrs[5] == pytest.approx(1e-3)
    assert int(np.argmax(lrs)) == 10 and lrs[10] == pytest.approx(2e-3)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))  # rising warmup
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then never rising
    assert lrs[60] == pytest.approx(1e-3, rel=1e-5)  # half way through the cosine
    assert lrs[110] == pytest.approx(0.0, abs=1e-12) and max(lrs[110:]) == pytest.approx(0.0)
    multiplier = schedule.multiplier()
    assert multiplier(10) == pytest.approx(1.0) and multiplier(5) == pytest.approx(0.5)

    jax = pytest.importorskip("jax")
    jax_lrs = jax.jit(jax.vmap(schedule.jax))(np.arange(130))
    np.testing.assert_allclose(np.asarray(jax_lrs), lrs, rtol=0, atol=1e-9)  # float32 cos


def test_schedule_for_reads_the_hyperparameters():
    point = types.SimpleNamespace(learning_rate=1e-3, warmup_factor=0.05)
    schedule = schedules.schedule_for(1000, point)
    assert (schedule.warmup_steps, schedule.total_steps) == (37, 750)  # step_hint_factor 0.75
    point.step_hint_factor = 1.0
    assert schedules.schedule_for(1000, point).total_steps == 1000
    no_warmup = schedules.WarmupCosine(peak_lr=1.0, warmup_steps=0, total_steps=4)
    assert no_warmup(0) == pytest.approx(1.0) and no_warmup(4) == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------------
# NAdamW


def test_nadamw_torch_first_step_by_hand():
    torch = pytest.importorskip("torch")
    from algoperf.submissions.common.nadamw_torch import NAdamW

    lr, beta1, weight_decay = 0.01, 0.9, 0.1
    start = torch.tensor([1.0, -2.0, 0.5])
    grad = torch.tensor([0.3, -4.0, 0.0])
    param = torch.nn.Parameter(start.clone())
    optimizer = NAdamW([param], lr=lr, betas=(beta1, 0.99), eps=1e-8, weight_decay=weight_decay)
    param.grad = grad.clone()
    optimizer.step()
    # Step 1: m = (1-b1) g, v = (1-b2) g^2, so the bias-corrected Nesterov direction is
    # (b1 (1-b1) g + (1-b1) g) / (1-b1) = (1+b1) g, divided by |g| + eps.
    expected = start * (1 - lr * weight_decay) - lr * (1 + beta1) * grad / (grad.abs() + 1e-8)
    torch.testing.assert_close(param.detach(), expected, rtol=0, atol=1e-7)
    assert optimizer.state_dict()["param_groups"][0]["step"] == 1


def test_nadamw_torch_matches_jax_for_three_steps():
    torch = pytest.importorskip("torch")
    pytest.importorskip("jax")
    import optax

    from algoperf.submissions.common.nadamw_jax import nadamw
    from algoperf.submissions.common.nadamw_torch import NAdamW

    rng = np.random.default_rng(0)
    shapes = {"kernel": (4, 3), "bias": (3,), "scale": (2, 2, 2)}
    start = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    grads = [
        {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()} for _ in range(3)
    ]
    settings = {"betas": (0.9, 0.995), "eps": 1e-8, "weight_decay": 0.08}

    torch_params = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in start.items()}
    optimizer = NAdamW(list(torch_params.values()), lr=3e-2, **settings)
    transform = nadamw(3e-2, b1=0.9, b2=0.995, eps=1e-8, weight_decay=0.08)
    jax_params = dict(start)
    opt_state = transform.init(jax_params)
    for step_grads in grads:
        for key, param in torch_params.items():
            param.grad = torch.from_numpy(step_grads[key].copy())
        optimizer.step()
        updates, opt_state = transform.update(step_grads, opt_state, jax_params)
        jax_params = optax.apply_updates(jax_params, updates)
        for key, param in torch_params.items():
            np.testing.assert_allclose(
                param.detach().numpy(), np.asarray(jax_params[key]), rtol=0, atol=1e-6
            )


class _TinyTorchModel:
    """Params of a fake model, for optimizer-only checks of the submissions."""

    def __init__(self, torch, start: dict[str, np.ndarray]) -> None:
        self.params = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in start.items()}

    def parameters(self):
        return iter(self.params.values())


@pytest.mark.parametrize("name", SUBMISSIONS)
def test_torch_and_jax_submission_optimizers_agree(name):
    """The torch and JAX submissions build the same update rule and schedule (5 updates)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("jax")
    import optax

    torch_module, jax_module = load_submission(name, "pytorch"), load_submission(name, "jax")
    fake_workload = types.SimpleNamespace(step_hint=100)  # warmup_factor 0.05 -> 3 warmup steps
    point = first_point(name)
    rng = np.random.default_rng(1)
    start = {"w": rng.normal(size=(5, 4)).astype(np.float32), "b": np.zeros(4, np.float32)}
    model = _TinyTorchModel(torch, start)
    torch_state = torch_module.init_optimizer_state(fake_workload, model, None, point, None)
    opt_state, update_fn = jax_module.init_optimizer_state(fake_workload, start, None, point, None)
    jax_params = dict(start)
    for _ in range(5):
        grads = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in start.items()}
        for key, param in model.params.items():
            param.grad = torch.from_numpy(grads[key].copy())
        torch_state["optimizer"].step()
        torch_state["scheduler"].step()
        updates, opt_state = update_fn(grads, opt_state, jax_params)
        jax_params = optax.apply_updates(jax_params, updates)
        for key, param in model.params.items():
            np.testing.assert_allclose(
                param.detach().numpy(), np.asarray(jax_params[key]), rtol=0, atol=1e-6
            )
    assert not np.allclose(jax_params["w"], start["w"])


@pytest.mark.parametrize("name", SUBMISSIONS)
def test_torch_optimizer_state_checkpoints(name):
    """optimizer and scheduler survive state_dict -> torch.save/load(weights_only) -> resume."""
    torch = pytest.importorskip("torch")
    module = load_submission(name, "pytorch")
    fake_workload = types.SimpleNamespace(step_hint=100)
    rng = np.random.default_rng(2)
    start = {"w": rng.normal(size=(3, 2)).astype(np.float32), "b": np.zeros(2, np.float32)}
    grads = [
        {k: rng.normal(size=v.shape).astype(np.float32) for k, v in start.items()} for _ in range(6)
    ]

    def new_trial():
        model = _TinyTorchModel(torch, start)
        state = module.init_optimizer_state(fake_workload, model, None, first_point(name), None)
        return model, state

    def step(model, state, step_grads):
        for key, param in model.params.items():
            param.grad = torch.from_numpy(step_grads[key].copy())
        state["optimizer"].step()
        state["scheduler"].step()

    model, state = new_trial()
    for step_grads in grads[:3]:
        step(model, state, step_grads)
    buffer = io.BytesIO()
    torch.save({key: value.state_dict() for key, value in state.items()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_model, resumed_state = new_trial()
    with torch.no_grad():
        for key, param in resumed_model.params.items():
            param.copy_(model.params[key])
    for key, value in resumed_state.items():
        value.load_state_dict(saved[key])
    for step_grads in grads[3:]:
        step(model, state, step_grads)
        step(resumed_model, resumed_state, step_grads)
    for key, param in model.params.items():
        torch.testing.assert_close(resumed_model.params[key], param, rtol=0, atol=0)
    assert resumed_state["scheduler"].get_last_lr() == state["scheduler"].get_last_lr()


# ---------------------------------------------------------------------------------------------
# Training MNIST


class RecordingLogger:
    def __init__(self) -> None:
        self.rows: list[tuple[int, dict]] = []

    def append_scalar_metrics(self, metrics, global_step, *args, **kwargs) -> None:
        self.rows.append((global_step, dict(metrics)))


@pytest.fixture(scope="module", params=list(FILE_OF))
def mnist(request, tmp_path_factory):
    """(framework, workload, data_dir): one MNIST workload per framework for the module.

    The offline sample takes ~5 s to load and a workload keeps it, so it is loaded here (first
    batch), with the framework's first model init, outside the timed test calls.
    """
    framework = request.param
    pytest.importorskip(FRAMEWORK_MODULE[framework])
    data_dir = str(tmp_path_factory.mktemp(f"mnist_{framework}"))
    workload = workloads.load("mnist", framework)
    (init_key, _, data_key, _), _ = _keys(framework, 0, 1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="MNIST not found")
        next(workload._build_input_queue(data_key, "train", data_dir, 8))
    workload.init_model_fn(init_key)
    return framework, workload, data_dir


def _keys(framework: str, seed: int, num_steps: int):
    """(init, optimizer, data, eval) keys and one key per step."""
    if framework == "jax":
        import jax

        init_key, opt_key, data_key, eval_key, step_key = jax.random.split(
            jax.random.PRNGKey(seed), 5
        )
        return (init_key, opt_key, data_key, eval_key), list(jax.random.split(step_key, num_steps))
    init_key, opt_key, data_key, eval_key, step_key = np_rng.split(np_rng.prng_key(seed), 5)
    return (init_key, opt_key, data_key, eval_key), list(np_rng.split(step_key, num_steps))


class Trial:
    """Model, optimizer and input queue of one run of a submission on a workload."""

    def __init__(self, module, workload, data_dir, hyperparameters, *, seed: int = 0) -> None:
        self.module, self.workload, self.hyperparameters = module, workload, hyperparameters
        (init_key, opt_key, data_key, self.eval_key), self._step_keys = _keys(
            workload.framework, seed, NUM_TRAIN_STEPS
        )
        self.params, self.model_state = workload.init_model_fn(init_key)
        self.optimizer_state = module.init_optimizer_state(
            workload, self.params, self.model_state, hyperparameters, opt_key
        )
        batch_size = module.get_batch_size("mnist")
        self.queue = workload._build_input_queue(data_key, "train", data_dir, batch_size)

    def run(self, first_step: int, num_steps: int) -> None:
        """data_selection + update_params for steps first_step .. first_step + num_steps - 1."""
        module, workload, hyperparameters = self.module, self.workload, self.hyperparameters
        for step in range(first_step, first_step + num_steps):
            step_key = self._step_keys[step]
            batch = module.data_selection(
                workload, self.queue, self.optimizer_state, self.params, self.model_state,
                hyperparameters, step, step_key,
            )  # fmt: skip
            self.optimizer_state, self.params, self.model_state = module.update_params(
                workload, self.params, workload.model_params_types, self.model_state,
                hyperparameters, batch, workload.loss_type, self.optimizer_state, [], step,
                step_key,
            )  # fmt: skip


@pytest.mark.filterwarnings(FALLBACK_WARNING)
@pytest.mark.parametrize("name", SUBMISSIONS)
def test_trains_mnist(name, mnist):
    framework, workload, data_dir = mnist
    module = load_submission(name, framework)
    hyperparameters = first_point(name)
    logger = RecordingLogger()
    workload.attach_metrics_logger(logger)
    if framework == "jax":
        from algoperf.submissions.common import jax_step

        compiled_before = jax_step._jitted_train_step()._cache_size()
    trial = Trial(module, workload, data_dir, hyperparameters)
    try:
        trial.run(0, NUM_TRAIN_STEPS)
    finally:
        workload.attach_metrics_logger(None)
    if framework == "jax":  # one compilation for the whole run
        assert jax_step._jitted_train_step()._cache_size() == compiled_before + 1
    optimizer_state, params, model_state = trial.optimizer_state, trial.params, trial.model_state
    eval_key = trial.eval_key
    returned = module.prepare_for_eval(
        workload, params, workload.model_params_types, model_state, hyperparameters,
        workload.loss_type, optimizer_state, [], NUM_TRAIN_STEPS, eval_key,
    )  # fmt: skip
    assert returned[1] is params and returned[0] is optimizer_state
    results = workload.eval_model(
        10_000, params, model_state, eval_key, data_dir, None, NUM_TRAIN_STEPS
    )
    accuracy = results["validation/accuracy"]
    print(f"{name} {framework}: validation/accuracy {accuracy:.4f} after {NUM_TRAIN_STEPS} steps")
    assert accuracy > MIN_VALIDATION_ACCURACY, results
    # Scalars are logged every 100 steps only.
    assert [step for step, _ in logger.rows] == [0, 100]
    assert all(math.isfinite(row["loss"]) for _, row in logger.rows)


@pytest.mark.filterwarnings(FALLBACK_WARNING)
def test_update_params_reads_no_device_values(mnist, monkeypatch):
    """Off logging steps (here 2-4, a logger attached), update_params reads no device value on
    the host: no tensor .item()/float()/bool() in PyTorch, no device-to-host transfer in JAX."""
    framework, workload, data_dir = mnist
    module = load_submission("nadamw", framework)
    trial = Trial(module, workload, data_dir, first_point("nadamw"))
    trial.run(1, 1)  # first batch and JAX compilation outside the check
    if framework == "pytorch":
        import torch

        def forbidden(*args, **kwargs):
            raise AssertionError("host read of a tensor value inside update_params")

        for method in ("item", "tolist", "__float__", "__int__", "__bool__"):
            monkeypatch.setattr(torch.Tensor, method, forbidden)
        guard = contextlib.nullcontext()
    else:
        import jax

        guard = jax.transfer_guard_device_to_host("disallow")
    workload.attach_metrics_logger(RecordingLogger())
    try:
        with guard:
            trial.run(2, 3)
    finally:
        workload.attach_metrics_logger(None)


# ---------------------------------------------------------------------------------------------
# PyTorch DDP (2 CPU processes, gloo)

_DDP_SCRIPT = """
import importlib.util, sys, warnings
import numpy as np, torch
from algoperf.torch.distributed import init_process_group, shutdown_and_exit
from algoperf import rng as np_rng
from algoperf.search_space import load_search_space, sample_points
from algoperf import workloads
from algoperf.workloads.mnist.input_pipeline import fake_batch

warnings.filterwarnings("ignore")
out_dir, names = sys.argv[1], sys.argv[2:]
info = init_process_group()
full = fake_batch(16, seed=1)
full["weights"][-3:] = 0.0  # masked rows, all on the last rank
rows = 16 // info.world_size
batch = {k: torch.from_numpy(v[info.rank * rows : (info.rank + 1) * rows]) for k, v in full.items()}
for name in names:
    path = f"submissions/{name}/submission_torch.py"
    module_spec = importlib.util.spec_from_file_location(f"submission_{name}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    space = load_search_space(f"submissions/{name}/tuning_search_space.json")
    point = sample_points(space, 1, seed=0)[0]._replace(warmup_factor=0.0)
    workload = workloads.load("mnist", "pytorch")
    params, model_state = workload.init_model_fn(np_rng.prng_key(0))
    optimizer_state = module.init_optimizer_state(workload, params, model_state, point, None)
    for step in range(1, 5):
        optimizer_state, params, model_state = module.update_params(
            workload, params, None, model_state, point, batch, None, optimizer_state, [], step,
            None,
        )
    if info.rank == 0:
        flat = torch.cat([p.detach().flatten() for p in params.parameters()])
        np.save(f"{out_dir}/{name}_{info.world_size}.npy", flat.numpy())
shutdown_and_exit(0)
"""


@pytest.mark.slow
def test_torch_ddp_step_matches_one_process(tmp_path):
    """Two gloo ranks on half batches train like one process on the full batch: the loss sums
    are all-reduced before the division (SGD would show a wrong scale; NAdamW hides it)."""
    pytest.importorskip("torch")
    names = ["sgd_nesterov", "nadamw"]
    script = tmp_path / "ddp_steps.py"
    script.write_text(_DDP_SCRIPT)
    repo_root = SUBMISSIONS_DIR.parent
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    for world_size in (1, 2):
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += [f"--nproc_per_node={world_size}", str(script), str(tmp_path), *names]
        subprocess.run(
            command, cwd=repo_root, env=env, check=True, capture_output=True, timeout=300
        )
    for name in names:
        np.testing.assert_allclose(
            np.load(tmp_path / f"{name}_2.npy"),
            np.load(tmp_path / f"{name}_1.npy"),
            rtol=0,
            atol=1e-5,
            err_msg=name,
        )
