"""Every cell proves what it served: the servers' own start-up log and /metrics read back after deploy and compared
with what the configuration demands. A server that runs another block size, or drops the offload flag, fails the
deploy with a table; a correct one is recorded `proven`."""

from __future__ import annotations

from conftest import tiny_campaign, write_campaign
from fake_kube import kubelet_vllm_argv
from llmd_bench.measure import served, vllm_formats
from llmd_bench.model import catalog
from llmd_bench.model.campaign import Cell
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.params import resolve_params
from llmd_bench.stack.context import StepContext
from llmd_bench.stack.runtime import local

MODEL = "Qwen/Qwen3-0.6B"


def test_the_proof_reads_what_the_server_printed_not_what_we_sent():
    """A log whose non-default args carry a KVTransferConfig repr, and a cache_config_info with another block size."""
    log = ("(APIServer pid=1) INFO 12-07 04:30:00 [utils.py:253] non-default args: {'model_tag': 'Qwen/Qwen3-8B', "
           "'host': '0.0.0.0', 'tensor_parallel_size': 2, 'block_size': 16, 'enable_prefix_caching': True, "
           "'kv_transfer_config': KVTransferConfig(kv_connector='OffloadingConnector', engine_id='e1', "
           "kv_role='kv_both', kv_connector_extra_config={'cpu_bytes_to_use': 23622320128})}\n")
    metrics = ('vllm:cache_config_info{block_size="64",cache_dtype="auto",enable_prefix_caching="True",'
               'gpu_memory_utilization="0.9",engine="0"} 1.0\n')
    source = served.ServedSource(pod="ms-0", log=log, metrics=metrics)
    wanted = [served.Wanted(key="block_size", value="16", because="x"),
              served.Wanted(key="tensor_parallel_size", value="2", because="x"),
              served.Wanted(key="kv_connector", value="OffloadingConnector", because="x"),
              served.Wanted(key="kv_offload.cpu_bytes_to_use", value="23622320128", because="x"),
              served.Wanted(key="max_num_seqs", value="256", because="x")]
    proof = served.prove([source], wanted, "0.19.1", "deploy")
    keys = {k.key: k for k in proof.pods[0].keys}
    # the engine's own cache config wins over the command line it was given
    assert keys["block_size"].status == "differs" and keys["block_size"].served == "64"
    assert keys["tensor_parallel_size"].status == "proven"
    assert keys["kv_connector"].status == "proven" and keys["kv_offload.cpu_bytes_to_use"].status == "proven"
    # absent from the non-default args and no default read upstream for it: said, never passed
    assert keys["max_num_seqs"].status == "not provable" and "max_num_seqs" in (keys["max_num_seqs"].why or "")
    assert proof.status == "differs"


def test_a_server_that_shows_nothing_is_not_provable_never_proven():
    source = served.ServedSource(pod="ms-0", log="starting\n", metrics=None,
                                 unavailable={"metrics": "connection refused at http://10.0.0.1:8000/metrics"})
    proof = served.prove([source], [served.Wanted(key="block_size", value="16", because="x")], "0.19.1", "deploy")
    (key,) = proof.pods[0].keys
    assert key.status == "not provable" and "connection refused" in (key.why or "")
    assert proof.status == "not provable"
    assert served.prove([], [served.Wanted(key="block_size", value="16", because="x")], "0.19.1", "deploy").status \
        == "not provable"


