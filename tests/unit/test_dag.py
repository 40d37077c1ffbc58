"""DAG integrity: one DAG per campaign, one group per cell, setup/teardown wiring, lanes, params, pods."""

from __future__ import annotations

import json

import pytest

from conftest import REFERENCE, ROOT, tiny_campaign, write_campaign
from llmd_bench.model.campaign_files import load_campaign

STEPS = {"deploy", "warmup", "sweep", "collect_pcp", "teardown", "load_results"}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag
    return DagBag(dag_folder=str(ROOT / "dags"))


@pytest.fixture(scope="module")
def dag(dagbag):
    return dagbag.dags["llmd_kv_cache_eval"]


def test_dags_import_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "llmd_kv_cache_eval" in dagbag.dag_ids


def test_schedule_weekly_no_catchup_one_active_run(dag):
    assert dag.schedule == "@weekly" or getattr(dag.timetable, "_expression", None) == "0 0 * * 0"
    assert dag.catchup is False
    assert dag.max_active_runs == 1


def test_one_group_per_cell_named_after_model_and_config(dag):
    groups = {k: v for k, v in dag.task_group.children.items() if k not in ("compare", "select_cells")}
    expected = {f"{m}__{c}" for m in ("Qwen3-0_6B", "Qwen3-8B", "Qwen3-14B", "Qwen3-32B-AWQ")
                for c in ("no-offload", "native-offload", "llm-d-redis", "llm-d-valkey", "no-offload__repeat")}
    assert set(groups) == expected  # design: auto on the local runtime is aba: each baseline again, last
    for gid, group in groups.items():
        assert {t.split(".")[-1] for t in group.children} == STEPS, gid


def test_setup_teardown_and_step_order(dag):
    g = "Qwen3-8B__llm-d-redis"
    t = {s: dag.get_task(f"{g}.{s}") for s in STEPS}
    assert t["deploy"].is_setup and t["teardown"].is_teardown
    assert not any(t[s].is_setup or t[s].is_teardown for s in STEPS - {"deploy", "teardown"})
    assert t["warmup"].upstream_task_ids == {f"{g}.deploy"}
    assert t["sweep"].upstream_task_ids == {f"{g}.warmup"}
    assert t["collect_pcp"].upstream_task_ids == {f"{g}.sweep"}
    assert t["teardown"].upstream_task_ids == {f"{g}.collect_pcp", f"{g}.deploy"}
    assert t["load_results"].upstream_task_ids == {f"{g}.collect_pcp"}
    assert t["teardown"].trigger_rule == "all_done_setup_success"


def test_cells_run_one_at_a_time_and_a_failure_does_not_stop_the_next(dag):
    cells = [c.group_id for c in load_campaign(REFERENCE).cells()]
    for prev, nxt in zip(cells, cells[1:]):
        deploy = dag.get_task(f"{nxt}.deploy")
        assert deploy.upstream_task_ids == {f"{prev}.teardown", f"{prev}.load_results", "select_cells"}
        assert deploy.trigger_rule == "all_done"
    compare = dag.get_task("compare")
    assert compare.trigger_rule == "all_done"
    cells += [f"{c}__repeat" for c in cells if c.endswith("__no-offload")]  # design: aba's repeats, last
    assert {f"{c}.teardown" for c in cells} | {f"{c}.load_results" for c in cells} == compare.upstream_task_ids


def test_lanes_setting_allows_parallel_cells(campaigns_dir):
    from llmd_bench.orchestration.airflow_dag import build_dag
    doc = tiny_campaign(configs=["no-offload", "native-offload", "llm-d-redis", "llm-d-valkey"], lanes=2)
    dag = build_dag(load_campaign(write_campaign(campaigns_dir, doc)), runtime="local")
    firsts = [g for g in ("Qwen3-0_6B__no-offload", "Qwen3-0_6B__native-offload")]
    for g in firsts:
        assert dag.get_task(f"{g}.deploy").upstream_task_ids == {"select_cells"}
    assert dag.get_task("Qwen3-0_6B__llm-d-redis.deploy").upstream_task_ids == {
        "Qwen3-0_6B__no-offload.teardown", "Qwen3-0_6B__no-offload.load_results", "select_cells"}


