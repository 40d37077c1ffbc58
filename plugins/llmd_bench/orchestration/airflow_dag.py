"""Build one Airflow DAG per campaign file. The only module of the package that imports Airflow when
imported (notify.py, whose functions are the DAG's callbacks, imports it only when they run).

`select_cells` skips at once the cells this run's params leave out, instead of running a step (a pod on
a cluster) per cell only to skip it. In the kubernetes runtime a `preflight` task checks the cluster first
(preflight.py); every cell's deploy runs after it, and none runs when it fails. Each cell (model x config) is a
TaskGroup: deploy (setup) -> warmup -> sweep -> collect_pcp -> teardown (teardown task, runs when any step fails),
and collect_pcp -> load_results. Cells that share GPUs
run one lane at a time (`lanes: N` chains them into N lanes; `lanes: auto` on a cluster chains none: each deploy waits
for a lane's Lease, stack/lanes.py); `compare` runs after every cell, also when some failed. Under `design: aba`
(model/design.py) each baseline cell runs again after all the cells of its model: a group `<baseline>__repeat`, the
last of its lane chain; `select_cells` skips it when the run's design is single.
Every step is an `llmd-bench <step>` command: a KubernetesPodOperator in the `kubernetes` runtime,
a local process in the `local` runtime.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections import deque
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, BaseOperator, Param, TaskGroup
from airflow.sdk.exceptions import AirflowException, AirflowSkipException, DownstreamTasksSkipped

from llmd_bench.integrations import notify
from llmd_bench.model import catalog, design, paths
from llmd_bench.model.campaign import Campaign, Cell
from llmd_bench.model.campaign_files import campaign_files, campaign_set_errors, load_campaign
from llmd_bench.model.errors import SKIP_EXIT_CODE, CampaignError, LlmdBenchError
from llmd_bench.model.names import dns_label, label_value
from llmd_bench.model.params import default_and_schema, resolve_params, selected_cells
from llmd_bench.model.runtimes import cluster_runtime, simulated_runtime
from llmd_bench.model.settings import results_store_url, settings
from llmd_bench.stack.lanes import fixed_lanes
from llmd_bench.stack.runtime import selected_runtime

PARAMS_ARG = "{{ params | tojson }}"


class LocalStepOperator(BaseOperator):
    """Run `llmd-bench <arguments>` as a local process (the local runtime's KubernetesPodOperator)."""

    template_fields: Sequence[str] = ("arguments",)
    ui_color = "#e8f4ea"

    def __init__(self, *, arguments: list[str], skip_on_exit_code: int | None = SKIP_EXIT_CODE, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arguments = arguments
        self.skip_on_exit_code = skip_on_exit_code
        self._proc: subprocess.Popen[str] | None = None

    def execute(self, context: Any) -> None:
        cmd = [sys.executable, "-m", "llmd_bench", *self.arguments]
        self.log.info("Running: llmd-bench %s", " ".join(self.arguments[:1] + ["..."]))
        tail: deque[str] = deque(maxlen=30)
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      env=self._env(), start_new_session=True)
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            self.log.info("%s", line)
        code = self._proc.wait()
        if self.skip_on_exit_code is not None and code == self.skip_on_exit_code:
            raise AirflowSkipException(tail[-1] if tail else "skipped")
        if code != 0:
            raise AirflowException(f"llmd-bench {self.arguments[0]} exited with {code}: " + " | ".join(list(tail)[-3:]))

    def _env(self) -> dict[str, str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # The results store is the configured one (LLMD_BENCH_DB_URL, the Airflow connection `llmd_results`);
        # otherwise the steps use the project's local server.
        url = results_store_url(airflow=True)
        if url:
            env["LLMD_BENCH_DB_URL"] = url
        return env

    def on_kill(self) -> None:
        if self._proc and self._proc.poll() is None:
            os.killpg(self._proc.pid, 15)


def step_arguments(step: str, campaign: Campaign, cell: Cell | None) -> list[str]:
    args = [step, "--campaign", campaign.name, "--run-id", "{{ run_id }}", "--params", PARAMS_ARG]
    if cell is not None:
        args += ["--model", cell.model, "--config", cell.config] + (["--factors", cell.factors_arg] if cell.factors else [])
        if isinstance(cell, design.RepeatCell):
            args.append("--repeat")
    return args


def step_operator(step: str, campaign: Campaign, cell: Cell | None, runtime: str, **kwargs: Any) -> BaseOperator:
    arguments = step_arguments(step, campaign, cell)
    task_id = step
    if not cluster_runtime(runtime):
        return LocalStepOperator(task_id=task_id, arguments=arguments, **kwargs)
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator  # deferred: loads kubernetes

    # deferred: only a cluster's DAGs run step pods; step_pods loads storage and the cell folder's models
    from llmd_bench.orchestration.step_pods import step_pod_settings

    labels = {"app.kubernetes.io/part-of": "llmd-bench", "llmd-bench/campaign": label_value(campaign.dag_id),
              "llmd-bench/step": label_value(step)}
    if cell is not None:
        # the same model label as the cell's own objects (manifests.cell_labels)
        labels |= {"llmd-bench/model": dns_label(cell.short_model), "llmd-bench/config": label_value(cell.config)}
        if cell.factors:
            labels["llmd-bench/factors"] = label_value(cell.variant)
    return KubernetesPodOperator(task_id=task_id, cmds=["llmd-bench"], arguments=arguments, labels=labels,
                                 name=dns_label(f"llmd-{step}"),
                                 skip_on_exit_code=SKIP_EXIT_CODE, **step_pod_settings(step, campaign), **kwargs)


# The tasks of a cell's group, as build_dag creates them.
CELL_STEPS = ("deploy", "warmup", "sweep", "collect_pcp", "teardown", "load_results")


def select_cells(campaign: Campaign, params: dict[str, Any], runtime: str | None = None) -> list[str]:
    """The task `select_cells`: every task of the cells this run's params leave out is marked skipped at once
    (DownstreamTasksSkipped, as Airflow's ShortCircuitOperator does; a branch would not do, since every later cell
    is downstream of the first), instead of each cell's deploy running a step, or a pod, only to skip it, one cell
    after another. Returns the selected groups (design: aba's repeats of the selected baseline cells last). Bad
    params fail it with the deploy step's message."""
    try:
        run = resolve_params(campaign, dict(params), catalog.known_versions())
        selected = selected_cells(campaign, dict(params), catalog.known_versions())
    except LlmdBenchError as exc:
        raise AirflowException(str(exc)) from None
    built = design.repeat_cells(campaign)  # the repeat groups build_dag made: of the campaign's baseline
    repeats = design.chosen_repeats(campaign, selected, run.baseline, run.design,
                                    simulated_runtime(runtime or selected_runtime()))
    if any(r not in built for r in repeats):
        print(f"design: aba repeats the campaign's baseline {campaign.baseline!r}; this run's baseline "
              f"{run.baseline!r} has no repeat in the DAG, so this run measures no drift")
    chosen = [cell.group_id for cell in [*selected, *repeats] if cell in campaign.cells() or cell in built]
    left_out = [f"{cell.group_id}.{step}" for cell in [*campaign.cells(), *built]
                if cell.group_id not in chosen for step in CELL_STEPS]
    if left_out:
        raise DownstreamTasksSkipped(tasks=left_out)
    return chosen


def build_dag(campaign: Campaign, runtime: str | None = None) -> DAG:
    runtime = runtime or selected_runtime()
    versions = catalog.known_versions()
    params = {name: Param(default, **schema) for name, (default, schema) in default_and_schema(campaign, versions).items()}
    with DAG(
        dag_id=campaign.dag_id,
        description=campaign.description[:200] or None,
        doc_md=f"Campaign `{campaign.name}` ({campaign.source}); runtime `{runtime}`.\n\n{campaign.description}",
        schedule=campaign.schedule,
        catchup=campaign.catchup,
        max_active_runs=1,
        tags=[*campaign.tags, f"runtime:{runtime}"],
        default_args={"retries": 0},
        render_template_as_native_obj=False,
        # Optional Slack / e-mail notifications (off unless their connections exist): see notify.py.
        on_failure_callback=notify.on_dag_failure,
    ) as dag:
        cells = campaign.cells()
        # lanes: auto on a cluster: no chains; every cell's deploy starts after the preflight and waits for a lane's
        # Lease (stack/lanes.py), so as many cells run at once as the nodes' GPUs hold (a lane per cell here)
        fixed = fixed_lanes(campaign.lanes, cluster_runtime(runtime), campaign.serving.mode)
        n_lanes = fixed if fixed is not None else max(1, len(cells))
        lanes: list[list[BaseOperator]] = [[] for _ in range(n_lanes)]
        leaves: list[BaseOperator] = []
        # In the Airflow worker, not a step: it only reads the params (the skipped deploys' own check stays as well).
        select = PythonOperator(task_id="select_cells",
                                python_callable=functools.partial(select_cells, campaign, runtime=runtime))
        preflight = None
        if cluster_runtime(runtime):
            # Checks the cluster in seconds before any GPU time is spent. A setup task without a teardown:
            # every task after it (later cells' deploys, load_results, compare) needs it to have succeeded,
            # whatever their own trigger rule, so a failed preflight stops the whole run.
            preflight = step_operator("preflight", campaign, None, runtime).as_setup()
        # design: aba: the baseline cells again, after all the others (skipped by select_cells unless the run's
        # design is aba); each repeat also waits for every cell of its model, in whichever lane it ran
        repeats = design.repeat_cells(campaign)
        model_leaves: dict[tuple[str, str], list[BaseOperator]] = {}
        for i, cell in enumerate([*cells, *repeats]):
            lane = lanes[i % n_lanes]
            with TaskGroup(group_id=cell.group_id, tooltip=f"{cell.model} / {cell.config}"
                           + (f" / {cell.factors_arg}" if cell.factors else "")):
                # The first cell of a lane starts only after a successful preflight; the next ones run
                # whatever the previous cell's outcome (and need the preflight through it, see above).
                first_after_preflight = preflight is not None and not lane
                deploy = step_operator("deploy", campaign, cell, runtime,
                                       trigger_rule="all_success" if first_after_preflight else "all_done")
                warmup = step_operator("warmup", campaign, cell, runtime)
                # One load generator at a time per machine when the deployment defines a pool for it.
                pool = settings().sweep_pool
                sweep = step_operator("sweep", campaign, cell, runtime, **({"pool": pool} if pool else {}))
                collect_pcp = step_operator("collect_pcp", campaign, cell, runtime)
                teardown = step_operator("teardown", campaign, cell, runtime)
                # The store may be briefly down: the step retries with back-off, Airflow retries the step.
                load_results = step_operator("load_results", campaign, cell, runtime, retries=2,
                                             retry_delay=timedelta(seconds=30))
                deploy >> warmup >> sweep >> collect_pcp >> teardown.as_teardown(setups=deploy)
                # collect_pcp writes the evidence that load_results stores with the levels.
                collect_pcp >> load_results
            select >> deploy
            if preflight is not None and not lane:
                preflight >> deploy
            if lane:
                # The next cell in a lane waits for the previous one to finish, whatever its outcome.
                lane >> deploy
            mine = model_leaves.setdefault((cell.model, cell.stack_factors), [])
            if isinstance(cell, design.RepeatCell):
                [t for t in mine if t not in lane] >> deploy
            mine += [teardown, load_results]
            lane[:] = [teardown, load_results]
            leaves += [teardown, load_results]
        # compare is the only leaf: its failure fails the run and the DAG's failure callback tells about it
        # (with the regressions); its success callback tells about regressions in a run that succeeded.
        compare = step_operator("compare", campaign, None, runtime, trigger_rule="all_done",
                                on_success_callback=notify.on_compare_success)
        leaves >> compare
    # The params go on the DAG only once its tasks exist. Airflow deep-copies the DAG's params into every task it
    # constructs (airflow/sdk/bases/operator.py _get_parent_defaults, task-sdk 1.3.2 with apache-airflow 3.3.2):
    # 70 % of building the shipped campaigns' DAGs, paid in every task's start-up parse, and serializing each copy
    # checked every param's JSON schema (airflow/sdk/definitions/param.py Param.resolve, same tag), 27 s of CPU per
    # dag-processor loop. A running task still gets them: process_params (same file) merges the DAG's params first.
    # Assigning runs DAG.params' converter and validator (attrs on_setattr), as the constructor would.
    dag.params = params  # type: ignore[assignment]
    return dag


def invalid_campaign_dag(path: Path, error: str) -> DAG:
    """A visible stand-in for a campaign file that does not validate: its one task fails with the error."""
    with DAG(dag_id=f"invalid_campaign__{label_value(path.stem)}", schedule=None, tags=["invalid-campaign"],
             doc_md=f"**Campaign file `{path}` does not validate:**\n\n```\n{error}\n```") as dag:
        def _fail() -> None:
            raise AirflowException(error)

        PythonOperator(task_id="campaign_file_is_invalid", python_callable=_fail)
    return dag


def build_dags(directory: Path | None = None) -> dict[str, DAG]:
    dags: dict[str, DAG] = {}
    loaded: list[tuple[Path, Campaign]] = []
    for path in campaign_files(directory or paths.campaigns_dir()):
        try:
            loaded.append((path, load_campaign(path)))
        except LlmdBenchError as exc:
            dag = invalid_campaign_dag(path, str(exc))
            dags[dag.dag_id] = dag
    clashes = campaign_set_errors(loaded)
    for path, campaign in loaded:
        try:
            if path in clashes:
                raise CampaignError(clashes[path])
            dags[campaign.dag_id] = build_dag(campaign)
        except LlmdBenchError as exc:
            dag = invalid_campaign_dag(path, str(exc))
            dags[dag.dag_id] = dag
        except Exception as exc:  # noqa: BLE001 - one campaign's failure must not hide the others' DAGs
            dag = invalid_campaign_dag(path, f"campaign file {path}: building its DAG failed: {type(exc).__name__}: {exc}")
            dags[dag.dag_id] = dag
    return dags
