"""The results store (PostgreSQL): the only package that imports SQLAlchemy or holds SQL text
(tests/{unit,integration}/test_layering.py checks both).

- rows.py: the typed rows every reader returns and every writer takes (no SQLAlchemy; import it freely).
- read.py: the readers (a stored run with its cells, levels, observations and report; the peaks a run is compared
  with; a campaign's latest peaks; measured GPU time).
- db.py: connecting (with retries), migrating, and the writers (one transaction per load, through a Writer).
- schema.py: the tables (SQLAlchemy), private to this package; migrations/ (Alembic) create and evolve them.
- server.py: a local PostgreSQL server for the local runtime (`llmd-bench db start|stop|status|url|migrate`).
"""