def test_params_form_defaults_and_trigger_time_validation(dag):
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    params = dag.params
    assert set(params.keys()) == {"models", "configs", "concurrency", "duration_s", "prompt_tokens", "output_tokens",
                                  "prefix_tokens", "turns", "seed", "tensor_parallel_size", "replicas",
                                  "llmd_version", "trials", "trial_isolation", "noise_floor_pct", "baseline",
                                  "prefix_count", "max_requests", "runs", "level_isolation", "factors", "sweep", "slo",
                                  "design"}
    assert params["concurrency"] == [1, 50, 100, 150, 300, 400, 500, 650]
    for name in params.keys():
        assert params.get_param(name).description, name

    def validate(conf):
        p = ParamsDict(params)
        for k, v in conf.items():
            p[k] = v
        return p.validate()

    validate({"models": ["Qwen/Qwen3-8B"], "configs": ["no-offload"]})
    for conf, name in [({"models": ["Qwen/Qwen3-70B"]}, "models"), ({"configs": ["x"]}, "configs"),
                       ({"concurrency": []}, "concurrency"), ({"concurrency": [-1]}, "concurrency"),
                       ({"duration_s": 0}, "duration_s"), ({"llmd_version": "v9"}, "llmd_version"),
                       ({"trial_isolation": "sometimes"}, "trial_isolation"), ({"noise_floor_pct": -1}, "noise_floor_pct"),
                       ({"baseline": "native-offload-20k"}, "baseline"), ({"design": "abab"}, "design"),
                       ({"slo": {"ttft_ms": {"p97": 500}}}, "slo"), ({"slo": {"ttft_ms": {"p95": 0}}}, "slo")]:
        with pytest.raises((ParamValidationError, ValueError)) as err:
            validate(conf)
        assert name in str(err.value)
    desc = params.get_param("models").description
    assert "Qwen/Qwen3-0.6B" in desc and "Qwen/Qwen3-32B-AWQ" in desc


def test_invalid_campaign_file_becomes_a_visible_failing_dag(campaigns_dir):
    from llmd_bench.orchestration.airflow_dag import build_dags
    write_campaign(campaigns_dir, tiny_campaign())
    doc = tiny_campaign(dag_id="llmd_broken")
    doc["workload"]["duration_s"] = -1
    write_campaign(campaigns_dir, doc, name="broken")
    dags = build_dags(campaigns_dir)
    assert "llmd_tiny" in dags
    broken = dags["invalid_campaign__broken"]
    assert "workload.duration_s" in broken.doc_md and "broken.yaml" in broken.doc_md


def test_a_bad_schedule_is_refused_by_validation_and_hides_no_other_campaign(campaigns_dir, monkeypatch):
    """`every tuesday-ish` used to pass validate-campaign and then break the import of the DAG file."""
    import llmd_bench.orchestration.airflow_dag as airflow_dag

    write_campaign(campaigns_dir, tiny_campaign())
    write_campaign(campaigns_dir, tiny_campaign(dag_id="llmd_sched", schedule="every tuesday-ish"), name="sched")
    write_campaign(campaigns_dir, tiny_campaign(dag_id="llmd_cron", schedule="0 6 * * 1"), name="cron")
    dags = airflow_dag.build_dags(campaigns_dir)
    assert {"llmd_tiny", "llmd_cron", "invalid_campaign__sched"} <= set(dags)
    assert "schedule" in dags["invalid_campaign__sched"].doc_md and "cron expression" in dags["invalid_campaign__sched"].doc_md
    # any other failure while building one campaign's DAG stays in that campaign's stand-in
    original = airflow_dag.build_dag

    def explode(campaign, runtime=None):
        if campaign.dag_id == "llmd_cron":
            raise RuntimeError("boom")
        return original(campaign, runtime)

    monkeypatch.setattr(airflow_dag, "build_dag", explode)
    dags = airflow_dag.build_dags(campaigns_dir)
    assert "llmd_tiny" in dags and "RuntimeError: boom" in dags["invalid_campaign__cron"].doc_md


