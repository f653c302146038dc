#!/usr/bin/env bash
# Create .venv and install algoperf with the given extras
# (default: pytorch,jax,data,scoring,slurm,wandb,dev; slurm = submitit, which the launch tests use),
# at the exact versions of constraints.txt (the benchmark's stack; pyproject.toml has lower bounds).
# Usage: bash scripts/install.sh [EXTRAS]      e.g. bash scripts/install.sh all
# torchrec needs a second pip step with --no-deps (its fbgemm-gpu requirement is the CUDA
# build; the recsys extra brings fbgemm-gpu-cpu and the rest), done here when recsys is asked for.
# Nothing changed since the last install (pyproject.toml, setup.py, constraints.txt, extras):
# it exits at once.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-pytorch,jax,data,scoring,slurm,wandb,dev}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=".venv/.algoperf-installed-$(cat pyproject.toml setup.py constraints.txt | sha1sum | cut -c1-12)-${extras//,/-}"
if [ -f "$stamp" ]; then
  exit 0
fi
echo "[install] pip install -e .[${extras}] into .venv (about 2-3 minutes the first time)"
# (this machine's pip config names extra local indexes; pip warns about each missing one)
.venv/bin/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[${extras}]" \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
case ",${extras}," in
  *,recsys,*|*,all,*)
    echo "[install] torchrec (--no-deps)"
    .venv/bin/pip install --quiet --disable-pip-version-check --no-deps -c constraints.txt torchrec
    ;;
esac
rm -f .venv/.algoperf-installed-*
touch "$stamp"
