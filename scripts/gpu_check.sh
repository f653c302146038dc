#!/usr/bin/env bash
# GPU checks that CPU CI cannot make, for a machine with ONE NVIDIA GPU (about 8 minutes, plus up
# to 35 for the full-size steps I to K):
#   A  checkpoint/resume parity on CUDA (tests/test_resume.py: pytorch and jax, deterministic)
#   B  the DDP code path on NCCL (scripts/ddp_one_rank.py, world size 1) gives the same eval rows
#      as a plain process, deterministic eager mnist
#   C  torchrun with 2 processes on 1 GPU ends with the one-line "no GPU of its own" error
#   D  compiled DDP (NCCL) cifar trains and evaluates
#   E  `make run`'s job on the GPU (offline real MNIST sample, compiled, its 60 s budget)
#   F  scripts/bench_dataloader.py at 1 process (the live loader's cost against a cached batch)
#   G  library use on CUDA: examples/plain_pytorch_loop.py (pinned device batches, evaluate)
#   H  ogbg's full-size GNN on its fixture: ms/step PyTorch compiled, eager and JAX (steps
#      101-200 of each run's submission time), so compiled/eager and PyTorch/JAX on a GPU
#   I  fastmri's full-size U-Net at 320x320, 8 slices per step: ms/step PyTorch compiled, eager
#      and JAX (scripts/bench_workloads.py on the GPU) and the eval-cost line
#   J  finewebedu_lm at full size in bfloat16 (8 windows of 1,024 tokens per step): ms/step
#      PyTorch compiled, eager and JAX, the eval-cost line; then the peak memory of the compiled
#      PyTorch step at the reference 16 windows per GPU (the README's estimate: ~23 GiB)
#   K  wmt at full size (16 packed rows of 256 + 256 ids per step): ms/step PyTorch compiled,
#      eager and JAX, the eval-cost line (beam search over all 256 positions: an untrained
#      model); then the peak memory of the compiled PyTorch step at the reference 32 rows per
#      GPU (the README's estimate: ~19 GiB)
# Usage: bash scripts/gpu_check.sh [OUT_DIR]   (log in OUT_DIR/log.txt; default /tmp/gpu_check)
# Needs python3 with torch (CUDA), jax and the project's dependencies; wheels of any missing
# pure-python ones (torchdata, mlxtend) can sit in .devcheck/whl/ and are installed first.
# Every step has its own timeout, so one hang does not hide the rest; read the log's [rc=...]
# lines and the "identical" line.
out="${1:-${OUT:-/tmp/gpu_check}}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore PYTHONPATH=$PWD
exec > >(tee -a "$out/log.txt") 2>&1
t() { local s=$SECONDS; timeout "$@"; echo "[rc=$? in $((SECONDS - s)) s: ${*:2:6}]"; }
if compgen -G ".devcheck/whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-cache-dir .devcheck/whl/*.whl 2>&1 | tail -2
fi
nvidia-smi -L
python3 -c "import torch, jax; print('torch', torch.__version__, torch.cuda.is_available(), 'jax', jax.__version__, jax.devices())"
python3 -c "import pathlib; from algoperf.workloads.mnist.input_pipeline import write_random_files as w; w(pathlib.Path('/tmp/rand/mnist'))"
exp=/tmp/gpu_check_exp
common=(--download false --progress false --experiment_dir "$exp" --overwrite)
det=(--data_dir /tmp/rand --rng_seed 3 --max_global_steps 300 --eval_every_steps 100 --deterministic --torch_compile false)

echo "== A: resume tests on the GPU (in the background)"
(timeout 400 python3 -m pytest -q -x -p no:cacheprovider tests/test_resume.py tests/test_process_settings.py >/tmp/gpu_check_resume.txt 2>&1
  echo "[resume rc=$?]" >>/tmp/gpu_check_resume.txt) &
resume_pid=$!