def test_the_fake_kubelet_runs_a_shell_script_as_a_shell_does():
    """The fake API's pods print vLLM's start-up lines for the argv vLLM really gets (tests/fake_kube.py)."""
    script = "set -e\nexec vllm serve Qwen/Qwen3-8B \\\n  --block-size 64 --port 8000"
    # llm-d's guides: command [/bin/sh, -c], the script in args; flags appended after it reach $0, $1, ...
    argv = kubelet_vllm_argv(["/bin/sh", "-c"], [script, "--block-size", "16"])
    assert argv == ["Qwen/Qwen3-8B", "--block-size", "64", "--port", "8000"]
    # a script that passes "$@" on gets them (the renderer's pre_start form)
    argv = kubelet_vllm_argv(["/bin/sh", "-c", 'pip install x && exec vllm serve "$@"', "vllm"],
                             ["Qwen/Qwen3-8B", "--block-size", "16"])
    assert argv == ["Qwen/Qwen3-8B", "--block-size", "16"]


FIXTURES = __import__("pathlib").Path(__file__).parents[1] / "fixtures" / "vllm"


def test_a_real_vllm_start_up_line_reads_as_the_engine_args_it_ran():
    """vLLM 0.11.2's own log_non_default_args output (colour-coded prefix, dataclass reprs) and its connector line."""
    log = (FIXTURES / "v0.11.2-startup.log").read_text()
    args = vllm_formats.non_default_args(log)
    assert args is not None and args["block_size"] == 64 and args["model"] == "Qwen/Qwen3-8B"
    keys = vllm_formats.flatten_engine_args(args, "0.11.2")
    assert keys["kv_connector"] == "OffloadingConnector" and keys["kv_offload.num_cpu_blocks"] == "10000"
    assert keys["kv_events.topic"] == "kv@10.0.0.1@Qwen/Qwen3-8B" and keys["kv_events.publisher"] == "zmq"
    assert keys["prefix_caching_hash_algo"] == "sha256_cbor" and keys["gpu_memory_utilization"] == "0.65"
    assert "kv_offload.offload_prompt_only" not in keys  # the key does not exist before vLLM 0.23
    assert vllm_formats.created_connector(log) == "OffloadingConnector"
    # from vLLM 0.23 an OffloadingConnector that was not given offload_prompt_only runs the release's default (true)
    assert vllm_formats.flatten_engine_args(args, "0.23.0")["kv_offload.offload_prompt_only"] == "True"
    # a port equal to the default would be left out, and the proof reads TP 1 from its absence
    source = served.ServedSource(pod="p", log=log.replace("'tensor_parallel_size': 2, ", ""))
    proof = served.prove([source], [served.Wanted(key="tensor_parallel_size", value="1", because="x")], "0.11.2", "x")
    assert proof.status == "proven" and "default" in (proof.pods[0].keys[0].source or "")


def test_cache_config_info_labels_read_in_any_order():
    metrics = ('# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig\n'
               '# TYPE vllm:cache_config_info gauge\n'
               'vllm:cache_config_info{_block_size_resolved="True",block_size="16",cache_dtype="auto",'
               'enable_prefix_caching="True",engine="0",gpu_memory_utilization="0.92",num_gpu_blocks="27139",'
               'prefix_caching_hash_algo="sha256",user_specified_block_size="False"} 1.0\n')
    info = vllm_formats.cache_config_info(metrics)
    assert info is not None and info["block_size"] == "16" and info["num_gpu_blocks"] == "27139"
    assert "engine" not in info
    assert vllm_formats.cache_config_info("vllm:num_requests_running 0\n") is None


def test_the_simulated_server_prints_what_vllm_prints_for_the_same_command_line():
    argv = ["Qwen/Qwen3-8B", "--host", "0.0.0.0", "--port", "8000", "--tensor-parallel-size", "1",
            "--gpu-memory-utilization", "0.9", "--block-size", "16", "--enable-prefix-caching",
            "--kv-transfer-config", '{"kv_connector":"OffloadingConnector","kv_role":"kv_both",'
            '"kv_connector_extra_config":{"cpu_bytes_to_use":1000}}']
    engine = vllm_formats.parse_vllm_argv(argv)
    (line, connector) = vllm_formats.startup_log(engine, "0.23.0")
    args = vllm_formats.non_default_args(line)
    # defaults are left out as log_non_default_args does: port 8000, TP 1; 0.9 is not 0.23's default (0.92)
    assert args is not None and "port" not in args and "tensor_parallel_size" not in args
    assert args["gpu_memory_utilization"] == 0.9 and args["host"] == "0.0.0.0"
    assert "Creating v1 connector with name: OffloadingConnector" in connector
    assert "gpu_memory_utilization" not in (vllm_formats.non_default_args(
        vllm_formats.startup_log(vllm_formats.parse_vllm_argv(argv), "0.19.1")[0]) or {})


