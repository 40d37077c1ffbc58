"""The orchestration tests' GuideLLM stand-in (tests/fake_guidellm.py) against GuideLLM's real mock server: its report
reads through the same parser as a real GuideLLM 0.8.1 report, holds every block a real one has, and its numbers
follow the server (a slower server reads slower), so a test that uses it still sees what the servers did."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import BIN, COMMITTED_REPORT, MOCK_SERVER, ROOT, fake_guidellm_command
from llmd_bench.measure import guidellm_watch, processes
from llmd_bench.measure.guidellm_report import parse_report_file

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mock_servers(tmp_path_factory):
    """Two real GuideLLM mock servers: 4 ms and 12 ms between tokens."""
    folder = tmp_path_factory.mktemp("mocks")
    started = []
    try:
        for itl in (4, 12):
            port = processes.free_port()
            started.append(processes.start(f"mock-{itl}", [
                *MOCK_SERVER, "--host", "127.0.0.1", "--port", str(port),
                "--model", "Qwen/Qwen3-0.6B", "--ttft-ms", "20", "--itl-ms", str(itl)], port, folder / f"mock-{itl}.log",
                {"HF_HUB_OFFLINE": "1"}))
        for proc in started:
            processes.wait_http(proc, f"http://127.0.0.1:{proc.port}/health", 60)
        yield {4: f"http://127.0.0.1:{started[0].port}", 12: f"http://127.0.0.1:{started[1].port}"}
    finally:
        for proc in started:
            processes.stop(proc)


def _run(command: str, target: str, out, levels: list[int], extra: list[str] | None = None) -> str:
    argv = [command, "run", "--backend", f"kind=openai_http,target={target},model=Qwen/Qwen3-0.6B",
            "--profile", json.dumps({"kind": "concurrent", "streams": levels}),
            "--constraint", "kind=max_duration,seconds=2", *(extra or []), "--seed", "kind=static,value=889",
            "--data", "kind=synthetic_text,prompt_tokens=32,output_tokens=16,prefix_tokens=64,prefix_count=1,turns=1",
            "--tokenizer", f"kind=hf_auto,model={ROOT / '.cache' / 'tokenizer'}", "--output", f"kind=json,path={out}",
            "--label", "cell=x", "--disable-progress"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stderr


def _keys(node, depth=3):
    if not isinstance(node, dict) or depth == 0:
        return set()
    return {k for k in node} | {f"{k}.{sub}" for k, v in node.items() for sub in _keys(v, depth - 1)}


def test_the_stand_ins_report_parses_as_a_real_one_and_follows_the_server(mock_servers, tmp_path):
    command = fake_guidellm_command(tmp_path)
    log = _run(command, mock_servers[4], tmp_path / "fast.json", [1, 4])
    _run(command, mock_servers[12], tmp_path / "slow.json", [1, 4])
    fast = parse_report_file(tmp_path / "fast.json", expected_duration_s=2)
    slow = parse_report_file(tmp_path / "slow.json", expected_duration_s=2)
    assert [lv.concurrency for lv in fast.levels] == [1, 4] and fast.guidellm_version == "0.8.1"
    assert [lv.invalid_reason for lv in fast.levels + slow.levels] == [None] * 4
    for quick, slower in zip(fast.levels, slow.levels):
        # 16 tokens 4 ms apart vs 12 ms apart: the measured inter-token latency and throughput follow the server
        assert 3 < quick.value("itl_ms") < 8 and 11 < slower.value("itl_ms") < 18
        assert quick.value("output_tps") > 1.4 * slower.value("output_tps")
    # 4 streams move about 4 times the tokens of 1
    assert 2.5 < fast.levels[1].value("output_tps") / fast.levels[0].value("output_tps") < 5
    # every block a real 0.8.1 level has (a metric it does not measure is null, as GuideLLM writes an absent
    # modality), and the progress lines the sweep's watch reads
    real = json.loads(COMMITTED_REPORT.read_text())["benchmarks"][0]
    made = json.loads((tmp_path / "fast.json").read_text())["benchmarks"][0]
    assert _keys(real, depth=2) - _keys(made, depth=2) == set()
    assert made["metrics"]["time_to_first_token_ms"].keys() == real["metrics"]["time_to_first_token_ms"].keys()
    seen = [guidellm_watch.parse_line(line) for line in log.splitlines()]
    assert [(p.index, p.status) for p in seen if p.kind == "level"] == [
        (1, "started"), (1, "compile"), (1, "completed"), (2, "started"), (2, "compile"), (2, "completed")]
    assert any(p.kind == "finalized" for p in seen)


def test_a_request_cap_ends_each_level_early(mock_servers, tmp_path):
    command = fake_guidellm_command(tmp_path)
    _run(command, mock_servers[4], tmp_path / "capped.json", [2], ["--constraint", "kind=max_requests,count=6"])
    (level,) = parse_report_file(tmp_path / "capped.json").levels
    assert level.requests_total == 6 and level.requests_successful == 6 and level.duration_s < 2


def test_any_other_subcommand_is_the_real_guidellm(tmp_path):
    command = fake_guidellm_command(tmp_path)
    out = subprocess.run([command, "mock-server", "--help"], capture_output=True, text=True, timeout=60)
    real = subprocess.run([str(BIN / "guidellm"), "mock-server", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == real.stdout