echo "== B: plain process vs 1-rank NCCL DDP, deterministic eager mnist, same seed"
t 120 python3 -m algoperf run "${common[@]}" "${det[@]}" --experiment_name plain 2>&1 | tail -3
t 120 torchrun --standalone --nproc_per_node=1 scripts/ddp_one_rank.py run "${common[@]}" "${det[@]}" \
  --experiment_name ddp 2>&1 | grep -v "^[WI][0-9]" | tail -4
python3 - "$exp" <<'PY'
import csv, sys
def rows(name):
    with open(f"{sys.argv[1]}/{name}/mnist_pytorch/trial_1/eval_measurements.csv") as handle:
        return [{k: v for k, v in r.items() if k.startswith(("train/", "validation/", "test/"))
                 or k == "global_step"} for r in csv.DictReader(handle)]
plain, ddp = rows("plain"), rows("ddp")
print("plain", plain[-1]); print("ddp  ", ddp[-1])
print(f"B identical eval rows: {plain == ddp} ({len(plain)} and {len(ddp)} rows)")
PY

echo "== C: torchrun --nproc_per_node=2 on one GPU (expect the one-line error, rc != 0)"
t 90 torchrun --standalone --nproc_per_node=2 -m algoperf run "${common[@]}" "${det[@]}" \
  --experiment_name two 2>&1 | grep "error" | grep -v "^[WI][0-9]" | head -3

echo "== D: compiled 1-rank NCCL DDP, cifar on random data"
python3 -c "import pathlib, sys; sys.path.insert(0, 'scripts'); from bench_dataloader import write_cifar_files as w; w(pathlib.Path('/tmp/rand/cifar10/cifar-10-batches-py'))"
t 150 torchrun --standalone --nproc_per_node=1 scripts/ddp_one_rank.py run --workload cifar \
  --data_dir /tmp/rand --rng_seed 3 --max_global_steps 200 --eval_every_steps 100 "${common[@]}" \
  --experiment_name cifar 2>&1 | grep -v "^[WI][0-9]" | tail -3
cut -c1-300 "$exp/cifar/cifar_pytorch/trial_1/eval_measurements.csv"
wait "$resume_pid"  # (a bare wait would also wait for the tee above, forever)
echo "== A result"; tail -12 /tmp/gpu_check_resume.txt

echo "== E: make run's job on the GPU (offline real sample, compiled, 60 s budget)"
t 120 python3 -m algoperf run "${common[@]}" --data_dir /tmp/gpu_check_nodata --experiment_name real 2>&1 | tail -3
cut -c1-300 "$exp/real/mnist_pytorch/trial_1/eval_measurements.csv" | sed -n '1p;$p'

echo "== F: loader bench, 1 process on the GPU"
t 150 python3 scripts/bench_dataloader.py --processes 1 --repeats 1

echo "== G: library use on the GPU (examples/plain_pytorch_loop.py, offline mnist sample)"
t 120 python3 examples/plain_pytorch_loop.py --steps 300 --data_dir /tmp/gpu_check_nodata 2>&1 | tail -2

echo "== H: ogbg full-size GNN on the GPU (fixture graphs, batch 512): compiled, eager, JAX"
python3 -c "import pathlib; from algoperf.workloads.ogbg import fixture; fixture.write_fixture(pathlib.Path('/tmp/rand/ogbg'))"
ogbg=(--workload ogbg --data_dir /tmp/rand/ogbg --rng_seed 3 --max_global_steps 200 --eval_every_steps 100 "${common[@]}")
t 240 python3 -m algoperf run "${ogbg[@]}" --experiment_name ogbg_compiled 2>&1 | tail -1
t 180 python3 -m algoperf run "${ogbg[@]}" --torch_compile false --experiment_name ogbg_eager 2>&1 | tail -1
t 240 python3 -m algoperf run "${ogbg[@]}" --framework jax --experiment_name ogbg_jax 2>&1 | tail -1
python3 - "$exp" <<'PY'
import csv, sys
def ms_per_step(name, framework):
    path = f"{sys.argv[1]}/{name}/ogbg_{framework}/trial_1/eval_measurements.csv"
    with open(path) as handle:
        rows = {int(r["global_step"]): float(r["accumulated_submission_time"]) for r in csv.DictReader(handle)}
    return (rows[200] - rows[101]) / 99 * 1e3