def test_campaigns_that_would_share_run_ids_or_a_dag_id_are_refused_and_hide_no_other(campaigns_dir, capsys):
    """Two campaigns that fire at the same time get the same scheduled run id, so the same results/<run id>/
    and reports/<run id>/; two files with one dag_id would silently replace one DAG by the other."""
    from llmd_bench import cli
    from llmd_bench.orchestration.airflow_dag import build_dags

    write_campaign(campaigns_dir, tiny_campaign(dag_id="llmd_a", schedule="@weekly"), name="a")
    write_campaign(campaigns_dir, tiny_campaign(dag_id="llmd_b", schedule="@daily"), name="b")  # also on Sundays
    write_campaign(campaigns_dir, tiny_campaign(dag_id="llmd_a"), name="c")
    write_campaign(campaigns_dir, tiny_campaign(dag_id="llmd_d", schedule="0 2 * * 0"), name="d")  # 2 h later
    dags = build_dags(campaigns_dir)
    assert {"llmd_a", "llmd_d", "invalid_campaign__b", "invalid_campaign__c"} <= set(dags) and "llmd_b" not in dags
    assert "a.yaml" in dags["llmd_a"].doc_md  # the first file keeps its DAG
    clash = dags["invalid_campaign__b"].doc_md
    assert "'@daily' fires at the same time as" in clash and "a.yaml" in clash
    assert "scheduled__2026-01-04T00:00:00+00:00" in clash and "'0 2 * * 0'" in clash
    assert "dag_id 'llmd_a' is already used by" in dags["invalid_campaign__c"].doc_md
    # validate-campaign checks a new file against the campaigns already in the folder
    new = write_campaign(campaigns_dir.parent, tiny_campaign(dag_id="llmd_new", schedule="0 0 * * *"), name="new")
    assert cli.main(["validate-campaign", str(new)]) == 1
    err = capsys.readouterr().err
    assert "new.yaml" in err and "fires at the same time as" in err and "a.yaml" in err and "Traceback" not in err


def _render_pod(task, run_id="scheduled__2026-11-22T00:00:00+00:00"):
    from airflow.sdk.definitions.context import Context
    params = {k: task.dag.params[k] for k in task.dag.params.keys()}
    context = Context(run_id=run_id, params=params, dag=task.dag, task=task, ti=None)
    task.render_template_fields(context)
    return task.build_pod_request_obj(dry_run=True)


def test_kubernetes_runtime_checks_the_cluster_before_any_cell_deploys(monkeypatch):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    from llmd_bench.orchestration.airflow_dag import build_dag

    monkeypatch.setenv("LLMD_BENCH_NAMESPACE", "bench")
    campaign = load_campaign(REFERENCE)
    dag = build_dag(campaign, runtime="kubernetes")
    preflight = dag.get_task("preflight")
    assert isinstance(preflight, KubernetesPodOperator) and preflight.is_setup
    assert preflight.upstream_task_ids == set()
    pod = _render_pod(preflight)
    c = pod.spec.containers[0]
    assert c.args[:5] == ["preflight", "--campaign", "kv_cache_eval", "--run-id", "scheduled__2026-11-22T00:00:00+00:00"]
    assert "--model" not in c.args and json.loads(c.args[c.args.index("--params") + 1])["seed"] == 889
    assert pod.metadata.labels["llmd-bench/step"] == "preflight" and pod.spec.service_account_name == "llmd-bench-steps"
    assert {e.name: e.value for e in c.env if e.value}["LLMD_BENCH_NAMESPACE"] == "bench"
    cells = [cell.group_id for cell in campaign.cells()]
    first = dag.get_task(f"{cells[0]}.deploy")
    assert first.upstream_task_ids == {"preflight", "select_cells"} and first.trigger_rule == "all_success"
    assert preflight.downstream_task_ids == {f"{cells[0]}.deploy"}
    for prev, nxt in zip(cells, cells[1:]):
        deploy = dag.get_task(f"{nxt}.deploy")
        # still runs whatever the previous cell's outcome, but only after a successful preflight (a setup
        # without teardown: Airflow requires it for every task after it, whatever their trigger rule)
        assert deploy.upstream_task_ids == {f"{prev}.teardown", f"{prev}.load_results", "select_cells"}
        assert deploy.trigger_rule == "all_done"
        assert "preflight" in {t.task_id for t in deploy.get_upstreams_only_setups()}
    for task_id in ("compare", f"{cells[-1]}.load_results", f"{cells[-1]}.sweep"):
        assert "preflight" in {t.task_id for t in dag.get_task(task_id).get_upstreams_only_setups()}, task_id
    # the local runtime's DAG has no preflight
    local = build_dag(campaign, runtime="local")
    assert "preflight" not in local.task_ids and local.get_task(f"{cells[0]}.deploy").upstream_task_ids == {"select_cells"}
    assert local.get_task(f"{cells[1]}.deploy").trigger_rule == "all_done"


