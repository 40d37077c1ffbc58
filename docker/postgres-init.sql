-- A second database on the same server for results (Airflow's metadata lives in `airflow`).
CREATE DATABASE llmd_results OWNER airflow;
