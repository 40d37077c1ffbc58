"""Moved to llmd_bench.report.data (the report package); this name stays an alias of that module."""

import sys

from llmd_bench.report import data as _data

sys.modules[__name__] = _data
