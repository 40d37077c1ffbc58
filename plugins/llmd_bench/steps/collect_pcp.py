"""collect_pcp: Performance Co-Pilot archives for the cell's sweep window.

Recording is not wired yet: the step records `not measured` with the reason instead of inventing
numbers, so the report can say so.
"""

from __future__ import annotations

import shutil
from typing import Any

from llmd_bench.context import StepContext


def run(ctx: StepContext) -> dict[str, Any]:
    pmlogger = shutil.which("pmlogger") or (shutil.which("pmlogger", path="/usr/lib/pcp/bin"))
    result = {"status": "not measured",
              "reason": "PCP archive recording is not implemented yet" if pmlogger else "PCP is not installed"}
    with ctx.update_record() as record:
        record["pcp"] = result
    return result
