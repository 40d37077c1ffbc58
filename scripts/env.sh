# Environment for running this project's Airflow on the local runtime; sourced by the scripts.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export LLMD_BENCH_HOME="$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$ROOT/.airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$ROOT/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__UNIT_TEST_MODE=False
export AIRFLOW__LOGGING__LOGGING_LEVEL="${AIRFLOW__LOGGING__LOGGING_LEVEL:-INFO}"
export LLMD_BENCH_RUNTIME="${LLMD_BENCH_RUNTIME:-local}"
export HF_HUB_OFFLINE=1
# Python's default: the project's own modules are compiled once into __pycache__ (git-ignored). Where
# PYTHONDONTWRITEBYTECODE is set (as on this CI), every step, server and test worker process compiled them anew,
# and pytest rewrote every test module in every worker: make test-fast took 142 s instead of 124 s.
unset PYTHONDONTWRITEBYTECODE
