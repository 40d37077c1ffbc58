"""GuideLLM 0.6.0 reports (layout 1): as 0.5.x, `args` and no `config`, with the backend settings moved.

Layout: guidellm/benchmark/schemas/generative/report.py @v0.6.0 (unchanged from v0.5.4); args:
guidellm/benchmark/schemas/generative/entrypoints.py @v0.6.0: `target` and `model` moved into
`args.backend_kwargs`, `data_request_formatter` gave way to `data_preprocessors` and `data_finalizer`;
`profile`, `rate`, `max_seconds`, `max_requests`, `warmup`, `cooldown`, `data` and `random_seed` are where
0.5.x has them. A benchmark's metrics are those of 0.5.4 (metrics.py and guidellm/schemas/request_stats.py
@v0.6.0: same fields, same units).
"""

from __future__ import annotations

from llmd_bench.measure.guidellm_layouts.v0_5 import V0_5


class V0_6(V0_5):
    versions = ("0.6.0",)
    layout = 1


LAYOUT = V0_6()
