"""Train-step time per workload: PyTorch compiled and eager over JAX (jitted), on the CPU (or on
the GPU where there is one: both frameworks place the model and batch on their default device,
and a CUDA step is timed to its synchronisation).

A step is forward (the workload's `model_fn`, TRAIN mode), the workload's `loss_fn`, backward and
one AdamW step (lr 1e-3; torch.optim.AdamW / optax.adamw), on one cached `fake_batch` of the same
size in all three modes: PyTorch eager, PyTorch with the model (and `loss_fn` where the
workload's policy says so) under torch.compile as the runner compiles them, and JAX with the
whole step under jax.jit. Blocks of `--steps` steps of each mode alternate over `--rounds`
rounds (the order rotates) so drift and load from other processes hit all modes alike; medians
are compared. Warm-up steps (compilation) are not timed. Then the
ImageNet input pipeline's train images/s on a fixture JPEG tree with 2 DataLoader workers, and
fastMRI's train slices/s on release-size volumes (`--pipeline_only` for these lines alone).

Usage: .venv/bin/python scripts/bench_workloads.py [--workloads imagenet_resnet,imagenet_vit,...]
       [--batch 8] [--steps 5] [--rounds 3] [--image_size 64] [--pipeline_batches 20] [--threads 1]
       [--eval_batch 256]  (eval time of the validation split over one v1.0 eval period)
Prints one line per workload (ms/step of each mode and the ratios), then
`PyTorch compiled / JAX: <workload> X.XX ...` (the headline), then the pipeline line.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import pathlib
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping
from typing import Any

# Compile in this process: inductor's pool of compile workers starts (and imports torch) in the
# background after the first compile and would steal the CPUs from the first timed steps.
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
ROOT = pathlib.Path(__file__).resolve().parents[1]
LEARNING_RATE = 1e-3
MODES = ("torch_compiled", "torch_eager", "jax")


@dataclasses.dataclass(frozen=True)
class Case:
    """How to bench one workload; add a line to CASES for a new one."""

    name: str
    pipeline: str
    """Module with `fake_batch(batch_size, layout=, seed=[, image_size=])`."""
    takes_image_size: bool = False
    """Whether the workload's constructor and fake_batch take `image_size` (ImageNet, fastMRI)."""
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Pipeline options for the workload and its fake_batch (e.g. a shorter sequence)."""
    model_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Overrides of the spec's model_kwargs, where the full-size model is too large for a CPU."""


LM_SHRUNK = {"num_layers": 4, "emb_dim": 256, "num_heads": 4, "mlp_dim": 1_024, "seq_len": 256}
"""finewebedu_lm on a CPU: 4 blocks of d 256 (4 heads of 64, GLU 1,024) on windows of 256
tokens, with the real 50,257-token vocabulary and output layer; the full model (12 x d 1,024 on
1,024 tokens) needs ~1.7 TFLOP per window."""
WMT_SHRUNK = {"emb_dim": 256, "num_heads": 4, "mlp_dim": 256, "num_layers": 6, "vocab_size": 8_192}
"""wmt on a CPU: the full model's 6+6 layers and proportions at a quarter of its width (d 256,
4 heads of 64, FFN 256 = d) on rows of 64 ids (length / width 1/4, as 256 / 1,024) with an
8,192-id vocabulary (the output layer a third of the layers' work, as 32,000 x 1,024 is); the
full model needs ~1.5 TFLOP per train row of 256 + 256 ids."""
CASES = {
    case.name: case
    for case in (
        Case("mnist", "algoperf.workloads.mnist.input_pipeline"),
        Case("cifar", "algoperf.workloads.cifar.input_pipeline"),
        Case("imagenet_resnet", "algoperf.workloads.imagenet.input_pipeline", True),
        Case("imagenet_vit", "algoperf.workloads.imagenet.input_pipeline", True),
        Case("ogbg", "algoperf.workloads.ogbg.input_pipeline"),
        Case("fastmri", "algoperf.workloads.fastmri.input_pipeline", True),
        Case(
            "finewebedu_lm",
            "algoperf.workloads.finewebedu_lm.input_pipeline",
            options={"seq_len": LM_SHRUNK["seq_len"]},
            model_kwargs=LM_SHRUNK,
        ),
        Case(
            "wmt",
            "algoperf.workloads.wmt.input_pipeline",
            options={"max_len": 64, "vocab_size": WMT_SHRUNK["vocab_size"]},
            model_kwargs=WMT_SHRUNK,
        ),
    )
}
DEFAULT_WORKLOADS = "imagenet_resnet,imagenet_vit,mnist,cifar"


def numpy_batch(case: Case, batch_size: int, layout: str, image_size: int) -> dict:
    pipeline = importlib.import_module(case.pipeline)
    options = {"image_size": image_size} if case.takes_image_size else {}
    return pipeline.fake_batch(batch_size, layout=layout, seed=0, **options, **case.options)


