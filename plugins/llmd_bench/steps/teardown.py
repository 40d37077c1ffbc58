"""teardown: stop everything the cell started and prove it is gone (an Airflow teardown task)."""

from __future__ import annotations

from typing import Any

from llmd_bench.stack.context import StepContext


def run(ctx: StepContext) -> dict[str, Any]:
    return ctx.stack.teardown()
