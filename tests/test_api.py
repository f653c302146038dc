"""The submission API matches upstream (docs/rules.md, "Submission API" and
"Upstream compatibility"), and submissions are
checked on load with one-line errors."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap

import pytest

from algoperf import spec
from algoperf.submission import SubmissionError, load_submission


def test_enums_match_upstream_values():
    assert {m.name: m.value for m in spec.LossType} == {
        "SOFTMAX_CROSS_ENTROPY": 0,
        "SIGMOID_CROSS_ENTROPY": 1,
        "MEAN_SQUARED_ERROR": 2,
        "CTC_LOSS": 3,
        "MEAN_ABSOLUTE_ERROR": 4,
    }
    assert {m.name: m.value for m in spec.ForwardPassMode} == {"TRAIN": 0, "EVAL": 1}
    names = [
        "WEIGHT",
        "BIAS",
        "CONV_WEIGHT",
        "BATCH_NORM_SCALE",
        "BATCH_NORM_BIAS",
        "LAYER_NORM_SCALE",
        "LAYER_NORM_BIAS",
        "EMBEDDING",
        "ATTENTION_Q",
        "ATTENTION_K",
        "ATTENTION_V",
        "ATTENTION_OUT",
        "ATTENTION_QKV",
        "ATTENTION_KV",
        "ATTENTION_BIAS",
    ]
    assert [m.name for m in spec.ParameterType] == names
    assert [m.value for m in spec.ParameterType] == list(range(15))


def test_spec_has_the_names_submissions_import():
    for name in (
        "Workload",
        "LossType",
        "ForwardPassMode",
        "ParameterType",
        "ShapeTuple",
        "TrainingCompleteError",
        "ParameterContainer",
        "ParameterTypeTree",
        "ModelAuxiliaryState",
        "OptimizerState",
        "Hyperparameters",
        "RandomState",
        "Tensor",
        "UpdateReturn",
        "ModelInitState",
        "Shape",
        "ParameterShapeTree",
        "ParameterKey",
        "Seed",
        "Timing",
        "Steps",
    ):
        assert hasattr(spec, name), name
    assert spec.ShapeTuple((2, 3)).shape_tuple == (2, 3)


def test_submission_function_signatures_match_upstream():
    expected = {
        "init_optimizer_state": [
            "workload",
            "model_params",
            "model_state",
            "hyperparameters",
            "rng",
        ],
        "update_params": [
            "workload",
            "current_param_container",
            "current_params_types",
            "model_state",
            "hyperparameters",
            "batch",
            "loss_type",
            "optimizer_state",
            "eval_results",
            "global_step",
            "rng",
            "train_state",
        ],
        "prepare_for_eval": [
            "workload",
            "current_param_container",
            "current_params_types",
            "model_state",
            "hyperparameters",
            "loss_type",
            "optimizer_state",
            "eval_results",
            "global_step",
            "rng",
        ],
        "data_selection": [
            "workload",
            "input_queue",
            "optimizer_state",
            "current_param_container",
            "model_state",
            "hyperparameters",
            "global_step",
            "rng",
        ],
        "get_batch_size": ["workload_name"],
    }
    for name, params in expected.items():
        assert list(inspect.signature(getattr(spec, name)).parameters) == params, name


def test_workload_interface_methods():
    signature = inspect.signature(spec.Workload.model_fn)
    assert list(signature.parameters) == [
        "self",
        "params",
        "augmented_and_preprocessed_input_batch",
        "model_state",
        "mode",
        "rng",
        "update_batch_norm",
        "dropout_rate",
    ]
    assert list(inspect.signature(spec.Workload.loss_fn).parameters) == [
        "self",
        "label_batch",
        "logits_batch",
        "mask_batch",
        "label_smoothing",
    ]
    assert list(inspect.signature(spec.Workload._build_input_queue).parameters) == [
        "self",
        "data_rng",
        "split",
        "data_dir",
        "global_batch_size",
        "cache",
        "repeat_final_dataset",
        "num_batches",
    ]
    for name in (
        "target_metric_name",
        "validation_target_value",
        "test_target_value",
        "loss_type",
        "num_train_examples",
        "num_eval_train_examples",
        "num_validation_examples",
        "num_test_examples",
        "eval_batch_size",
        "max_allowed_runtime_sec",
        "eval_period_time_sec",
        "step_hint",
        "param_shapes",
        "model_params_types",
    ):
        assert isinstance(getattr(spec.Workload, name), property), name


def test_spec_and_core_import_no_framework():
    code = (
        "import sys, algoperf.spec, algoperf.loop, algoperf.trial, algoperf.search_space, "
        "algoperf.cli.main, algoperf.submission, workloads;"
        "assert 'torch' not in sys.modules and 'jax' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


VALID = """
def get_batch_size(workload_name): return 8
def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng): return {}
def update_params(workload, current_param_container, current_params_types, model_state,
                  hyperparameters, batch, loss_type, optimizer_state, eval_results, global_step,
                  rng, train_state=None):
    return optimizer_state, current_param_container, model_state