def test_kubernetes_runtime_refuses_a_results_store_pods_cannot_share(monkeypatch):
    from llmd_bench.model.errors import RuntimeStepError
    from llmd_bench.orchestration.step_pods import step_pod_settings

    monkeypatch.setenv("LLMD_BENCH_RESULTS_URL", "file:///srv/results")
    with pytest.raises(RuntimeStepError, match="needs an S3-compatible store"):
        step_pod_settings("sweep", load_campaign(REFERENCE))
    monkeypatch.delenv("LLMD_BENCH_RESULTS_URL")
    env = {e.name: e for e in step_pod_settings("sweep", load_campaign(REFERENCE))["env_vars"]}
    assert env["LLMD_BENCH_RESULTS_URL"].value == "s3://llmd-bench"
    assert env["AWS_ACCESS_KEY_ID"].value_from.secret_key_ref.optional is True  # IRSA / workload identity


def test_select_cells_skips_every_task_of_the_left_out_cells_at_once_and_names_bad_params(dag):
    """The first task skips all the cells the params leave out in one go (otherwise each one's deploy runs a step,
    or a pod on a cluster, only to skip, one cell after another); a bad param fails it naming the allowed values."""
    from airflow.sdk.exceptions import AirflowException, DownstreamTasksSkipped

    from llmd_bench.orchestration.airflow_dag import CELL_STEPS, select_cells

    campaign = load_campaign(REFERENCE)
    # every cell, and design: aba's repeat of each baseline (auto: aba on the local runtime)
    cells = [c.group_id for c in campaign.cells()] + [f"{m}__no-offload__repeat" for m in
                                                      ("Qwen3-0_6B", "Qwen3-8B", "Qwen3-14B", "Qwen3-32B-AWQ")]
    assert dag.get_task("select_cells").downstream_task_ids == {f"{c}.deploy" for c in cells}
    assert {t.split(".")[-1] for t in dag.task_group.children[cells[0]].children} == set(CELL_STEPS)
    with pytest.raises(DownstreamTasksSkipped) as skipped:
        select_cells(campaign, {"models": ["Qwen/Qwen3-8B"], "configs": ["no-offload", "llm-d-redis"]})
    chosen = {"Qwen3-8B__no-offload", "Qwen3-8B__llm-d-redis", "Qwen3-8B__no-offload__repeat"}
    assert sorted(skipped.value.tasks) == sorted(f"{c}.{s}" for c in cells if c not in chosen for s in CELL_STEPS)
    assert all(dag.has_task(t) for t in skipped.value.tasks)
    assert select_cells(campaign, {}) == cells  # the campaign's defaults: every cell, nothing to skip
    with pytest.raises(AirflowException, match=r"Qwen/Qwen3-9B.*Qwen/Qwen3-0.6B"):
        select_cells(campaign, {"models": ["Qwen/Qwen3-9B"]})


def test_the_run_params_live_on_the_dag_and_still_reach_every_task(dag):
    """Airflow copies a DAG's params into each task, and serializing every copy validated every param's schema:
    about 27 s per parse of the shipped DAGs. The tasks carry none; a running task gets the DAG's, the run's conf
    over them (process_params, as the task runner calls it)."""
    from airflow.sdk.definitions.param import process_params

    assert {"models", "configs", "concurrency", "design"} <= set(dag.params)
    assert all(not task.params for task in dag.tasks)
    sweep = dag.get_task("Qwen3-0_6B__no-offload.sweep")
    resolved = process_params(dag, sweep, {"duration_s": 7}, suppress_exception=False)
    assert resolved["duration_s"] == 7 and resolved["models"] == dag.params["models"]
