#!/usr/bin/env bash
# `make test`: the whole suite against real components (GuideLLM, mock servers, Redis/Valkey, Airflow).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
mkdir -p test-artifacts
# lint first: a red lint fails the run like a failed test (rules in pyproject.toml)
ruff check plugins dags tests benchmarks
# types next: mypy over the package and the DAGs (settings and the files it checks in pyproject.toml [tool.mypy])
python -m mypy
exec pytest -p no:cacheprovider "$@"
