"""One Airflow DAG per campaign file in include/campaigns/ (the reference one is `llmd_kv_cache_eval`).

Kept declarative: the campaign files say what to run, `llmd_bench.orchestration.airflow_dag` says how.
"""

from llmd_bench.orchestration.airflow_dag import build_dags

globals().update(build_dags())
