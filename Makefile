# The two quick-start commands: `make run` (train NAdamW on mnist) and `make test`.
.PHONY: install run test test-fast lint format bench

install:
	bash scripts/install.sh

run: install
	.venv/bin/algoperf run --overwrite

test: install
	.venv/bin/ruff check .
	.venv/bin/python -m pytest -q --durations=15

test-fast: install
	.venv/bin/python -m pytest -q -m "not slow"

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: install
	.venv/bin/ruff format .

bench: install
	.venv/bin/python scripts/bench_overhead.py
