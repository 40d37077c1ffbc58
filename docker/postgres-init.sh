#!/bin/sh
# Run once by the postgres image on an empty data directory (/docker-entrypoint-initdb.d, executed or
# sourced): a second database for results, owned by its own role, so the credential the step pods get
# (Secret llmd-bench-results-db) opens the results and nothing of Airflow's metadata.
set -eu
: "${LLMD_RESULTS_DB_PASSWORD:?LLMD_RESULTS_DB_PASSWORD is required}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v results_pw="$LLMD_RESULTS_DB_PASSWORD" <<'SQL'
CREATE ROLE llmd_results LOGIN PASSWORD :'results_pw';
CREATE DATABASE llmd_results OWNER llmd_results;
SQL
