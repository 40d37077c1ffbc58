"""Results through S3-compatible object storage, as step pods use it: a real S3 server on 127.0.0.1
(moto's), every step in its own scratch folder, teardown and load_results at the same time.

The integration tier of this topic (real local servers, processes or PostgreSQL, a few seconds each);
the rest is tests/e2e/test_object_storage.py.
"""

from __future__ import annotations

import pytest

from conftest import tiny_campaign, write_campaign
from llmd_bench.integrations import storage


def test_a_failed_step_reports_its_own_error_even_when_the_push_fails_too(campaigns_dir, results_dir, monkeypatch):
    import argparse
    from types import SimpleNamespace

    from llmd_bench import cli
    from llmd_bench.model.errors import RuntimeStepError

    write_campaign(campaigns_dir, tiny_campaign(configs=["no-offload"]))
    monkeypatch.setattr(storage, "pull_cell", lambda cell_dir: "snapshot")

    def failing_push(snapshot):
        raise storage.StorageError("object storage s3://x: uploading failed")

    def failing_step(ctx):
        raise RuntimeStepError("the step's own error")

    monkeypatch.setattr(storage, "push", failing_push)
    monkeypatch.setattr(cli, "_step_module", lambda name: SimpleNamespace(run=failing_step))
    args = argparse.Namespace(campaign="tiny", run_id="r", params=None, model="Qwen/Qwen3-0.6B", config="no-offload",
                              runtime=None)
    with pytest.raises(RuntimeStepError, match="the step's own error"):
        cli.run_cell_step("warmup", args)
