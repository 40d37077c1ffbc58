#!/usr/bin/env bash
# `make test`: the whole suite against real components (GuideLLM, mock servers, Redis/Valkey, Airflow), on every
# core; with arguments (`make test-fast`, or by hand) it runs pytest with them instead.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
mkdir -p test-artifacts
# lint first: a red lint fails the run like a failed test (rules in pyproject.toml)
ruff check plugins dags tests benchmarks
# types next: mypy over the package and the DAGs (settings and the files it checks in pyproject.toml [tool.mypy])
python -m mypy
# layers: the package imports downwards only, with no cycles (contracts in pyproject.toml [tool.importlinter])
lint-imports
if [ $# -gt 0 ]; then exec pytest -p no:cacheprovider "$@"; fi
# the parallel pass over tests/unit, tests/integration and tests/e2e (a file's tests on one worker; the solo marker:
# tests/conftest.py), then the timing tests alone;
# both always run
status=0
pytest -p no:cacheprovider -n "${LLMD_TEST_WORKERS:-auto}" --dist loadfile --no-loadscope-reorder -m "not solo" || status=$?
pytest -p no:cacheprovider -m solo || status=$?
exit $status
