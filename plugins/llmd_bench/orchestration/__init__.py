"""The Airflow edge: the DAG builder, the step pods, Airflow-only settings and the preflight checks of a deployment."""
