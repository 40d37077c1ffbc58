"""llmd-bench: the llm-d KV-cache evaluation as a repeatable Airflow campaign.

Step logic lives in plain modules (one per pipeline stage) that never import Airflow;
`llmd_bench.orchestration.airflow_dag` is the only module that does.
"""

__version__ = "0.1.0"
