"""Results through S3-compatible object storage, as step pods use it: a real S3 server on 127.0.0.1
(moto's), every step in its own scratch folder, teardown and load_results at the same time.

The unit tier of this topic (pure logic and fixture files, no processes, servers or PostgreSQL);
the rest is tests/e2e/test_object_storage.py.
"""

from __future__ import annotations

import pytest

from llmd_bench.integrations import storage


def test_bad_url_names_the_variable_and_the_allowed_schemes(monkeypatch):
    monkeypatch.setenv("LLMD_BENCH_RESULTS_URL", "ftp://somewhere/x")
    with pytest.raises(storage.StorageError) as err:
        storage.configured()
    assert "LLMD_BENCH_RESULTS_URL" in str(err.value) and "['s3', 'file']" in str(err.value)
    monkeypatch.setenv("LLMD_BENCH_RESULTS_URL", "s3:///no-bucket")
    with pytest.raises(storage.StorageError, match="needs a bucket"):
        storage.configured()
