#!/usr/bin/env bash
# `make airflow` / `make stop`: a real local Airflow (api-server, scheduler, dag-processor on 127.0.0.1,
# metadata in the project's PostgreSQL, LocalExecutor) running the local runtime.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
RUN="${LLMD_BENCH_STATE:-$ROOT/.state}/airflow"
PORT="${LLMD_AIRFLOW_PORT:-8080}"
mkdir -p "$RUN" "$AIRFLOW_HOME"

stop() {
  for name in api-server scheduler dag-processor; do
    if [ -f "$RUN/$name.pid" ]; then
      pid=$(cat "$RUN/$name.pid")
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -KILL -- "-$pid" 2>/dev/null || true
      rm -f "$RUN/$name.pid"
      echo "stopped $name"
    fi
  done
  # cells whose teardown never ran (stopped mid-run) leave servers behind: stop them too
  llmd-bench cleanup
  llmd-bench db stop
  # pmcd is started on demand by cells (host infrastructure); stop it with the stack unless a pmlogger still
  # records from it (another checkout's or test's run on this machine)
  if pgrep -x pmlogger > /dev/null; then echo "left pmcd running: a pmlogger still records from it"
  else pkill -x pmcd 2>/dev/null && echo "stopped pmcd" || true; fi
}

if [ "${1:-start}" = "stop" ]; then stop; exit 0; fi

llmd-bench db start > /dev/null
RESULTS_URL="$(llmd-bench db url)"
META_URL="${RESULTS_URL%/llmd_results}/airflow"
python - "$RESULTS_URL" <<'PY'
import sys, psycopg2
conn = psycopg2.connect(sys.argv[1].rsplit("/", 1)[0] + "/postgres"); conn.autocommit = True
cur = conn.cursor(); cur.execute("SELECT 1 FROM pg_database WHERE datname = 'airflow'")
cur.fetchone() or cur.execute("CREATE DATABASE airflow")
PY
[ -f "$RUN/jwt_secret" ] || python -c 'import secrets; print(secrets.token_urlsafe(32))' > "$RUN/jwt_secret"
# The key that encrypts the connections in the metadata database is kept beside that database (in .state), not only
# in AIRFLOW_HOME's airflow.cfg: a wiped AIRFLOW_HOME must not leave connections no key can read (InvalidToken).
# The first time, an existing airflow.cfg's key is kept, so the connections stored under it stay readable.
if [ ! -s "$RUN/fernet_key" ]; then
  python - "$AIRFLOW_HOME/airflow.cfg" > "$RUN/fernet_key.new" <<'PY'
import configparser, sys
from cryptography.fernet import Fernet
cfg = configparser.ConfigParser(interpolation=None)
cfg.read(sys.argv[1])
print(cfg.get("core", "fernet_key", fallback="").strip() or Fernet.generate_key().decode())
PY
  chmod 600 "$RUN/fernet_key.new" && mv "$RUN/fernet_key.new" "$RUN/fernet_key"
fi
cat > "$RUN/env" <<ENV
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg2://${META_URL#postgresql://}"
export AIRFLOW__CORE__EXECUTOR=LocalExecutor
export AIRFLOW__CORE__PARALLELISM=4
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__API__PORT=$PORT
export AIRFLOW__API__BASE_URL=http://127.0.0.1:$PORT
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:$PORT/execution/
export AIRFLOW__API_AUTH__JWT_SECRET=$(cat "$RUN/jwt_secret")
export AIRFLOW__CORE__FERNET_KEY=$(cat "$RUN/fernet_key")
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin
export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=20
export AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK=False
# A scheduler started again within 30 s of a crash finds the dead one's job still healthy (scheduler_health_check_threshold
# 30 s) and adopts its running tasks, to fail and tear them down, only at its next orphan check: every 30 s, not
# the default 300 s (airflow/config_templates/config.yml, apache-airflow-core 3.3.2). The check is one query.
export AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL=30
export AIRFLOW_CONN_LLMD_RESULTS="$RESULTS_URL"
export LLMD_BENCH_SWEEP_POOL=llmd_sweeps
# False: only manual triggers and backfills run (no weekly run of the full campaign on unpause)
export AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE=${LLMD_AIRFLOW_USE_JOB_SCHEDULE:-True}
ENV
source "$RUN/env"
airflow db migrate > "$RUN/db-migrate.log" 2>&1 || { tail -20 "$RUN/db-migrate.log"; exit 1; }
LLMD_RESULTS_URL="$RESULTS_URL" python -m llmd_bench.orchestration.airflow_settings airflow_settings.yaml

start() {
  local name=$1; shift
  if [ -f "$RUN/$name.pid" ] && kill -0 "$(cat "$RUN/$name.pid")" 2>/dev/null; then return; fi
  setsid airflow "$@" > "$RUN/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
}
start api-server api-server --host 127.0.0.1 --port "$PORT"
start scheduler scheduler --skip-serve-logs
start dag-processor dag-processor
for _ in $(seq 120); do
  curl -sf "http://127.0.0.1:$PORT/api/v2/monitor/health" > /dev/null 2>&1 && break
  sleep 1
done
curl -sf "http://127.0.0.1:$PORT/api/v2/monitor/health" > /dev/null || { echo "api-server did not come up; see $RUN/api-server.log"; exit 1; }
PASSWORD=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin"])' "$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated")
echo "Airflow is up: http://127.0.0.1:$PORT  (user admin, password $PASSWORD)"
echo "Logs in $RUN; stop everything with: make stop"
