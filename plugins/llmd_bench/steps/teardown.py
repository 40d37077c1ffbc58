"""teardown: stop everything the cell started and prove it is gone (an Airflow teardown task)."""

from __future__ import annotations

from typing import Any

from llmd_bench.context import StepContext


def run(ctx: StepContext) -> dict[str, Any]:
    if ctx.runtime == "local":
        from llmd_bench.runtime import local
        return local.teardown(ctx)
    from llmd_bench.runtime import kubernetes
    return kubernetes.teardown(ctx)
