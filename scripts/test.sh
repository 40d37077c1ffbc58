#!/usr/bin/env bash
# `make test`: the whole suite against real components (GuideLLM, mock servers, Redis/Valkey, Airflow), on every
# core; with arguments (`make test-fast`, or by hand) it runs pytest with them instead.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
mkdir -p test-artifacts
# lint first: a red lint fails the run like a failed test (rules in pyproject.toml)
ruff check plugins dags tests benchmarks
# layers: the package imports downwards only, with no cycles (contracts in pyproject.toml [tool.importlinter])
lint-imports
# types: mypy over the package and the DAGs (settings and the files it checks in pyproject.toml [tool.mypy]), in the
# background beside the tests (about 45 s of one core from an empty cache); a type error fails the run all the same
logs="$(mktemp -d)"
python -m mypy > "$logs/mypy.log" 2>&1 &
mypy_pid=$!
status=0
mypy_result() { wait "$mypy_pid" || status=$?; cat "$logs/mypy.log"; }
if [ $# -gt 0 ]; then
  pytest -p no:cacheprovider "$@" || status=$?
  mypy_result
  exit $status
fi
# The whole suite. Also in the background: the MLflow server's venv (scripts/mlflow-server-venv.sh; tests/e2e/test_mlflow.py
# waits for it on its lock). `make test` has started it beside the set-up already: this one then waits for that build,
# or builds it when the first failed or this script runs by hand.
bash scripts/mlflow-server-venv.sh > "$logs/mlflow-venv.log" 2>&1 &
mlflow_pid=$!
# the parallel pass over tests/unit, tests/integration and tests/e2e (a file's tests on one worker; the solo marker:
# tests/conftest.py), then the timing tests alone; all run whatever failed before them
# One worker more than the cores: the e2e tier waits on servers, sleeps and fixed-length levels, and a third worker on
# 2 cores fills those waits (parallel pass 690 -> 616 s, 2026-12-08); the timing tests still run alone (solo).
pytest -p no:cacheprovider -n "${LLMD_TEST_WORKERS:-$(( $(nproc) + 1 ))}" --dist loadfile --no-loadscope-reorder -m "not solo" || status=$?
mypy_result
wait "$mlflow_pid" || { status=1; echo "building the MLflow server's venv failed:"; cat "$logs/mlflow-venv.log"; }
pytest -p no:cacheprovider -m solo || status=$?
exit $status