compiled, eager, jax = (ms_per_step(n, f) for n, f in
                        (("ogbg_compiled", "pytorch"), ("ogbg_eager", "pytorch"), ("ogbg_jax", "jax")))
print(f"H ogbg ms/step: compiled {compiled:.2f}, eager {eager:.2f}, jax {jax:.2f}; "
      f"compiled/eager {compiled / eager:.2f}, compiled/jax {compiled / jax:.2f}")
PY

echo "== I: fastmri full-size U-Net on the GPU (320x320, batch 8): compiled, eager, JAX, eval cost"
t 400 python3 scripts/bench_workloads.py --workloads fastmri --image_size 320 --batch 8 \
  --steps 10 --rounds 3 --pipeline_batches 0 --eval_batch 32 2>&1 | grep -v "^[WI][0-9]" | tail -4

echo "== J: finewebedu_lm full size on the GPU (bf16): compiled, eager, JAX at 8 windows; memory at 16"
# JAX allocates as it needs (no 75% preallocation) so the three modes share the GPU.
XLA_PYTHON_CLIENT_PREALLOCATE=false t 500 python3 scripts/bench_workloads.py \
  --workloads finewebedu_lm --full_size --batch 8 --steps 5 --rounds 2 --pipeline_batches 0 \
  --eval_batch 16 2>&1 | grep -v "^[WI][0-9]" | tail -4
t 300 python3 - <<'PY'
import torch
from algoperf import rng, spec, workloads
from algoperf.process import configure_process
from algoperf.torch.workload import to_torch

configure_process("pytorch", "v1.0")
workload = workloads.load("finewebedu_lm", "pytorch")
model, _ = workload.init_model_fn(rng.prng_key(0))
compiled, loss_fn = torch.compile(model), torch.compile(workload.loss_fn)  # as the runner
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
batch = to_torch(workload.fake_batch(16), next(model.parameters()).device)
for _ in range(3):
    optimizer.zero_grad(set_to_none=True)
    logits, _ = workload.model_fn(compiled, batch, None, spec.ForwardPassMode.TRAIN, None, True)
    out = loss_fn(batch["targets"], logits, batch["weights"], 0.1)
    loss = out["summed"] / out["n_valid_examples"]
    loss.backward()
    optimizer.step()
peak = torch.cuda.max_memory_allocated() / 2**30
print(f"J finewebedu_lm compiled train step, 16 x 1,024 tokens: peak {peak:.2f} GiB, "
      f"loss {loss.item():.3f} (ln 50,257 = 10.83 at init)")
PY

echo "== K: wmt full size on the GPU: compiled, eager, JAX at 16 rows, eval cost; memory at 32"
XLA_PYTHON_CLIENT_PREALLOCATE=false t 600 python3 scripts/bench_workloads.py \
  --workloads wmt --full_size --batch 16 --steps 5 --rounds 2 --pipeline_batches 0 \
  --eval_batch 32 2>&1 | grep -v "^[WI][0-9]" | tail -4
t 300 python3 - <<'PY'
import torch
from algoperf import rng, spec, workloads
from algoperf.process import configure_process
from algoperf.torch.workload import to_torch

configure_process("pytorch", "v1.0")
workload = workloads.load("wmt", "pytorch")
model, _ = workload.init_model_fn(rng.prng_key(0))
compiled, loss_fn = torch.compile(model), torch.compile(workload.loss_fn)  # as the runner
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
batch = to_torch(workload.fake_batch(32), next(model.parameters()).device)
for _ in range(3):
    optimizer.zero_grad(set_to_none=True)
    logits, _ = workload.model_fn(compiled, batch, None, spec.ForwardPassMode.TRAIN, None, True)
    out = loss_fn(batch["targets"], logits, batch["weights"], 0.1)
    loss = out["summed"] / out["n_valid_examples"]
    loss.backward()
    optimizer.step()
peak = torch.cuda.max_memory_allocated() / 2**30
print(f"K wmt compiled train step, 32 packed rows: peak {peak:.2f} GiB, loss {loss.item():.3f}")
PY
