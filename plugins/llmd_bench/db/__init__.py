"""The PostgreSQL results store: a local server for the local runtime, the schema, loads and queries."""