def load(case: Case, framework: str, image_size: int):
    from algoperf import workloads

    options = {"image_size": image_size} if case.takes_image_size else {}
    model_kwargs = dict(case.model_kwargs) or None
    return workloads.load(
        case.name, framework, model_kwargs=model_kwargs, **options, **case.options
    )


def torch_stepper(case: Case, args, compiled: bool):
    """A function that runs one PyTorch train step (eager or with a compiled model)."""
    import torch

    from algoperf import rng as np_rng
    from algoperf import spec
    from algoperf.torch.workload import to_torch

    workload = load(case, "pytorch", args.image_size)
    model, model_state = workload.init_model_fn(np_rng.prng_key(0))
    params = torch.compile(model) if compiled else model
    # loss_fn too where the workload's policy says so, as the runner compiles it.
    loss_fn = (
        torch.compile(workload.loss_fn)
        if compiled and workload.spec.compile_loss
        else workload.loss_fn
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    device = next(model.parameters()).device  # the workload's: a GPU where there is one
    batch = to_torch(numpy_batch(case, args.batch, "NCHW", args.image_size), device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        logits, _ = workload.model_fn(
            params, batch, model_state, spec.ForwardPassMode.TRAIN, None, True,
            args.dropout_rate,
        )  # fmt: skip
        losses = loss_fn(batch["targets"], logits, batch["weights"])
        (losses["summed"] / losses["n_valid_examples"]).backward()
        optimizer.step()
        synchronize(device)

    return step


def jax_stepper(case: Case, args):
    """A function that runs one jitted JAX train step (params and optimizer state carried)."""
    import jax
    import optax

    from algoperf import spec
    from algoperf.jax import sharding

    workload = load(case, "jax", args.image_size)
    params, model_state = workload.init_model_fn(jax.random.PRNGKey(0))
    optimizer = optax.adamw(LEARNING_RATE)
    batch = sharding.shard_local_batch(numpy_batch(case, args.batch, "NHWC", args.image_size))

    def train_step(params, optimizer_state, model_state, batch, rng):
        def loss(params):
            logits, new_state = workload.model_fn(
                params, batch, model_state, spec.ForwardPassMode.TRAIN, rng, True,
                args.dropout_rate,
            )  # fmt: skip
            losses = workload.loss_fn(batch["targets"], logits, batch["weights"])
            return losses["summed"] / losses["n_valid_examples"], new_state

        (_, new_state), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, optimizer_state = optimizer.update(grads, optimizer_state, params)
        return optax.apply_updates(params, updates), optimizer_state, new_state

    jitted = jax.jit(train_step, donate_argnums=(0, 1))
    carried = [params, optimizer.init(params), model_state]
    rng = jax.random.PRNGKey(1)

    def step():
        carried[:] = jitted(*carried, batch, rng)
        jax.block_until_ready(carried[0])

    return step


def torch_eval_seconds(case: Case, args) -> float:
    """Median seconds of one eval batch (`--eval_batch` examples) through the compiled model:
    the runner's per-batch eval computation (`_eval_compute`: model_fn in EVAL mode and
    eval_outputs, and wmt's beam search, which on a fake batch and an untrained model runs
    every position: no early exit)."""
    import torch

    from algoperf import rng as np_rng
    from algoperf.torch.workload import to_torch

    workload = load(case, "pytorch", args.image_size)
    model, model_state = workload.init_model_fn(np_rng.prng_key(0))
    params = torch.compile(model)
    if workload.spec.compile_loss:  # as the runner: eval_outputs may call the workload's loss_fn
        workload.loss_fn = torch.compile(workload.loss_fn)
    device = next(model.parameters()).device
    batch = to_torch(numpy_batch(case, args.eval_batch, "NCHW", args.image_size), device)

    compute = workload._eval_compute(params, model_state, None)

    def step():
        compute(batch)
        synchronize(device)

    timed(step, args.warmup)
    return statistics.median(timed(step, args.steps))


def eval_cost(case: Case, args, train_step_sec: float) -> str:
    """Eval time of the validation split over the train time of one v1.0 eval period, both
    from this machine's per-example times (PyTorch compiled), so the ratio carries over to other
    hardware as far as eval and train scale alike:

      ratio = num_validation * t_eval / (steps_per_period * reference_batch * t_train)

    with steps_per_period = step_hint * eval_period / budget (v1.0's constants: the steps the
    reference trains in one period) and reference_batch the reference submissions' batch.
    Runner evals also cover eval_train and test (x3 for most workloads)."""
    from algoperf import workloads
    from algoperf.submissions.common import batch_sizes

    workload_spec = workloads.get_spec(case.name)
    budget = workload_spec.budget("v1.0")
    steps_per_period = (
        budget.step_hint * budget.eval_period_time_sec / budget.max_allowed_runtime_sec
    )
    reference_batch = batch_sizes.get_batch_size(workload_spec.base)
    t_train = train_step_sec / args.batch
    t_eval = torch_eval_seconds(case, args) / args.eval_batch
    validation = workload_spec.num_validation_examples
    ratio = validation * t_eval / (steps_per_period * reference_batch * t_train)
    return (
        f"{case.name:16} eval cost (v1.0 period {budget.eval_period_time_sec} s = "
        f"{steps_per_period:.0f} steps of {reference_batch}): validation "
        f"{validation:,} x {t_eval * 1e6:.1f} us vs train {t_train * 1e6:.1f} us/example: "
        f"eval/period {ratio:.3f}{host_metric_cost(case, workload_spec, budget)}"
    )


def host_metric_cost(case: Case, workload_spec, budget) -> str:
    """The host-side part of a gathered metric on the whole validation split (numpy, on the
    CPU in a real run too), over the eval period's wall time."""
    if workload_spec.base != "ogbg":
        return ""
    import numpy as np

    from algoperf.workloads.ogbg.metrics import mean_average_precision

    rng = np.random.default_rng(0)
    shape = (workload_spec.num_validation_examples, 128)
    logits = rng.normal(size=shape)
    targets = (rng.random(shape) < 0.014).astype(np.float32)  # molpcba's ~1.4% positives
    weights = (rng.random(shape) < 0.9).astype(np.float32)
    start = time.perf_counter()
    mean_average_precision(logits, targets, weights)
    seconds = time.perf_counter() - start
    return (
        f"; host mAP on {shape[0]:,} graphs {seconds:.2f} s = "
        f"{seconds / budget.eval_period_time_sec:.4f} of the period"
    )


def synchronize(device) -> None:
    """A CUDA step is timed to its end, not to its launch."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def bench_workload(case: Case, args) -> dict[str, float]:
    """Median seconds per step of each mode."""
    steppers = {
        "torch_compiled": torch_stepper(case, args, compiled=True),
        "torch_eager": torch_stepper(case, args, compiled=False),
        "jax": jax_stepper(case, args),
    }
    for step in steppers.values():
        timed(step, args.warmup)  # compilation, allocator, caches
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for index in range(args.rounds):
        order = MODES[index % len(MODES) :] + MODES[: index % len(MODES)]
        for mode in order:
            times[mode] += timed(steppers[mode], args.steps)
    return {mode: statistics.median(values) for mode, values in times.items()}


def bench_pipeline(args) -> str:
    """Train images/s of the ImageNet pipeline (2 workers) on a fixture JPEG tree."""
    sys.path.insert(0, str(ROOT / "tests"))
    import imagenet_fixture

    from algoperf.data.sharding import Shard
    from algoperf.workloads.imagenet import input_pipeline

    classes = per_class = imagenet_fixture.MAX_CLASSES
    with tempfile.TemporaryDirectory() as folder:
        data_dir = imagenet_fixture.make_imagenet_tree(
            folder, num_classes=classes, per_class=per_class, size=args.fixture_jpeg_size
        )
        options = input_pipeline.Options(image_size=args.image_size, num_workers=2)
        pipeline = input_pipeline.Pipeline(options, layout="NCHW")
        splits = pipeline.load(str(data_dir))
        stream = pipeline.train_batches(splits, args.batch, seed=0, shard=Shard(0, 1))
        for _ in range(3):  # worker start-up and the first prefetches
            next(stream)
        start = time.perf_counter()
        for _ in range(args.pipeline_batches):
            next(stream)
        seconds = time.perf_counter() - start
    images = args.pipeline_batches * args.batch
    return (
        f"imagenet pipeline, 2 workers, {classes * per_class} fixture JPEGs of "
        f"~{args.fixture_jpeg_size} px (flat colours: faster to decode than photos) -> "
        f"{args.image_size} px: {images / seconds:.0f} train images/s"
    )


def bench_fastmri_pipeline(args) -> str:
    """Train slices/s of the fastMRI pipeline on release-size volumes (k-space 640 x 368,
    complex64; random values: h5 reading and the FFT cost the same for any content), in the
    main process and with 2 loader workers."""
    import h5py
    import numpy as np

    from algoperf.data.sharding import Shard
    from algoperf.workloads.fastmri import input_pipeline, prepare

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        root = pathlib.Path(folder) / "fastmri"
        for split, names in (("train", range(4)), ("val", range(4, 6))):
            (root / f"knee_singlecoil_{split}").mkdir(parents=True)
            for index in names:
                shape = (8, 640, 368)
                kspace = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * 1e-5
                with h5py.File(root / f"knee_singlecoil_{split}/file{index:04d}.h5", "w") as f:
                    f.create_dataset("kspace", data=kspace.astype(np.complex64))
                    f.create_dataset("reconstruction_esc", data=np.ones((8, 320, 320), "f4"))
                    f.attrs["max"] = 1.0
        prepare.prepare(folder, None, expected_counts=None, num_validation_files=1, log=print)
        rates = []
        for workers in (0, 2):
            options = input_pipeline.Options(image_size=args.image_size, num_workers=workers)
            pipeline = input_pipeline.Pipeline(options, layout="NCHW")
            splits = pipeline.load(folder)
            stream = pipeline.train_batches(splits, args.batch, seed=0, shard=Shard(0, 1))
            for _ in range(3):  # worker start-up, h5 files opened, the first prefetches
                next(stream)
            start = time.perf_counter()
            for _ in range(args.pipeline_batches):
                next(stream)
            rates.append(args.pipeline_batches * args.batch / (time.perf_counter() - start))
    return (
        f"fastmri pipeline, 640x368 k-space -> {args.image_size} px: {rates[0]:.0f} train "
        f"slices/s in the main process, {rates[1]:.0f} with 2 workers"
    )


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=DEFAULT_WORKLOADS, help="comma-separated names")
    parser.add_argument("--batch", type=int, default=8, help="global batch size of every case")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per block")
    parser.add_argument("--rounds", type=int, default=3, help="alternating blocks per mode")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per mode first")
    parser.add_argument(
        "--image_size",
        type=int,
        default=64,
        help="ImageNet and fastMRI side in pixels (mnist/cifar fixed)",
    )
    parser.add_argument("--pipeline_batches", type=int, default=20, help="0 skips the pipeline")
    parser.add_argument(
        "--dropout_rate",
        type=float,
        default=None,
        help="the train step's dropout rate (default: the workload's; the reference "
        "submissions' first search-space points use 0.0)",
    )
    parser.add_argument(
        "--eval_batch",
        type=int,
        default=0,
        help="examples per eval batch for the eval-cost line (0: no eval cost)",
    )
    parser.add_argument("--fixture_jpeg_size", type=int, default=384)
    parser.add_argument(
        "--full_size",
        action="store_true",
        help="bench the workloads a CPU case shrinks (finewebedu_lm, wmt) at full size (a GPU's "
        "job)",
    )
    parser.add_argument(
        "--pipeline_only",
        action="store_true",
        help="only the input-pipeline lines (imagenet, fastmri), no train steps",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="intra-op threads of both frameworks (0: their defaults); 1 gives steadier ratios "
        "on a machine shared with other jobs (spinning thread pools slow down under load)",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.workloads.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        parser.error(f"--workloads: unknown {unknown or 'none given'}; choose from {list(CASES)}")
    for flag in ("batch", "steps", "rounds", "image_size", "fixture_jpeg_size"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be a positive whole number.")
    if args.warmup < 1 or args.pipeline_batches < 0 or args.threads < 0:
        parser.error("--warmup must be >= 1 (compilation); --pipeline_batches, --threads >= 0.")
    args.names = names
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:  # before torch and jax are imported
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        multi = "true" if args.threads > 1 else "false"
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_cpu_multi_thread_eigen={multi} intra_op_parallelism_threads={args.threads}"
        )
    from algoperf.process import configure_process

    configure_process("pytorch", "v1.0")
    configure_process("jax", "v1.0")
    warnings.filterwarnings("ignore")
    headline = []
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    for name in [] if args.pipeline_only else args.names:
        case = CASES[name]
        if args.full_size:
            case = dataclasses.replace(case, options={}, model_kwargs={})
        size = f"{args.image_size} px" if case.takes_image_size else "native size"
        if case.model_kwargs:
            size = "shrunk: " + ", ".join(f"{k} {v}" for k, v in case.model_kwargs.items())
        medians = bench_workload(case, args)
        compiled, eager, jax_time = (medians[m] for m in MODES)
        print(
            f"{name:16} batch {args.batch}, {size}: torch compiled {compiled * 1e3:8.2f} ms, "
            f"eager {eager * 1e3:8.2f} ms, jax {jax_time * 1e3:8.2f} ms per step; "
            f"compiled/jax {compiled / jax_time:.2f}, eager/jax {eager / jax_time:.2f}, "
            f"compiled/eager {compiled / eager:.2f}",
            flush=True,
        )
        headline.append(f"{name} {compiled / jax_time:.2f}")
        if args.eval_batch:
            print(eval_cost(case, args, compiled), flush=True)
    if headline:
        print("PyTorch compiled / JAX: " + ", ".join(headline), flush=True)
    if args.pipeline_batches and any(name.startswith("imagenet") for name in args.names):
        print(bench_pipeline(args), flush=True)
    if args.pipeline_batches and "fastmri" in args.names:
        print(bench_fastmri_pipeline(args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
