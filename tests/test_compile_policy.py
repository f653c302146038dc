"""The workload's compile policy (docs/workloads.md, compile policy): model and loss_fn."""

from __future__ import annotations

import torch

from algoperf import workloads
from algoperf.backend import get_backend


def _compiled(fn) -> bool:
    return hasattr(fn, "_torchdynamo_orig_callable")


def test_compile_loss_policy_compiles_the_workload_loss_fn():
    backend = get_backend("pytorch")
    vit = workloads.load("imagenet_vit", "pytorch")  # v1.0 policy: model and loss compiled
    assert vit.spec.compile_loss and vit.spec.compile_model
    plain_loss = vit.loss_fn
    model = torch.nn.Linear(4, 10)
    assert _compiled(backend.prepare_model(vit, model, compile_model=True))
    assert _compiled(vit.loss_fn)
    logits = torch.randn(6, 10)
    soft = torch.softmax(torch.randn(6, 10), -1)
    for labels in (torch.arange(6) % 10, soft):
        got = vit.loss_fn(labels, logits, torch.ones(6), label_smoothing=0.1)["summed"]
        want = plain_loss(labels, logits, torch.ones(6), label_smoothing=0.1)["summed"]
        torch.testing.assert_close(got, want)
    backend.prepare_model(vit, model, compile_model=True)  # a second trial: not wrapped twice
    assert not _compiled(vit.loss_fn._torchdynamo_orig_callable)


def test_loss_stays_eager_without_the_policy_or_with_compile_off():
    backend = get_backend("pytorch")
    mnist = workloads.load("mnist", "pytorch")
    assert not mnist.spec.compile_loss
    compiled_model = backend.prepare_model(mnist, torch.nn.Linear(2, 2), compile_model=True)
    assert _compiled(compiled_model) and not _compiled(mnist.loss_fn)
    vit = workloads.load("imagenet_vit", "pytorch")
    backend.prepare_model(vit, torch.nn.Linear(2, 2), compile_model=False)
    assert not _compiled(vit.loss_fn)