def _rendered_epp(prefix="precise-prefix-cache-scorer", index="redisConfig"):
    return {"apiVersion": "llm-d.ai/v1alpha1", "kind": "EndpointPickerConfig",
            "plugins": [{"type": "queue-scorer"}, {"type": "kv-cache-utilization-scorer"},
                        {"type": prefix, "parameters": {"tokenProcessorConfig": {"blockSizeTokens": 16},
                                                        "indexerConfig": {"kvBlockIndexConfig": {
                                                            index: {"address": "redis://kv:6379"}}}}},
                        {"type": "max-score-picker"}, {"type": "single-profile-handler"}],
            "schedulingProfiles": [{"name": "default", "plugins": [
                {"pluginRef": "queue-scorer", "weight": 2}, {"pluginRef": "kv-cache-utilization-scorer", "weight": 2},
                {"pluginRef": prefix, "weight": 3}, {"pluginRef": "max-score-picker"}]}]}


# rawConfig.String() as GAIE v1.4.0/v1.5.0 and llm-d-router v0.9.0/v0.10.0 print it, in a zap JSON line
STRING_FORM = ('{Plugins: [{Name: queue-scorer, Type: queue-scorer} {Name: kv-cache-utilization-scorer, Type: '
               'kv-cache-utilization-scorer} {Name: precise-prefix-cache-scorer, Type: precise-prefix-cache-scorer, '
               'Parameters: {"tokenProcessorConfig":{"blockSizeTokens":BLOCK},"indexerConfig":{"kvBlockIndexConfig":'
               '{"redisConfig":{"address":"redis://kv:6379"}}}}} {Name: max-score-picker, Type: max-score-picker} '
               '{Name: single-profile-handler, Type: single-profile-handler}], SchedulingProfiles: [{Name: default, '
               'Plugins: [{PluginRef: queue-scorer, Weight: 2.00} {PluginRef: kv-cache-utilization-scorer, Weight: 2.00} '
               '{PluginRef: precise-prefix-cache-scorer, Weight: 3.00} {PluginRef: max-score-picker}]}]}')


def _epp_log(block=16, message="Loaded raw configuration"):
    import json

    line = {"level": "info", "ts": 1765080000.5, "caller": "loader/configloader.go:71", "msg": message,
            "config": STRING_FORM.replace("BLOCK", str(block))}
    return '{"level":"info","ts":1765080000.1,"msg":"starting"}\n' + json.dumps(line) + "\n"


def test_the_epp_is_proven_from_the_configuration_it_logged_loading():
    wanted = served.wanted_epp(_rendered_epp())
    assert {w.key for w in wanted} == {"epp.plugins", "epp.weights", "epp.block_size", "epp.index"}
    proof = served.prove([served.ServedSource(pod="epp-0", role="epp", log=_epp_log())], [], "0.26.0", "deploy",
                         epp_wanted=wanted)
    assert proof.status == "proven", proof
    # an EPP that loaded another file (the guide's own config, block size 64) differs
    proof = served.prove([served.ServedSource(pod="epp-0", role="epp", log=_epp_log(block=64))], [], "0.26.0",
                         "deploy", epp_wanted=wanted)
    assert [(k.key, k.wanted, k.served) for _, k in proof.differences] == [("epp.block_size", "16", "64")]
    # the approximate scorer given, the precise one loaded: the plugin we gave is missing
    approximate = served.wanted_epp(_rendered_epp(prefix="prefix-cache-scorer"))
    proof = served.prove([served.ServedSource(pod="epp-0", role="epp", log=_epp_log())], [], "0.26.0", "deploy",
                         epp_wanted=approximate)
    assert "epp.plugins" in {k.key for _, k in proof.differences}
    # an EPP whose log lost the start (rotated) is not provable, never proven
    proof = served.prove([served.ServedSource(pod="epp-0", role="epp", log='{"msg":"serving"}\n')], [], "0.26.0",
                         "deploy", epp_wanted=wanted)
    assert proof.status == "not provable"


