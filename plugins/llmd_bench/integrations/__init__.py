"""Outside systems: the Benchmark Report export, MLflow, notifications, object storage and the import of reports made
elsewhere."""
