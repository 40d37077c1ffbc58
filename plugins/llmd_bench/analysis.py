"""Moved to llmd_bench.report.analysis (the report package); this name stays an alias of that module."""

import sys

from llmd_bench.report import analysis as _analysis

sys.modules[__name__] = _analysis
