"""existing: benchmark an llm-d stack someone else installed (campaign `serving.mode: existing`).

Per cell, deploy saves the live objects it will touch, patches the cell's configuration into them, waits for
the rollout and verifies the running pods carry it; teardown restores exactly what was saved.
"""

from __future__ import annotations

from llmd_bench.runtime.base import Runtime


class ExistingRuntime(Runtime):
    name = "existing"