def prepare_for_eval(workload, current_param_container, current_params_types, model_state,
                     hyperparameters, loss_type, optimizer_state, eval_results, global_step, rng):
    return optimizer_state, current_param_container, model_state
def data_selection(workload, input_queue, optimizer_state, current_param_container, model_state,
                   hyperparameters, global_step, rng):
    return next(input_queue)
"""


def write(tmp_path, source, name="submission.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


def test_valid_submission_loads(tmp_path):
    submission = load_submission(write(tmp_path, VALID))
    assert submission.update_params_takes_train_state
    assert submission.prepare_for_eval is not None and submission.get_eval_batch_size is None


def test_missing_function_is_rejected_with_its_name(tmp_path):
    source = VALID.replace("def update_params(", "def update_parameters(")
    with pytest.raises(SubmissionError, match="`update_params` is missing") as info:
        load_submission(write(tmp_path, source))
    assert "\n" not in str(info.value)


def test_wrong_arity_is_rejected(tmp_path):
    source = VALID.replace("def get_batch_size(workload_name)", "def get_batch_size()")
    with pytest.raises(SubmissionError, match="`get_batch_size` must accept 1 positional"):
        load_submission(write(tmp_path, source))


def test_optional_prepare_for_eval_may_be_absent(tmp_path):
    source = (
        VALID.split("def prepare_for_eval")[0]
        + "def data_selection"
        + VALID.split("def data_selection")[1]
    )
    assert load_submission(write(tmp_path, source)).prepare_for_eval is None


def test_import_error_is_reported(tmp_path):
    with pytest.raises(SubmissionError, match="ModuleNotFoundError"):
        load_submission(write(tmp_path, "import not_a_real_package_xyz\n" + VALID))


def test_not_a_python_file(tmp_path):
    with pytest.raises(SubmissionError, match="not a .py file"):
        load_submission(tmp_path / "missing.py")


def test_submission_may_import_its_siblings(tmp_path):
    (tmp_path / "helper_mod_for_test.py").write_text("BATCH = 24\n")
    source = "from helper_mod_for_test import BATCH\n" + VALID.replace("return 8", "return BATCH")
    assert load_submission(write(tmp_path, source)).get_batch_size("mnist") == 24


def test_pytorch_setup_reads_torchrun_env(monkeypatch):
    from algoperf.pytorch_utils import pytorch_setup

    for key in ("LOCAL_RANK", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    use_ddp, rank, device, n_gpus = pytorch_setup()
    assert (use_ddp, rank, n_gpus) == (False, 0, 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    use_ddp, rank, device, n_gpus = pytorch_setup()
    assert (use_ddp, rank, n_gpus) == (True, 1, 2)


def test_jax_sharding_utils_names():
    from algoperf import jax_sharding_utils as jsu

    for name in (
        "get_replicate_sharding",
        "get_batch_dim_sharding",
        "shard_along_batch_dim",
        "replicate",
        "display_shard_info",
    ):
        assert callable(getattr(jsu, name))
    import numpy as np

    x = jsu.shard_along_batch_dim(np.ones((4, 2), np.float32))
    assert x.shape == (4, 2)
