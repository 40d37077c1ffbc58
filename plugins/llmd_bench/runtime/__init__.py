"""The thin platform layer: where a cell's serving stack runs.

`local`: processes on this machine (GuideLLM mock servers, Redis/Valkey servers).
`kubernetes`: pods and manifests in a cluster.
The runtime is chosen by the deployment (LLMD_BENCH_RUNTIME or AIRFLOW_VAR_LLMD_BENCH_RUNTIME),
never per trigger.
"""

from __future__ import annotations

import os

RUNTIMES = ("local", "kubernetes")


def selected_runtime() -> str:
    value = os.environ.get("LLMD_BENCH_RUNTIME") or os.environ.get("AIRFLOW_VAR_LLMD_BENCH_RUNTIME") or "local"
    value = value.strip().lower()
    if value not in RUNTIMES:
        raise ValueError(f"LLMD_BENCH_RUNTIME={value!r} is not a runtime; allowed: {list(RUNTIMES)}")
    return value
