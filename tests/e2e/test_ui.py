"""Operating it as users do: a real local Airflow (make airflow), its trigger form driven in headless
Chromium, a run on the local runtime, and the report opened from the UI. Screenshots are kept in
test-artifacts/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import ARTIFACTS, ROOT, fake_guidellm_command
from llmd_bench.measure.processes import free_port

pytestmark = pytest.mark.e2e
DAG = "llmd_kv_cache_eval"
OTHER_DAG = "llmd_kv_cache_eval_replicas"


@pytest.fixture(scope="module")
def airflow_stack(tmp_path_factory):
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("Debian chromium and chromium-driver are not installed (make setup installs them as root)")
    base = tmp_path_factory.mktemp("stack")
    port = free_port()
    # these runs test the UI, the scheduler and the reports, not GuideLLM: its light stand-in (tests/conftest.py)
    guidellm = fake_guidellm_command(tmp_path_factory.mktemp("fake-guidellm"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "LLMD_BENCH_DB_URL"))}
    env.update(AIRFLOW_HOME=str(base / "airflow"), LLMD_BENCH_STATE=str(base / "state"), LLMD_AIRFLOW_PORT=str(port),
               LLMD_BENCH_PGDATA_BASE=str(base / "pg"), LLMD_BENCH_PG_PORT=str(free_port()),
               LLMD_BENCH_RESULTS=str(base / "results"), LLMD_BENCH_REPORTS=str(base / "reports"),
               LLMD_BENCH_GUIDELLM=guidellm,
               # unpausing must not start the weekly run of the full reference campaign in a test
               LLMD_AIRFLOW_USE_JOB_SCHEDULE="False",
               # a task whose worker died (the scheduler killed with it) is noticed in 30 s, not 300 s
               AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT="30",
               # users with DAG-level permissions (airflow_auth/dag_grants_auth.py): `reader` reads every DAG as a
               # viewer, `outsider` is a viewer granted another campaign's DAG only
               AIRFLOW__CORE__AUTH_MANAGER="dag_grants_auth.DagGrantsAuthManager",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT / "tests" / "e2e" / "airflow_auth"),
                                                      os.environ.get("PYTHONPATH")) if p),
               LLMD_TEST_AIRFLOW_USERS="reader:viewer,outsider:viewer",
               LLMD_TEST_DAG_GRANTS=json.dumps({"outsider": [OTHER_DAG]}))
    out = subprocess.run(["bash", str(ROOT / "scripts" / "airflow.sh"), "start"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    line = next(line for line in out.stdout.splitlines() if line.startswith("Airflow is up"))
    password = line.split("password ")[1].rstrip(")")
    stack = {"url": f"http://127.0.0.1:{port}", "password": password, "base": base, "env": env}
    try:
        # every test needs the campaign DAG, which exists once the dag-processor has parsed the campaign files
        wait_for(lambda: any(d["dag_id"] == "llmd_kv_cache_eval" for d in api(stack, "GET", "/api/v2/dags")["dags"]),
                 timeout=180, what="the dag-processor to parse the campaign files", every=1)
        yield stack
    finally:
        subprocess.run(["bash", str(ROOT / "scripts" / "airflow.sh"), "stop"], env=env, capture_output=True)


def auth_header(stack, user: str = "admin") -> dict[str, str]:
    req = urllib.request.Request(f"{stack['url']}/auth/token", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"username": user, "password": password_of(stack, user)}).encode())
    return {"Authorization": f"Bearer {json.loads(urllib.request.urlopen(req).read())['access_token']}"}


def password_of(stack, user: str) -> str:
    """The admin's password as scripts/airflow.sh printed it; another user's from the simple auth manager's file."""
    if user == "admin":
        return stack["password"]
    generated = Path(stack["env"]["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    return json.loads(generated.read_text())[user]


def log_in(d, url: str, user: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    d.get(url)
    wait_for(lambda: d.find_elements(By.NAME, "username"), what="login form")[0].send_keys(user)
    d.find_element(By.NAME, "password").send_keys(password)
    d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(lambda: "login" not in d.current_url, what=f"{user}'s login")


def api(stack, method, path, body=None):
    req = urllib.request.Request(f"{stack['url']}{path}", method=method, data=json.dumps(body).encode() if body else None,
                                 headers={**auth_header(stack), "Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req).read())


def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1100"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    driver.implicitly_wait(15)
    return driver


def wait_for(fn, timeout=60, what="element", every=0.5):
    """fn's first truthy answer; `every` seconds between tries (an API poll costs the api-server a token and a query:
    runs are polled every 2 s)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            found = fn()
        except Exception:  # noqa: BLE001 - the page is still rendering
            found = None
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def run_end(stack, run_id: str, timeout: float = 600, dag: str = DAG) -> dict:
    """The DAG run once it has succeeded or failed (polled every 2 s)."""
    def ended():
        run = api(stack, "GET", f"/api/v2/dags/{dag}/dagRuns/{run_id}")
        return run if run["state"] in ("success", "failed") else None
    return wait_for(ended, timeout=timeout, what=f"run {run_id} to end", every=2)


def button(d, text, below_y=0):
    from selenium.webdriver.common.by import By
    return wait_for(lambda: next((b for b in d.find_elements(By.TAG_NAME, "button")
                                  if b.text == text and b.is_displayed() and b.location["y"] >= below_y), None),
                    what=f"button {text!r}")


def test_trigger_form_run_and_report_from_the_ui(airflow_stack, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url = airflow_stack["url"]
    api(airflow_stack, "PATCH", "/api/v2/dags/llmd_kv_cache_eval", {"is_paused": False})
    d = browser(tmp_path)
    try:
        d.get(url)
        wait_for(lambda: d.find_elements(By.NAME, "username"), what="login form")[0].send_keys("admin")
        d.find_element(By.NAME, "password").send_keys(airflow_stack["password"])
        d.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        time.sleep(2)
        d.get(f"{url}/dags/llmd_kv_cache_eval")
        button(d, "Trigger").click()
        wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "[aria-label='Remove Qwen/Qwen3-8B']"), what="trigger form")
        # every param is on the form with its description and allowed values
        page = d.find_element(By.TAG_NAME, "body").text
        for needle in ("models", "configs", "concurrency", "duration_s", "llmd_version", "trials",
                       "Allowed: Qwen/Qwen3-0.6B", "Allowed: no-offload, native-offload, llm-d-redis, llm-d-valkey"):
            assert needle in page, needle
        # one cell: without its baseline a run has no baseline repeat (design: aba) either
        for chip in ("Qwen/Qwen3-8B", "Qwen/Qwen3-14B", "Qwen/Qwen3-32B-AWQ", "no-offload", "native-offload",
                     "llm-d-redis"):
            d.find_element(By.CSS_SELECTOR, f"[aria-label='Remove {chip}']").click()
        from selenium.webdriver.common.action_chains import ActionChains

        editor = d.find_elements(By.CSS_SELECTOR, ".monaco-editor")[0]
        d.execute_script("arguments[0].scrollIntoView({block: 'center'})", editor)
        editor.find_element(By.CSS_SELECTOR, ".view-lines").click()
        # Clearing the array leaves "[]" and the form re-formats valid JSON on every keystroke, so type one
        # level between the brackets.
        (ActionChains(d).key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL).send_keys(Keys.DELETE)
         .key_down(Keys.CONTROL).send_keys(Keys.END).key_up(Keys.CONTROL).send_keys(Keys.LEFT).send_keys("4").perform())

        def text():
            return "".join(editor.find_element(By.CSS_SELECTOR, ".view-lines").text.split())

        wait_for(lambda: text() == "[4]", timeout=10, what="the concurrency editor to read [4]")
        for name, value in (("duration_s", "2"), ("prefix_tokens", "64"), ("prompt_tokens", "32"),
                            ("output_tokens", "16"), ("turns", "1")):
            field = d.find_element(By.NAME, f"element_{name}")
            field.send_keys(Keys.CONTROL, "a")
            field.send_keys(value)
        d.save_screenshot(str(ARTIFACTS / "ui-trigger-form.png"))
        button(d, "Trigger", below_y=200).click()
        time.sleep(3)
        runs = api(airflow_stack, "GET", "/api/v2/dags/llmd_kv_cache_eval/dagRuns?order_by=-start_date&limit=1")["dag_runs"]
        assert runs, "the form did not create a run"
        run = runs[0]
        assert run["conf"]["models"] == ["Qwen/Qwen3-0.6B"] and run["conf"]["configs"] == ["llm-d-valkey"]
        assert run["conf"]["concurrency"] == [4] and float(run["conf"]["duration_s"]) == 2
        # a blank page while the run goes: the UI's polling kept chromium and the api-server at ~60 % of a core
        d.get("about:blank")
        run = run_end(airflow_stack, run["dag_run_id"])
        assert run["state"] == "success", run
        # the run's Report tab (plugin external view) and the report it embeds
        d.get(f"{url}/dags/llmd_kv_cache_eval/runs/{run['dag_run_id']}")
        time.sleep(3)
        wait_for(lambda: d.find_elements(By.PARTIAL_LINK_TEXT, "Report"), what="Report tab")[0].click()
        time.sleep(3)
        d.save_screenshot(str(ARTIFACTS / "ui-run-report-tab.png"))
        d.get(f"{url}/llmd-bench/reports/{run['dag_run_id']}/report.html")
        body = d.find_element(By.TAG_NAME, "body").text
        assert "The serving layer was SIMULATED" in body and "llm-d-valkey" in body
        d.save_screenshot(str(ARTIFACTS / "ui-report.png"))
    finally:
        d.quit()
    # the browser read it with its login; without one, or with a forged token, the api-server refuses
    report = f"/llmd-bench/reports/{run['dag_run_id']}/report.html"
    for path in (report, "/llmd-bench/reports/"):
        assert http_status(f"{url}{path}") == 401
        assert http_status(f"{url}{path}", {"Authorization": "Bearer not-a-token"}) == 403
    meta = json.loads(urllib.request.urlopen(urllib.request.Request(
        f"{url}/llmd-bench/reports/{run['dag_run_id']}/report.json", headers=auth_header(airflow_stack))).read())
    assert meta["campaign"] == "llmd_kv_cache_eval"


def http_status(url: str, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_backfill_for_a_new_llmd_version_is_compared_with_the_older_version_in_the_report(airflow_stack):
    """A run of the older version (triggered with `llmd_version` in its conf), then `airflow backfill create ...
    --dag-run-conf '{"llmd_version": ...}'` for the newer one: the backfill's report compares its peaks with the
    older version's. (One backfill: a second would only wait for the scheduler to close the first.)"""
    env = airflow_stack["env"]
    state = airflow_stack["base"] / "state" / "airflow" / "env"
    dag = "llmd_kv_cache_eval"
    api(airflow_stack, "PATCH", f"/api/v2/dags/{dag}", {"is_paused": False})
    # design: single: the baseline's repeat (aba, the local runtime's default) is the trigger-form run's to show
    small = {"models": ["Qwen/Qwen3-0.6B"], "configs": ["no-offload"], "concurrency": [4], "duration_s": 2,
             "prefix_tokens": 64, "prompt_tokens": 32, "output_tokens": 16, "turns": 1, "design": "single"}

    older = api(airflow_stack, "POST", f"/api/v2/dags/{dag}/dagRuns",
                {"logical_date": None, "conf": small | {"llmd_version": "v0.4.0"}})["dag_run_id"]
    assert run_end(airflow_stack, older)["state"] == "success"
    conf = json.dumps(small | {"llmd_version": "v0.8.0"})
    cmd = (f"source {ROOT}/scripts/env.sh && source {state} && airflow backfill create --dag-id {dag} "
           f"--from-date 2026-10-11T00:00:00 --to-date 2026-10-12T00:00:00 --dag-run-conf '{conf}'")
    out = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]

    def backfill_run():
        found = [r for r in api(airflow_stack, "GET", f"/api/v2/dags/{dag}/dagRuns?limit=50")["dag_runs"]
                 if r["run_type"] == "backfill" and r["conf"].get("llmd_version") == "v0.8.0"]
        return found[0] if found and found[0]["state"] in ("success", "failed") else None

    newer = wait_for(backfill_run, timeout=600, what="the v0.8.0 backfill's run to end", every=2)
    assert newer["state"] == "success", newer
    runs = [older, newer["dag_run_id"]]
    report = (airflow_stack["base"] / "reports" / runs[1] / "report.md").read_text()
    assert "## Across llm-d versions" in report
    section = report.split("## Across llm-d versions")[1].split("\n## ")[0]
    assert "| Qwen3-0.6B | no-offload | v0.8.0 |" in section and "| v0.4.0 |" in section
    # both versions ran on the same simulator: no regression may be claimed (v0.4.0 is the older reference)
    assert "No regression beyond noise against older versions." in section and "| older |" in section


def results_url(stack) -> str:
    """The stack's results store (scripts/airflow.sh started it)."""
    out = subprocess.run(["bash", "-c", f"source {ROOT}/scripts/env.sh && llmd-bench db url"], env=stack["env"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def tab(d, route: str):
    """A plugin's tab on a DAG or run page: its link ends with plugin/<url_route>."""
    from selenium.webdriver.common.by import By
    return wait_for(lambda: next((a for a in d.find_elements(By.TAG_NAME, "a")
                                  if (a.get_attribute("href") or "").endswith(f"plugin/{route}")), None),
                    what=f"tab plugin/{route}")


def framed_text(d) -> str:
    """The text of the page the UI shows in its iframe (a plugin's external view)."""
    from selenium.webdriver.common.by import By
    frame = wait_for(lambda: d.find_elements(By.TAG_NAME, "iframe"), what="the view's iframe")[0]
    d.switch_to.frame(frame)
    try:
        return wait_for(lambda: (t := d.find_element(By.TAG_NAME, "body").text) and "Trends" in t and t,
                        what="the Trends page in the iframe")
    finally:
        d.switch_to.default_content()


def test_the_trends_page_is_beside_the_report_tab_and_a_user_without_the_dags_permission_gets_nothing(
        airflow_stack, tmp_path, real_report, artifacts):
    """Ten weekly runs of the campaign in the stack's results store, made of a real GuideLLM report
    (tests/integration/test_trends.py: no-offload steps down at w09, llm-d-redis drifts, native-offload moves by
    noise), w10 also a run of the DAG. A viewer opens w10's Trends tab beside its Report tab, the DAG's Trends tab and
    an earlier run's page; a viewer granted another campaign's DAG only gets 403 and no name of this one's runs."""
    from selenium.webdriver.common.by import By

    from integration.test_trends import store_weeks

    url = airflow_stack["url"]
    store_weeks(results_url(airflow_stack), real_report, campaign=DAG)
    # w10 as a run of the DAG, queued on the paused DAG (never started), so the UI has its run page and tabs
    api(airflow_stack, "PATCH", f"/api/v2/dags/{DAG}", {"is_paused": True})
    api(airflow_stack, "POST", f"/api/v2/dags/{DAG}/dagRuns", {"dag_run_id": "w10", "logical_date": None, "conf": {}})
    d = browser(tmp_path / "reader")
    try:
        log_in(d, url, "reader", password_of(airflow_stack, "reader"))
        d.get(f"{url}/dags/{DAG}/runs/w10")
        report_tab, trends_tab = tab(d, "llmd-bench-report"), tab(d, "llmd-bench-run-trends")
        assert (report_tab.text, trends_tab.text) == ("Report", "Trends")
        trends_tab.click()
        text = framed_text(d)
        for needed in (f"Trends: {DAG}", "This run: w10", "Trends over runs", "step -12.5% at w09", "drifting since w04",
                       "drift +4.5% over 7 runs, w04 to w10", "within the band"):
            assert needed in text, needed
        time.sleep(1)
        d.save_screenshot(str(artifacts / "ui-trends-tab.png"))
        # the same page alone: its plots are embedded, no request of their own
        d.get(f"{url}/llmd-bench/trends/{DAG}?run=w10")
        images = d.find_elements(By.TAG_NAME, "img")
        assert images and all(d.execute_script("return arguments[0].naturalWidth", i) > 0 for i in images)
        d.save_screenshot(str(artifacts / "ui-trends-page.png"))
        # an earlier run: the trends up to it, its own verdicts
        d.get(f"{url}/llmd-bench/trends/{DAG}?run=w09")
        text = d.find_element(By.TAG_NAME, "body").text
        assert "This run: w09" in text and "beyond the band (a step if the next run stays there)" in text
        assert "w10" not in text
        # the DAG's own Trends tab: the campaign's latest run
        d.get(f"{url}/dags/{DAG}")
        tab(d, "llmd-bench-trends").click()
        assert f"Trends: {DAG}" in framed_text(d)
    finally:
        d.quit()
        # never left queued: another test's unpausing would start it
        urllib.request.urlopen(urllib.request.Request(f"{url}/api/v2/dags/{DAG}/dagRuns/w10", method="DELETE",
                                                      headers=auth_header(airflow_stack)))

    d = browser(tmp_path / "outsider")
    try:
        log_in(d, url, "outsider", password_of(airflow_stack, "outsider"))
        d.get(f"{url}/llmd-bench/trends/{DAG}?run=w10")
        text = d.find_element(By.TAG_NAME, "body").text
        assert "Forbidden" in text
        assert not any(name in text for name in ("w10", "w09", "Qwen3-8B", "no-offload", "Trends over runs")), text
        d.save_screenshot(str(artifacts / "ui-trends-forbidden.png"))
        d.get(f"{url}/llmd-bench/reports/")
        assert DAG not in d.find_element(By.TAG_NAME, "body").text.replace(OTHER_DAG, "")
    finally:
        d.quit()
    outsider, reader = auth_header(airflow_stack, "outsider"), auth_header(airflow_stack, "reader")
    for path in (f"/llmd-bench/trends/{DAG}", f"/llmd-bench/trends/{DAG}?run=w10",
                 f"/llmd-bench/trends/{DAG}?run=no-such-run", f"/api/v2/dags/{DAG}"):  # Airflow's own API agrees
        assert http_status(f"{url}{path}", outsider) == 403, path
    assert http_status(f"{url}/llmd-bench/trends/{OTHER_DAG}", outsider) == 404  # granted there: no run stored
    assert http_status(f"{url}/llmd-bench/trends/{DAG}?run=no-such-run", reader) == 404
    assert http_status(f"{url}/llmd-bench/trends/{DAG}?run=w10", reader) == 200
    assert http_status(f"{url}/llmd-bench/trends/{DAG}") == 401
    assert http_status(f"{url}/llmd-bench/trends/{DAG}", {"Authorization": "Bearer not-a-token"}) == 403


def test_a_crash_mid_sweep_and_a_wiped_airflow_home_then_make_airflow_ends_the_run_cleanly(airflow_stack):
    """`kill -9` of every Airflow process group while a sweep runs (the scheduler's LocalExecutor task processes die
    with it), then `rm -rf` of AIRFLOW_HOME (a fresh airflow.cfg, a new key) with the metadata database kept, then
    `make airflow`: it starts, the connections stored under the old key still decrypt (the key is kept beside the
    database), and the run finishes or fails with its teardown run and nothing left. Last in the module: it replaces
    the admin password the other tests use. (One restart for both: each costs about a minute here.)"""
    import signal

    dag = "llmd_kv_cache_eval"
    env = airflow_stack["env"]
    conf = {"models": ["Qwen/Qwen3-0.6B"], "configs": ["llm-d-redis"], "concurrency": [2, 4], "duration_s": 8,
            "prefix_tokens": 64, "prompt_tokens": 32, "output_tokens": 16, "turns": 1, "design": "single"}
    api(airflow_stack, "PATCH", f"/api/v2/dags/{dag}", {"is_paused": False})
    run_id = api(airflow_stack, "POST", f"/api/v2/dags/{dag}/dagRuns", {"logical_date": None, "conf": conf})["dag_run_id"]

    group = "Qwen3-0_6B__llm-d-redis"

    def task_states():
        tis = api(airflow_stack, "GET", f"/api/v2/dags/{dag}/dagRuns/{run_id}/taskInstances?limit=200")["task_instances"]
        return {ti["task_id"].removeprefix(f"{group}."): ti["state"] for ti in tis if ti["task_id"].startswith(group)}

    wait_for(lambda: task_states().get("sweep") == "running", timeout=300, what="the sweep to run", every=1)
    cell = airflow_stack["base"] / "results" / run_id / "Qwen3-0.6B" / "llm-d-redis"
    wait_for(lambda: list(cell.glob("trial-*/guidellm.pid")), timeout=120, what="GuideLLM to start")
    pids = airflow_stack["base"] / "state" / "airflow"
    for name in ("scheduler", "dag-processor", "api-server"):
        os.killpg(int((pids / f"{name}.pid").read_text()), signal.SIGKILL)
    shutil.rmtree(env["AIRFLOW_HOME"])
    out = subprocess.run(["bash", str(ROOT / "scripts" / "airflow.sh"), "start"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    line = next(line for line in out.stdout.splitlines() if line.startswith("Airflow is up"))
    airflow_stack["password"] = line.split("password ")[1].rstrip(")")
    conn = api(airflow_stack, "GET", "/api/v2/connections/llmd_results")
    assert conn["conn_type"] == "postgres" and conn["host"] == "127.0.0.1"
    run_end(airflow_stack, run_id, timeout=900)
    assert task_states()["teardown"] == "success", task_states()
    state = json.loads((cell / "runtime.json").read_text())
    assert state["processes"] == [] and state["leftovers"] == []
    assert not list(cell.glob("trial-*/guidellm.pid"))
    from llmd_bench.measure.processes import pid_alive, port_is_free
    assert not any(pid_alive(p["pid"]) for p in state["stopped"])
    assert all(port_is_free(p["port"]) for p in state["stopped"] if p["port"])
