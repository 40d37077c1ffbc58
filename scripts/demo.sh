#!/usr/bin/env bash
# `make demo`: the reference campaign DAG through Airflow on the local runtime, demo-sized.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
# DEMO_CONF (run params as JSON) replaces the demo-sized params, e.g. for a one-cell rehearsal
DEMO_SIZED='{"models": ["Qwen/Qwen3-0.6B"], "configs": ["no-offload", "native-offload", "llm-d-redis", "llm-d-valkey"],
            "concurrency": [1, 8, 16], "duration_s": 4, "prompt_tokens": 64, "output_tokens": 32,
            "prefix_tokens": 256, "turns": 2}'
DEMO_CONF="${DEMO_CONF:-$DEMO_SIZED}"
mkdir -p "$AIRFLOW_HOME"
llmd-bench db start
export AIRFLOW_CONN_LLMD_RESULTS="$(llmd-bench db url)"
airflow db migrate > "$AIRFLOW_HOME/db-migrate.log" 2>&1 || { tail -20 "$AIRFLOW_HOME/db-migrate.log"; exit 1; }
echo "Running DAG llmd_kv_cache_eval on the local runtime (log: $AIRFLOW_HOME/demo.log) ..."
status=0
airflow dags test llmd_kv_cache_eval -c "$DEMO_CONF" > "$AIRFLOW_HOME/demo.log" 2>&1 || status=$?
run_id=$(python -c 'import json,sys; from pathlib import Path; runs=sorted(Path("results").glob("*/summary.json"), key=lambda p: p.stat().st_mtime); print(json.loads(runs[-1].read_text())["run_id"])')
echo
echo "Run $run_id on the local runtime: the serving layer was SIMULATED by GuideLLM mock servers."
if [ -f "reports/latest/report.md" ]; then
  sed -n '/^| Model | Config | Status/,/^$/p' "reports/latest/report.md"
else
  echo "No report was written; see $AIRFLOW_HOME/demo.log"
fi
echo "Report:  reports/latest/report.html (and report.md, CSVs, plots)"
echo "Results: results/$run_id"
echo "Results database: llmd-bench db status | url | stop"
exit $status
