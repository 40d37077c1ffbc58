#!/usr/bin/env bash
# The MLflow tracking server for tests/e2e/test_mlflow.py: the full `mlflow` package (server and UI) in its own venv,
# .venv-mlflow, pinned by requirements-mlflow-server.txt. It cannot live in .venv (full mlflow pins pyarrow<26, the
# GuideLLM stack 26); the pipeline only needs the client, mlflow-skinny, from requirements.txt. Idempotent: a venv
# newer than its requirements is kept. `make test` runs it; the test's fixture runs it too when the venv is missing.
# About 75 s and 850 MB (pyarrow, scipy, scikit-learn, pandas come with mlflow).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LLMD_BENCH_MLFLOW_VENV:-$ROOT/.venv-mlflow}"
REQ="$ROOT/requirements-mlflow-server.txt"
STAMP="$VENV/.installed"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9  # two test sessions at once: one builds, the other waits for it
if [ -f "$STAMP" ] && [ "$STAMP" -nt "$REQ" ] && [ -x "$VENV/bin/mlflow" ]; then
  exit 0
fi
echo "building the MLflow server venv $VENV (requirements-mlflow-server.txt)"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip==26.3
# --no-compile: the server imports a small part of these 850 MB, compiled when first imported (the tests run with
# PYTHONDONTWRITEBYTECODE unset: scripts/env.sh)
"$VENV/bin/pip" install --quiet --no-compile -r "$REQ"
"$VENV/bin/pip" check
touch "$STAMP"
