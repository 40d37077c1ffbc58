"""Campaign files and run params: the reference campaign's values, and clear errors for bad input."""

from __future__ import annotations

import pytest
import yaml

from conftest import REFERENCE, tiny_campaign, write_campaign
from llmd_bench.model import catalog
from llmd_bench.model.campaign import FEBRUARY_METHOD, METHOD_DEFAULTS, Method, Workload
from llmd_bench.model.campaign_files import load_campaign
from llmd_bench.model.errors import CampaignError, ParamsError
from llmd_bench.model.params import resolve_params


def test_reference_campaign_matches_the_published_evaluation():
    c = load_campaign(REFERENCE)
    assert c.dag_id == "llmd_kv_cache_eval"
    assert c.model_names == ["Qwen/Qwen3-0.6B", "Qwen/Qwen3-8B", "Qwen/Qwen3-14B", "Qwen/Qwen3-32B-AWQ"]
    assert list(c.configs) == ["no-offload", "native-offload", "llm-d-redis", "llm-d-valkey"]
    assert c.workload.concurrency == [1, 50, 100, 150, 300, 400, 500, 650]
    w = c.workload
    assert (w.duration_s, w.prompt_tokens, w.output_tokens, w.prefix_tokens, w.turns, w.seed) == (120, 128, 128, 10000, 5, 889)
    assert c.serving.tensor_parallel_size == 2 and c.serving.llmd_version == "v0.4.0"
    assert c.schedule == "@weekly" and c.catchup is False and c.lanes == 1
    assert len(c.cells()) == 16
    params = resolve_params(c, {}, catalog.known_versions())
    assert params.levels_for(c.model("Qwen/Qwen3-32B-AWQ")) == [1, 50, 100, 150, 300]
    assert params.levels_for(c.model("Qwen/Qwen3-8B")) == [1, 50, 100, 150, 300, 400, 500, 650]


@pytest.mark.parametrize("mutate, field, reason", [
    (lambda d: d.pop("workload"), "workload", "Field required"),
    (lambda d: d["workload"].update(concurrency=[]), "workload.concurrency", "at least 1 item"),
    (lambda d: d["workload"].update(duration_s=0), "workload.duration_s", "greater than 0"),
    (lambda d: d.update(configs=["no-offload", "gpu-magic"]), "configs.1", "no-offload"),
    (lambda d: d["models"].append({"name": "not a model id"}), "models.1.name", "pattern"),
    (lambda d: d.update(lanes=-1), "lanes", "greater than 0"),
    (lambda d: d.update(colour="blue"), "colour", "Extra inputs are not permitted"),
    (lambda d: d["local_simulation"].pop("llm-d-redis"), "local_simulation", "no profile for ['llm-d-redis']"),
    (lambda d: d["serving"].update(offload={"num_cpu_blocks": 10000, "cpu_gib_per_gpu": 8}), "serving.offload",
     "exactly one of cpu_gib_per_gpu or num_cpu_blocks"),
    (lambda d: d["serving"].update(scheduling={"model_servers": {}}), "serving.scheduling.model_servers",
     "Extra inputs are not permitted"),
    (lambda d: d["serving"].update(replicas=2, model_cache_pvc="models", model_cache_pvc_access_mode="ReadWriteOnce"),
     "serving", "ReadWriteOnce but replicas is 2"),
    (lambda d: d["models"][0].update(architecture={"layers": 28, "kv_heads": 0, "head_dim": 128}),
     "models.0.architecture.kv_heads", "greater than 0"),
])
def test_malformed_campaign_names_file_field_and_reason(tmp_path, mutate, field, reason):
    doc = tiny_campaign()
    mutate(doc)
    path = write_campaign(tmp_path, doc)
    with pytest.raises(CampaignError) as err:
        load_campaign(path)
    msg = str(err.value)
    assert str(path) in msg
    assert f"`{field}" in msg or field in msg
    assert reason in msg