def test_the_epp_log_formats_of_every_catalog_router():
    # GAIE v1.2.0: "{name/type, Parameters: ...}" plugins and integer weights, console encoder with a JSON tail
    v12 = ('2025-12-02T10:00:00Z\tINFO\tloader/configloader.go:60\tLoaded configuration\t{"config": "{Plugins: '
           '[{queue-scorer/queue-scorer} {prefix-cache-scorer/prefix-cache-scorer}], SchedulingProfiles: [{Name: '
           'default, Plugins: [{PluginRef: queue-scorer, Weight: 2} {PluginRef: prefix-cache-scorer, Weight: 3}]}], '
           'FeatureGates: [], SaturationDetector: <nil>}"}')
    keys = vllm_formats.epp_loaded_config(v12)
    assert keys == {"epp.plugins": "prefix-cache-scorer,queue-scorer",
                    "epp.weights": "prefix-cache-scorer=3,queue-scorer=2"}
    # llm-d-router v0.9/v0.10 also log the config as a JSON object; it is preferred to the String() form
    import json
    phase_one = json.dumps({"level": "info", "msg": "Raw config after phase one", "config": _rendered_epp()})
    keys = vllm_formats.epp_loaded_config(_epp_log(block=64) + phase_one + "\n")
    assert keys is not None and keys["epp.block_size"] == "16" and keys["epp.index"] == "redisConfig"


def test_every_configuration_at_every_release_renders_a_command_line_whose_server_proves_it(tmp_path):
    """For each catalog release x configuration the renderer does not refuse: a vLLM started with the rendered
    command line (its start-up lines and cache config as that release prints them) proves every key the
    configuration demands. Catches a renderer that drops or misnames what the configuration asks for."""
    from llmd_bench.model import configurations
    from llmd_bench.model.errors import CampaignError
    from llmd_bench.steps.deploy import wanted

    names = list(configurations.catalog())
    proven, refused = 0, 0
    for version in catalog.known_versions():
        entry = catalog.entry(version)
        doc = tiny_campaign(configs=names)
        doc["serving"] = {**doc["serving"], "llmd_version": version}
        doc["local_simulation"] = {name: {"ttft_ms": 40, "itl_ms": 8.0} for name in names}
        campaign = load_campaign(write_campaign(tmp_path, doc, name=f"all-{version}"))
        params = resolve_params(campaign, {}, catalog.known_versions())
        for config in campaign.configs:
            ctx = StepContext(campaign, params, "r", "local", Cell(MODEL, config))
            try:
                argv = local.vllm_argv(ctx)
            except CampaignError:
                refused += 1
                continue
            engine = vllm_formats.parse_vllm_argv(argv)
            source = served.ServedSource(pod="p", log="\n".join(vllm_formats.startup_log(engine, entry.vllm_version)),
                                         metrics=vllm_formats.cache_config_metric(engine, MODEL, 100, entry.vllm_version))
            proof = served.prove([source], wanted(ctx), entry.vllm_version, "deploy")
            assert proof.status == "proven", (version, config, [k for k in proof.pods[0].keys if k.status != "proven"])
            proven += 1
    print(f"{proven} release x configuration pairs proven, {refused} refused by name")
    assert proven >= 60 and refused > 0, (proven, refused)
