"""Old GuideLLM report layouts on real reports, zstd-compressed as past studies kept them; `.json.zst` input.

tests/fixtures/guidellm/<version>/guidellm-results.json.zst come from scripts/guidellm_fixtures.py: GuideLLM 0.5.3,
0.5.4 and 0.6.0 each against the GuideLLM 0.8.1 mock server (--ttft-ms 20 --itl-ms 5), a concurrent sweep of 1, 2
and 4 streams, 3 s each (--max-seconds 3), 16 output tokens a request. The numbers are checked against those
settings, so a unit mistake (seconds for milliseconds) shows.

The integration tier of this topic (real local servers, processes or PostgreSQL, a few seconds each);
the rest is tests/unit/test_guidellm_layouts.py.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import zstandard

from conftest import BIN
from llmd_bench.integrations.importer import import_reports
from llmd_bench.measure.guidellm_report import load_json, parse_report_file
from llmd_bench.model.errors import ReportError
from unit.test_guidellm_layouts import NO_DB, SUPPORTED, _fixture, versions


def _zst(path, doc):
    path.write_bytes(zstandard.ZstdCompressor(write_checksum=True).compress(json.dumps(doc).encode()))
    return path


def test_the_same_report_plain_or_compressed_imports_alike(db_url, tmp_path):
    plain = tmp_path / "guidellm-results.json"
    plain.write_bytes(zstandard.ZstdDecompressor().decompress(_fixture("0.5.4").read_bytes()))
    a = import_reports([_fixture("0.5.4")], "Qwen/Qwen3-8B", "no-offload", "v0.4.0", run_id="zst", url=db_url)
    b = import_reports([plain], "Qwen/Qwen3-8B", "no-offload", "v0.4.0", run_id="plain", url=db_url)
    assert {k: v for k, v in a.items() if k != "run_id"} == {k: v for k, v in b.items() if k != "run_id"}
    # several zstd frames (`zstd` on a stream, concatenated files) are one report
    text = plain.read_bytes()
    frames = tmp_path / "frames.json.zst"
    frames.write_bytes(b"".join(zstandard.ZstdCompressor().compress(part) for part in (text[:1000], text[1000:])))
    assert load_json(frames) == json.loads(text)


def test_import_of_an_unsupported_version_names_it_and_writes_nothing(tmp_path):
    doc = load_json(_fixture("0.6.0"))
    doc["metadata"].update(guidellm_version="0.7.0", version=2)
    path = _zst(tmp_path / "guidellm-results.json.zst", doc)
    out = subprocess.run([str(BIN / "llmd-bench"), "import", str(path), "--model", "Qwen/Qwen3-8B", "--config", "no-offload",
                          "--llmd-version", "v0.4.0"], capture_output=True, text=True,
                         env={**os.environ, "LLMD_BENCH_DB_URL": NO_DB})
    assert out.returncode == 1 and "Traceback" not in out.stderr and "unreachable" not in out.stderr
    assert f"GuideLLM report {path}: written by GuideLLM 0.7.0 (layout 2); {SUPPORTED}" in out.stderr


@versions
@pytest.mark.parametrize("edit, needle", [
    (lambda b: b["metrics"]["output_tokens_per_second"]["successful"].update(mean=-700.0),
     "`benchmarks[2].metrics.output_tokens_per_second.successful.mean` is -700.0; impossible"),
    (lambda b: b["metrics"]["time_to_first_token_ms"]["successful"]["percentiles"].update(p50=1e6),
     "`benchmarks[2].metrics.time_to_first_token_ms.successful.percentiles.p50` is 1000000.0, above "
     "`benchmarks[2].metrics.time_to_first_token_ms.successful.percentiles.p75`"),
    (lambda b: b["metrics"]["prompt_token_count"]["successful"].update(max=-32), "prompt_token_count.successful.max` is -32"),
], ids=["negative-output-rate", "p50-above-p75", "negative-token-count"])
def test_an_old_report_with_impossible_numbers_is_refused_and_never_imported(tmp_path, version, edit, needle):
    doc = load_json(_fixture(version))
    edit(doc["benchmarks"][2])
    path = _zst(tmp_path / "guidellm-results.json.zst", doc)
    with pytest.raises(ReportError) as err:
        parse_report_file(path)
    assert str(err.value).startswith(f"GuideLLM report {path} (level at concurrency 4): ") and needle in str(err.value)
    out = subprocess.run([str(BIN / "llmd-bench"), "import", str(path), "--model", "Qwen/Qwen3-8B", "--config", "no-offload",
                          "--llmd-version", "v0.4.0"], capture_output=True, text=True,
                         env={**os.environ, "LLMD_BENCH_DB_URL": NO_DB})
    assert out.returncode == 1 and "Traceback" not in out.stderr and needle in out.stderr
    assert "unreachable" not in out.stderr  # refused before any database access
