#!/usr/bin/env bash
# `make test`: the whole suite against real components (GuideLLM, mock servers, Redis/Valkey, Airflow).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
mkdir -p test-artifacts
exec pytest -p no:cacheprovider "$@"
