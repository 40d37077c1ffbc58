"""Which suspect levels leave a cell's peak without a verdict.

A level measured while the load generator lagged (observe/generator.py) is suspect where it was measured: the peak
level's lag under-measured the peak. A level measured while the host was busy with other work
(observe/host_load.py) under-measured the cell by an amount nobody knows, so that level might have been the peak:
its reason counts at every level of the cell, named with the level's concurrency when it is not the peak's.
"""

from __future__ import annotations

import pandas as pd

from llmd_bench.measure.observe import host_load


def peak_reasons(cell: pd.DataFrame, peak_concurrency: int) -> list[str]:
    """The reasons that leave the peak of `cell` (its valid levels, all trials) without a verdict: the peak level's,
    then the busy-host reasons of its other levels."""
    at_peak: set[str] = set()
    elsewhere: set[tuple[int, str]] = set()
    for concurrency, reason in zip(cell["concurrency"], cell["suspect_reason"]):
        if not isinstance(reason, str) or not reason:
            continue
        if int(concurrency) == int(peak_concurrency):
            at_peak.add(reason)
        elif host_load.is_busy_host(reason):
            elsewhere.add((int(concurrency), reason[reason.index(host_load.REASON_PREFIX.strip()):]))
    return sorted(at_peak) + [f"at concurrency {c}: {r}" for c, r in sorted(elsewhere)]
