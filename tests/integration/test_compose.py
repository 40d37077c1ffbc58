"""docker-compose.yaml cannot start here (no Docker engine): validate it against the Compose Specification,
resolve its variables the way Compose does (with the `.env` that docker/make-env.sh writes), and check that its
services, secrets, volumes, ports and connections fit together. The results database's init script runs
against a real PostgreSQL server when this machine has one."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import ROOT

SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"
AIRFLOW = {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"}
SHARED_SECRETS = {"AIRFLOW__API_AUTH__JWT_SECRET": "AIRFLOW_JWT_SECRET",
                  "AIRFLOW__API__SECRET_KEY": "AIRFLOW_API_SECRET_KEY",
                  "AIRFLOW__CORE__FERNET_KEY": "AIRFLOW_FERNET_KEY"}
PASSWORDS = {"POSTGRES_PASSWORD", "LLMD_RESULTS_DB_PASSWORD", "MINIO_ROOT_PASSWORD"}
REQUIRED = set(SHARED_SECRETS.values()) | PASSWORDS


class Missing(Exception):
    pass


_VAR = re.compile(r"\$(?:(?P<dollar>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
                  r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(node, env: dict[str, str]):
    """Compose's variable interpolation (the forms this file uses: $$, $VAR, ${VAR}, ${VAR[:]-default},
    ${VAR[:]?message}, ${VAR[:]+alt}); a missing required variable raises Missing naming it."""
    if isinstance(node, dict):
        return {k: interpolate(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env) for v in node]
    if not isinstance(node, str):
        return node

    def sub(m: re.Match) -> str:
        if m.group("dollar"):
            return "$"
        name = m.group("name") or m.group("plain")
        op, arg, value = m.group("op"), m.group("arg"), env.get(name)
        absent = value is None or (op is not None and op.startswith(":") and value == "")
        if op in ("-", ":-"):
            return arg if absent else value
        if op in ("?", ":?"):
            if absent:
                raise Missing(f"{name}: {arg}")
            return value
        if op in ("+", ":+"):
            return "" if absent else arg
        return value or ""

    return _VAR.sub(sub, node)


def parse_env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


def make_env(directory: Path) -> dict[str, str]:
    out = directory / ".env"
    run = subprocess.run(["sh", str(ROOT / "docker" / "make-env.sh"), str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return parse_env_file(out)


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


@pytest.fixture(scope="module")
def dotenv(tmp_path_factory):
    return make_env(tmp_path_factory.mktemp("compose-env"))


@pytest.fixture(scope="module")
def resolved(compose, dotenv):
    return interpolate(compose, dotenv)


@pytest.mark.skipif(not SCHEMA.exists(), reason="shared/schemas is not beside this checkout")
def test_compose_file_matches_the_compose_specification(compose, resolved):
    schema = json.loads(SCHEMA.read_text())
    jsonschema.validate(compose, schema)
    jsonschema.validate(resolved, schema)  # also once the variables are in


def test_the_env_generator_writes_every_required_variable_once_and_never_overwrites(tmp_path, dotenv):
    assert REQUIRED <= set(dotenv) and all(dotenv[k] for k in REQUIRED)
    (tmp_path / "x").mkdir()
    other = make_env(tmp_path / "x")
    assert all(other[k] != dotenv[k] for k in REQUIRED)  # random per installation, no constant secret
    assert oct((tmp_path / "x" / ".env").stat().st_mode & 0o777) == "0o600"
    again = subprocess.run(["sh", str(ROOT / "docker" / "make-env.sh"), str(tmp_path / "x" / ".env")],
                           capture_output=True, text=True)
    assert again.returncode != 0 and "not touching" in again.stderr
    assert parse_env_file(tmp_path / "x" / ".env") == other
    for key in PASSWORDS | {"AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY"}:
        assert re.fullmatch(r"[0-9a-f]{32,}", dotenv[key]), key  # URL-safe: they go into connection URLs
    from cryptography.fernet import Fernet

    token = Fernet(dotenv["AIRFLOW_FERNET_KEY"].encode()).encrypt(b"conn")  # a valid Fernet key
    assert Fernet(dotenv["AIRFLOW_FERNET_KEY"].encode()).decrypt(token) == b"conn"


def test_every_airflow_component_shares_the_same_jwt_secret_secret_key_and_fernet_key(compose, resolved, dotenv):
    services = resolved["services"]
    assert AIRFLOW <= set(services)
    assert {n for n in services if n.startswith("airflow")} == AIRFLOW
    for key, var in SHARED_SECRETS.items():
        values = {services[name]["environment"].get(key) for name in AIRFLOW}
        assert values == {dotenv[var]}, (key, values)  # one value, the same in every container
    # required: without them Compose refuses to start instead of each container inventing its own
    for var in REQUIRED:
        env = {k: v for k, v in dotenv.items() if k != var}
        with pytest.raises(Missing, match=var):
            interpolate(compose, env)
        with pytest.raises(Missing, match=var):
            interpolate(compose, {**env, var: ""})
    with pytest.raises(Missing):
        interpolate(compose, {})


def test_airflow_runs_as_airflow_uid_and_init_hands_it_the_writable_folders(compose, dotenv):
    assert compose["x-airflow-common"]["user"] == "${AIRFLOW_UID:-50000}:0"
    for uid, expected in ((None, "50000:0"), ("1234", "1234:0")):
        env = dict(dotenv, AIRFLOW_UID=uid) if uid else {k: v for k, v in dotenv.items() if k != "AIRFLOW_UID"}
        services = interpolate(compose, env)["services"]
        for name in AIRFLOW - {"airflow-init"}:
            assert services[name]["user"] == expected, name
        init = services["airflow-init"]
        assert init["user"] == "0:0"
        script = " ".join(init["command"])
        assert f'chown "{expected}" /opt/airflow/results /opt/airflow/reports' in script
        assert script.index("chown") < script.index("airflow db migrate")


def test_kubeconfig_mount_never_creates_a_host_path(compose, resolved, dotenv):
    for name in AIRFLOW:
        (mount,) = [v for v in resolved["services"][name]["volumes"]
                    if isinstance(v, dict) and v["target"] == "/opt/airflow/kubeconfig"]
        assert mount["type"] == "bind" and mount["read_only"] is True
        assert mount["bind"]["create_host_path"] is False, name
        assert mount["source"] == "./kubeconfig"
        short = [v for v in resolved["services"][name]["volumes"] if isinstance(v, str) and "kubeconfig" in v]
        assert not short  # the short syntax would create a directory where the file is missing
    other = interpolate(compose, dict(dotenv, KUBECONFIG_FILE="/etc/k.yaml"))["services"]["airflow-scheduler"]
    assert [v["source"] for v in other["volumes"] if isinstance(v, dict)] == ["/etc/k.yaml"]


def test_stores_are_published_on_the_publish_address_and_only_with_required_passwords(compose, dotenv):
    def host_ports(services):
        return {name: svc.get("ports", []) for name, svc in services.items()}

    default = host_ports(interpolate(compose, {k: v for k, v in dotenv.items() if k != "LLMD_BENCH_PUBLISH_ADDRESS"})["services"])
    assert default["minio"] == ["127.0.0.1:9000:9000", "127.0.0.1:9001:9001"]
    assert default["postgres"] == ["127.0.0.1:5432:5432"]
    assert default["airflow-apiserver"] == ["127.0.0.1:8080:8080"]
    published = host_ports(interpolate(compose, dict(dotenv, LLMD_BENCH_PUBLISH_ADDRESS="10.20.30.40",
                                                     LLMD_BENCH_RESULTS_DB_PORT="15432"))["services"])
    assert published["minio"] == ["10.20.30.40:9000:9000", "127.0.0.1:9001:9001"]  # S3 API only; console stays
    assert published["postgres"] == ["10.20.30.40:15432:5432"]
    assert published["airflow-apiserver"] == ["127.0.0.1:8080:8080"]
    for name, ports in published.items():
        if name not in ("minio", "postgres", "airflow-apiserver"):
            assert not ports, name
    # what is published never falls back to a default password
    raw = compose["services"]
    for svc, key in (("postgres", "POSTGRES_PASSWORD"), ("postgres", "LLMD_RESULTS_DB_PASSWORD"),
                     ("minio", "MINIO_ROOT_PASSWORD"), ("minio-init", "MINIO_ROOT_PASSWORD")):
        assert re.fullmatch(r"\$\{" + key + r":\?[^}]+\}", raw[svc]["environment"][key]), (svc, key)
    common = compose["x-airflow-common"]["environment"]
    assert ":?" in common["AWS_SECRET_ACCESS_KEY"] and ":?" in common["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert ":?" in common["AIRFLOW_CONN_LLMD_RESULTS"]
    # documented in the file's header: the variable, the Secret the step pods read and its URL
    header = (ROOT / "docker-compose.yaml").read_text().split("x-airflow-common")[0]
    for words in ("LLMD_BENCH_PUBLISH_ADDRESS", "llmd-bench-results-db", "LLMD_BENCH_STEP_S3_ENDPOINT",
                  "postgresql://llmd_results:<LLMD_RESULTS_DB_PASSWORD>@", "docker/make-env.sh", "AIRFLOW_UID"):
        assert words in header, words


def test_services_volumes_and_connections_are_consistent(compose, resolved, dotenv):
    services = resolved["services"]
    assert {"postgres", "minio", "minio-init"} | AIRFLOW <= set(services)
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, (name, dep)
        for vol in svc.get("volumes", []):
            source = vol["source"] if isinstance(vol, dict) else vol.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists() or source in ("./results", "./reports", "./kubeconfig"), source
            else:
                assert source in compose["volumes"], source
    env = services["airflow-scheduler"]["environment"]
    pw = dotenv["LLMD_RESULTS_DB_PASSWORD"]
    assert env["AIRFLOW_CONN_LLMD_RESULTS"] == f"postgresql://llmd_results:{pw}@postgres:5432/llmd_results"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith(f"airflow:{dotenv['POSTGRES_PASSWORD']}@postgres:5432/airflow")
    pg = services["postgres"]
    assert pg["environment"]["POSTGRES_PASSWORD"] == dotenv["POSTGRES_PASSWORD"]
    assert pg["environment"]["LLMD_RESULTS_DB_PASSWORD"] == pw
    assert "./docker/postgres-init.sh:/docker-entrypoint-initdb.d/10-llmd-results.sh:ro" in pg["volumes"]
    dockerfile = (ROOT / services["airflow-init"]["build"]["dockerfile"]).read_text()
    assert "FROM apache/airflow:3.3.2" in dockerfile and "requirements.txt" in dockerfile


def test_object_store_is_wired_to_airflow_and_created_before_it_starts(resolved, dotenv):
    services = resolved["services"]
    env = services["airflow-scheduler"]["environment"]
    # results and reports travel through MinIO: its service, its bucket, the same credentials
    assert env["LLMD_BENCH_RESULTS_URL"] == "s3://llmd-bench"
    host = env["LLMD_BENCH_S3_ENDPOINT"].split("//")[1].split(":")[0]
    assert host in services and services[host]["image"].startswith("quay.io/minio/minio:RELEASE.")
    init = services["minio-init"]
    assert "mb --ignore-existing store/llmd-bench" in init["command"][0]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert services["airflow-scheduler"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert env["AWS_ACCESS_KEY_ID"] == services["minio"]["environment"]["MINIO_ROOT_USER"] == "llmdbench"
    assert env["AWS_SECRET_ACCESS_KEY"] == services["minio"]["environment"]["MINIO_ROOT_PASSWORD"] \
        == init["environment"]["MINIO_ROOT_PASSWORD"] == dotenv["MINIO_ROOT_PASSWORD"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    return None


@pytest.mark.skipif(_pg_bin() is None or shutil.which("psql") is None or os.geteuid() != 0
                    or shutil.which("runuser") is None, reason="needs Debian's PostgreSQL, psql and root (runuser)")
def test_results_database_init_script_creates_a_role_that_owns_only_the_results_database():
    """docker/postgres-init.sh as the postgres image runs it (psql over the local socket, POSTGRES_USER and
    POSTGRES_DB set), on a real server: the results role logs in with its password, owns llmd_results and
    cannot open Airflow's metadata database."""
    import psycopg2

    pg_bin, port = _pg_bin(), _free_port()
    tmp_path = Path(tempfile.mkdtemp(prefix="llmd-pg-init-"))  # pytest's tmp_path is not reachable by postgres
    tmp_path.chmod(0o755)
    data, sock = tmp_path / "data", tmp_path / "sock"
    for d in (data, sock):
        d.mkdir()
        shutil.chown(d, "postgres")
    # the checkout may sit in a folder postgres cannot enter (CI clones into a mode-700 temp folder)
    script = tmp_path / "postgres-init.sh"
    shutil.copyfile(ROOT / "docker" / "postgres-init.sh", script)
    script.chmod(0o644)
    (tmp_path / "pw").write_text("airflow-pw\n")
    shutil.chown(tmp_path / "pw", "postgres")
    as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run(as_pg + [str(pg_bin / "initdb"), "-D", str(data), "-U", "airflow", "--pwfile", str(tmp_path / "pw"),
                            "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"],
                           check=True, capture_output=True, text=True)
    subprocess.run(as_pg + [str(pg_bin / "pg_ctl"), "-D", str(data), "-w", "-l", str(sock / "pg.log"), "-o",
                            f"-p {port} -k {sock} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        subprocess.run(as_pg + ["createdb", "-h", str(sock), "-p", str(port), "-U", "airflow", "airflow"], check=True)
        env = {"PATH": os.environ["PATH"], "PGHOST": str(sock), "PGPORT": str(port), "POSTGRES_USER": "airflow",
               "POSTGRES_DB": "airflow", "LLMD_RESULTS_DB_PASSWORD": "0123abcd"}
        run = subprocess.run(as_pg + ["env", *[f"{k}={v}" for k, v in env.items()], "sh", str(script)],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="llmd_results", password="0123abcd",
                                dbname="llmd_results")
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE t (x int)")  # the owner can migrate its schema
            cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'llmd_results'")
            assert cur.fetchone() == ("llmd_results",)
            cur.execute("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user")
            assert cur.fetchone() == (False, False, False)
        conn.close()
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(host="127.0.0.1", port=port, user="llmd_results", password="wrong", dbname="llmd_results")
        c2 = psycopg2.connect(host="127.0.0.1", port=port, user="llmd_results", password="0123abcd", dbname="airflow")
        with c2.cursor() as cur, pytest.raises(psycopg2.Error):
            cur.execute("CREATE TABLE intruder (x int)")  # PostgreSQL 15+: no CREATE in others' public schema
        c2.close()
        missing = subprocess.run(as_pg + ["env", *[f"{k}={v}" for k, v in env.items() if k != "LLMD_RESULTS_DB_PASSWORD"],
                                          "sh", str(script)], capture_output=True, text=True)
        assert missing.returncode != 0 and "LLMD_RESULTS_DB_PASSWORD" in missing.stderr
    finally:
        subprocess.run(as_pg + [str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True)
        shutil.rmtree(tmp_path, ignore_errors=True)
