"""One module per pipeline stage. Each exposes `run(ctx) -> dict`, the step's summary for the log and cell.json.
Steps reach the platform only through `ctx.stack` (runtime/base.py: Runtime)."""

CELL_STEPS = ("deploy", "warmup", "sweep", "collect_pcp", "teardown", "load_results")


def endpoint_for(ctx) -> str:
    """The URL the load generator talks to, from the runtime that deployed the cell."""
    return ctx.stack.endpoint()


def observation_targets(ctx):
    """What to watch during the sweep: replica /metrics, the KV index, the EPP's /metrics."""
    return ctx.stack.observation_targets()
