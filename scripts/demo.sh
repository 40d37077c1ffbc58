#!/usr/bin/env bash
# `make demo`: the reference campaign DAG through Airflow on the local runtime, demo-sized.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
DEMO_CONF='{"models": ["Qwen/Qwen3-0.6B"], "configs": ["no-offload", "native-offload", "llm-d-redis", "llm-d-valkey"],
            "concurrency": [1, 8, 16], "duration_s": 4, "prompt_tokens": 64, "output_tokens": 32,
            "prefix_tokens": 256, "turns": 2}'
mkdir -p "$AIRFLOW_HOME"
llmd-bench db start
export AIRFLOW_CONN_LLMD_RESULTS="$(llmd-bench db url)"
airflow db migrate > "$AIRFLOW_HOME/db-migrate.log" 2>&1 || { tail -20 "$AIRFLOW_HOME/db-migrate.log"; exit 1; }
echo "Running DAG llmd_kv_cache_eval on the local runtime (log: $AIRFLOW_HOME/demo.log) ..."
status=0
airflow dags test llmd_kv_cache_eval -c "$DEMO_CONF" > "$AIRFLOW_HOME/demo.log" 2>&1 || status=$?
run_dir=$(ls -td results/*/ 2>/dev/null | head -1)
python - "$run_dir" <<'PY'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
summary = json.loads((run / "summary.json").read_text())
print(f"\nRun {summary['run_id']} (runtime: {summary['runtime']}; serving layer SIMULATED by GuideLLM mock servers)")
for c in summary["cells"]:
    if c["status"] == "skipped":
        continue
    peak = f"{c['peak_output_tps']:.1f} output tok/s at concurrency {c['optimal_concurrency']}" if c.get("peak_output_tps") else c.get("reason")
    print(f"  {c['model']:<12} {c['config']:<15} {c['status']:<8} {peak}")
print(f"\nResults: {run}  (also in PostgreSQL: `llmd-bench db status`; stop it with `llmd-bench db stop`)")
PY
exit $status
