# Two commands on a fresh machine: `make demo` and `make test`. Everything installs into .venv.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOKENIZER := .cache/tokenizer/tokenizer.json

.PHONY: setup demo test test-fast lint bench airflow stop clean help

help:
	@echo "make demo   - set up and run the reference campaign on the local runtime (demo-sized params)"
	@echo "make test   - set up, lint, and run the whole test suite on every core (the timing tests alone after)"
	@echo "make test-fast - lint and tests/unit + tests/integration (no Airflow, browser or sweeps: those are tests/e2e), on every core"
	@echo "make lint   - ruff over plugins, dags, tests and benchmarks, mypy over the package, lint-imports (pyproject.toml)"
	@echo "make bench  - print the performance and judgement targets' numbers (about 150 minutes; keep the machine quiet)"
	@echo "make airflow - start a local Airflow UI on 127.0.0.1:8080 (local runtime); make stop stops it"

setup: $(STAMP) $(TOKENIZER)
	@bash scripts/system-deps.sh

$(STAMP): requirements.txt requirements-steps.txt requirements-dev.txt constraints.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3
	@# --no-compile: a module is compiled when first imported, and scripts/env.sh lets that compiled copy be kept
	@# (PYTHONDONTWRITEBYTECODE unset), so the set-up no longer compiles the thousands of modules nothing here imports
	$(BIN)/pip install --quiet --no-compile -r requirements.txt -r requirements-steps.txt -r requirements-dev.txt -c constraints.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $@

$(TOKENIZER): $(STAMP)
	$(BIN)/llmd-bench make-tokenizer --out .cache/tokenizer

demo: setup
	bash scripts/demo.sh

test:
	@# the MLflow tracking server's venv (.venv-mlflow, for tests/e2e/test_mlflow.py) builds on the second core while
	@# the set-up's pip keeps one busy; scripts/test.sh waits for it (its lock) and reports a failed build
	@bash scripts/mlflow-server-venv.sh > /dev/null 2>&1 &
	@$(MAKE) --no-print-directory setup
	bash scripts/test.sh

test-fast: setup
	bash scripts/test.sh tests/unit tests/integration -n auto

lint: setup
	$(BIN)/ruff check plugins dags tests benchmarks
	$(BIN)/python -m mypy
	$(BIN)/lint-imports

airflow: setup
	bash scripts/airflow.sh start

stop:
	bash scripts/airflow.sh stop

bench: setup
	$(BIN)/python benchmarks/targets.py
	$(BIN)/python benchmarks/store_targets.py $$(ls -t results/*/*/*/trial-1/guidellm_report.json 2>/dev/null | head -1)
	$(BIN)/python benchmarks/report_targets.py
	$(BIN)/python benchmarks/storage_targets.py
	$(BIN)/python benchmarks/noise_targets.py
	$(BIN)/python benchmarks/adaptive_targets.py
	$(BIN)/python benchmarks/reset_targets.py
	$(BIN)/python benchmarks/stall_targets.py
	$(BIN)/python benchmarks/busy_host_targets.py
	$(BIN)/python benchmarks/seeded_targets.py
	$(BIN)/python benchmarks/lanes_targets.py

clean:
	rm -rf .airflow results reports .cache/pg