def test_campaign_that_is_not_yaml_or_not_a_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed")
    with pytest.raises(CampaignError, match="bad.yaml: not valid YAML"):
        load_campaign(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(CampaignError, match="expected a mapping"):
        load_campaign(bad)


@pytest.mark.parametrize("conf, needle", [
    ({"models": ["Qwen/Qwen3-70B"]}, "param `models`: unknown model(s) ['Qwen/Qwen3-70B']; allowed: ['Qwen/Qwen3-0.6B'"),
    ({"configs": ["gpu-magic"]}, "param `configs`"),
    ({"concurrency": []}, "param `concurrency`"),
    ({"concurrency": [1, -5]}, "param `concurrency`"),
    ({"duration_s": 0}, "param `duration_s`"),
    ({"llmd_version": "v9.9.9"}, "param `llmd_version`: 'v9.9.9' is not in the version catalog; allowed: ['v0.4.0'"),
    ({"turn": 3}, "unknown param(s) ['turn']"),
    ({"models": ["Qwen/Qwen3-32B-AWQ"], "concurrency": [400, 500]}, "max_concurrency 300"),
])
def test_bad_params_are_rejected_with_the_param_and_allowed_values(conf, needle):
    c = load_campaign(REFERENCE)
    with pytest.raises(ParamsError) as err:
        resolve_params(c, conf, catalog.known_versions())
    assert needle in str(err.value)


def test_params_default_to_the_campaign_and_override_it():
    c = load_campaign(REFERENCE)
    p = resolve_params(c, {"models": ["Qwen/Qwen3-8B"], "duration_s": 5}, catalog.known_versions())
    assert p.models == ["Qwen/Qwen3-8B"] and p.duration_s == 5
    assert p.configs == list(c.configs) and p.seed == 889 and p.trials == 1


def test_the_february_method_is_defined_once_and_the_reference_campaign_runs_it():
    from llmd_bench.store import read

    c = load_campaign(REFERENCE)
    params = resolve_params(c, {}, catalog.known_versions()).model_dump()
    # the report's "differs from the February evaluation's" note stays empty for the reference campaign
    assert {k: params[k] for k, v in FEBRUARY_METHOD.as_params().items() if params[k] != v} == {}
    # a workload that leaves the method out gets its defaults, the February method's ...
    workload = {k: v for k, v in c.workload.model_dump().items() if k not in Method.model_fields}
    w = Workload.model_validate(workload)
    assert {k: getattr(w, k) for k in Method.model_fields} == METHOD_DEFAULTS.model_dump() == FEBRUARY_METHOD.method.model_dump()
    # ... and so do runs stored before it was a setting, in the store's earlier-run comparison (JSON values)
    assert read.METHOD_PARAMS == {"runs": '"per-cell"', "prefix_count": "1", "max_requests": "null", "level_isolation": '"none"'}


def test_every_shipped_campaign_validates():
    from llmd_bench.model.campaign_files import campaign_files
    files = campaign_files()
    assert files, "no campaign shipped"
    for f in files:
        assert yaml.safe_load(f.read_text())["dag_id"] == load_campaign(f).dag_id


# --- configurations as data (include/configurations.yaml and a campaign's own `configurations:`) ---

LOWMEM = {"description": "precise routing into Valkey, GPU cache squeezed",
          "model_server": {"gpu_memory_utilization": 0.6, "extra_args": ["--max-model-len", "8192"],
                           "env": {"VLLM_LOGGING_LEVEL": "DEBUG"}},
          "router": {"prefix_scorer": "precise", "index": "valkey"}, "evidence": "index-keys"}


def _with_own(tmp_path, definition, name="valkey-lowmem", **overrides):
    doc = tiny_campaign(configs=["no-offload", name], **overrides)
    doc["configurations"] = {name: definition}
    doc["local_simulation"][name] = {"ttft_ms": 40, "itl_ms": 8.0}
    return write_campaign(tmp_path, doc)


def test_a_configuration_defined_in_the_campaign_file_is_a_cell_and_a_param(tmp_path):
    c = load_campaign(_with_own(tmp_path, LOWMEM))
    assert [cell.group_id for cell in c.cells()] == ["Qwen3-0_6B__no-offload", "Qwen3-0_6B__valkey-lowmem"]
    own = c.configuration("valkey-lowmem")
    assert (own.kv_events, own.index_kind, own.offloads, own.needs_replicas) == (True, "valkey", False, True)
    assert c.configuration("native-offload-20k").model_server.kv_offload.size.num_cpu_blocks == 20000
    params = resolve_params(c, {"configs": ["valkey-lowmem"]}, catalog.known_versions())
    assert params.configs == ["valkey-lowmem"] and params.baseline == "no-offload"


@pytest.mark.parametrize("definition, needles", [
    ({**LOWMEM, "router": {"prefix_scorer": "precise", "index": "in-memory"}},
     ["valkey-lowmem.router", "needs index: redis or valkey"]),
    ({**LOWMEM, "model_server": {"extra_args": ["--kv-transfer-config={}"]}},
     ["valkey-lowmem.model_server.extra_args", "--kv-transfer-config is set by the renderer from model_server.kv_offload"]),
    ({**LOWMEM, "model_server": {"env": {"PYTHONHASHSEED": "1"}}}, ["valkey-lowmem.model_server.env", "serving.hash_seed"]),
    ({**LOWMEM, "evidence": "offload-counters"}, ["evidence offload-counters needs model_server.kv_offload"]),
    ({**LOWMEM, "evidence": "vibes"}, ["valkey-lowmem.evidence", "'none', 'offload-counters' or 'index-keys'"]),
    ({**LOWMEM, "colour": "blue"}, ["valkey-lowmem.colour", "Extra inputs are not permitted"]),
])
def test_a_bad_campaign_configuration_names_the_file_field_and_allowed_values(tmp_path, definition, needles):
    path = _with_own(tmp_path, definition)
    with pytest.raises(CampaignError) as err:
        load_campaign(path)
    for needle in [str(path), "configurations", *needles]:
        assert needle in str(err.value)


def test_a_catalog_name_cannot_be_redefined_and_the_baseline_must_be_benchmarked(tmp_path):
    with pytest.raises(CampaignError, match=r"\['native-offload'\] already in the catalog"):
        load_campaign(_with_own(tmp_path, LOWMEM, name="native-offload"))
    with pytest.raises(CampaignError, match=r"baseline 'llm-d-redis' is not one of this campaign's configs"):
        load_campaign(write_campaign(tmp_path, tiny_campaign(configs=["no-offload", "native-offload"],
                                                             baseline="llm-d-redis")))
    # no baseline given: no-offload when benchmarked, else the first config
    def baseline_of(configs):
        return load_campaign(write_campaign(tmp_path, tiny_campaign(configs=configs))).baseline

    assert baseline_of(["llm-d-redis", "no-offload"]) == "no-offload"
    assert baseline_of(["llm-d-redis", "native-offload"]) == "llm-d-redis"
    doc = tiny_campaign(configs=["no-offload", "native-offload"], baseline="native-offload")
    c = load_campaign(write_campaign(tmp_path, doc))
    with pytest.raises(ParamsError, match=r"param `baseline`: 'llm-d-redis' is not in this campaign"):
        resolve_params(c, {"baseline": "llm-d-redis"}, catalog.known_versions())


def test_run_params_are_defined_once_and_the_trigger_form_accepts_and_refuses_what_the_steps_do():
    """RunParams is the one definition: the trigger form's schema and defaults derive from it, and the
    campaign file's workload shares its fields, so the form can neither offer a param the steps reject
    nor refuse one they take."""
    import jsonschema

    from llmd_bench.model.campaign import Workload
    from llmd_bench.model.params import RunParams, default_and_schema

    c = load_campaign(REFERENCE)
    form = default_and_schema(c, catalog.known_versions())
    assert list(form) == list(RunParams.model_fields)  # every param, in the model's order (models first)
    assert resolve_params(c, {}, catalog.known_versions()) == RunParams.model_validate(
        {name: default for name, (default, _) in form.items()})
    for name, (default, schema) in form.items():
        jsonschema.validate(default, schema)  # the form accepts its own defaults
        assert schema["description"] and "title" not in schema and "default" not in schema, name
    shared = Workload.model_json_schema()["properties"]
    for name in ("concurrency", "duration_s", "prefix_count", "max_requests", "runs", "level_isolation"):
        assert shared[name]["description"] == RunParams.model_json_schema()["properties"][name]["description"]

    def form_accepts(conf):
        try:
            for name, value in conf.items():
                jsonschema.validate(value, form[name][1])
            return True
        except jsonschema.ValidationError:
            return False

    def steps_accept(conf):
        try:
            resolve_params(c, conf, catalog.known_versions())
            return True
        except ParamsError:
            return False

    cases = [{"concurrency": [0]}, {"concurrency": [1, 2]}, {"duration_s": 0}, {"duration_s": 0.5},
             {"prefix_count": "2y"}, {"prefix_count": 0}, {"prefix_tokens": -1}, {"prefix_tokens": 0},
             {"models": ["Qwen/Qwen3-8B", "Qwen/Qwen3-8B"]}, {"models": ["Qwen/Qwen3-8B"]},
             {"configs": ["gpu-magic"]}, {"baseline": "llm-d-redis"}, {"llmd_version": "v9.9.9"},
             {"llmd_version": "v0.5.1"}, {"runs": "sometimes"}, {"noise_floor_pct": 101}, {"sweep": "adaptive"},
             {"factors": {"replicas": [2]}}, {"trials": 0}]
    for conf in cases:
        assert form_accepts(conf) == steps_accept(conf), conf
