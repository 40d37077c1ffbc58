"""One module per pipeline stage. Each exposes `run(ctx) -> dict`, the step's summary for the log and cell.json."""

CELL_STEPS = ("deploy", "warmup", "sweep", "collect_pcp", "teardown", "load_results")


def endpoint_for(ctx) -> str:
    """The URL the load generator talks to, from the runtime that deployed the cell."""
    if ctx.runtime == "local":
        from llmd_bench.runtime import local
        return local.endpoint(ctx)
    from llmd_bench.runtime import kubernetes
    return kubernetes.endpoint(ctx)


def observation_targets(ctx):
    """What to watch during the sweep: replica /metrics, the KV index, the EPP's /metrics."""
    if ctx.runtime == "local":
        from llmd_bench.runtime import local
        return local.observation_targets(ctx)
    from llmd_bench.runtime import kubernetes
    return kubernetes.observation_targets(ctx)
