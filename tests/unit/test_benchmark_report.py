"""Export to llm-d's Benchmark Report v0.2 and import back, against a real PostgreSQL results store: every file
validates against the JSON Schema in include/schemas/, its numbers are the store's in the schema's units, invalid
levels are left out with a note, a round trip keeps every key metric, and foreign files are refused by name.

The unit tier of this topic (pure logic and fixture files, no processes, servers or PostgreSQL);
the rest is tests/integration/test_benchmark_report.py.
"""

from __future__ import annotations

import json

import jsonschema

from integration.test_benchmark_report import SCHEMA
from llmd_bench.integrations import benchmark_report as br


def test_the_schema_file_is_a_valid_2020_12_schema_that_says_where_it_comes_from():
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert br.UPSTREAM_COMMIT in schema["$comment"] and "schema_v0_2.py" in schema["$comment"]
    readme = (SCHEMA.parent / "README.md").read_text()
    assert br.UPSTREAM_COMMIT in readme and br.UPSTREAM_REPO in readme
