#!/bin/sh
# Writes ./.env for docker-compose.yaml once: your uid and random secrets. It never overwrites an existing
# .env: the Fernet key must stay the same for connections saved in Airflow to remain readable.
#   sh docker/make-env.sh [PATH]   (default ./.env)
set -eu
out=${1:-.env}
if [ -e "$out" ]; then
  echo "$out exists; not touching it (delete it only if you also drop the postgres-data volume)" >&2
  exit 1
fi
hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
uid=$(id -u)
if [ "$uid" = 0 ]; then
  uid=50000  # do not run Airflow as root; make ./kubeconfig readable for uid 50000 (chmod 0644)
  echo "running as root: AIRFLOW_UID=50000; chmod 0644 your kubeconfig so that uid can read it" >&2
fi
umask 077
cat > "$out" <<ENV
AIRFLOW_UID=$uid
AIRFLOW_JWT_SECRET=$(hex 32)
AIRFLOW_API_SECRET_KEY=$(hex 32)
AIRFLOW_FERNET_KEY=$(head -c 32 /dev/urandom | base64 | tr '+/' '-_')
POSTGRES_PASSWORD=$(hex 16)
LLMD_RESULTS_DB_PASSWORD=$(hex 16)
MINIO_ROOT_PASSWORD=$(hex 16)
LLMD_BENCH_PUBLISH_ADDRESS=127.0.0.1
ENV
echo "wrote $out (mode 0600). To let step pods on a cluster reach MinIO and the results database, set"
echo "LLMD_BENCH_PUBLISH_ADDRESS and LLMD_BENCH_STEP_S3_ENDPOINT in it; see the header of docker-compose.yaml."
