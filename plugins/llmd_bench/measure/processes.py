"""Start, watch and stop the local runtime's server processes, and prove they are gone."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from llmd_bench.model.errors import RuntimeStepError


@dataclass
class ManagedProcess:
    name: str
    pid: int
    port: int
    cmd: list[str]
    log: str

    def to_dict(self) -> dict:
        return asdict(self)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    # A zombie child of ours is not alive for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def start(name: str, cmd: list[str], port: int, log_path: Path, env: dict[str, str] | None = None) -> ManagedProcess:
    """Start a server in its own session so it outlives the step that started it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, **(env or {})})
    return ManagedProcess(name=name, pid=proc.pid, port=port, cmd=cmd, log=str(log_path))


def tail(path: str | Path, lines: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _fail_if_dead(proc: ManagedProcess) -> None:
    if not pid_alive(proc.pid):
        raise RuntimeStepError(f"{proc.name} (pid {proc.pid}) exited while starting; last log lines:\n{tail(proc.log)}")


def wait_http(proc: ManagedProcess, url: str, timeout_s: float) -> None:
    """Wait until `url` answers 200; fail fast (with the log tail) if the process dies."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        _fail_if_dead(proc)
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise RuntimeStepError(f"{proc.name} did not answer {url} within {timeout_s:g} s ({last}); last log lines:\n{tail(proc.log)}")


def resp_command(port: int, *args: str, timeout_s: float = 2.0, host: str = "127.0.0.1") -> str:
    """Send one command to a Redis/Valkey server (RESP) and return the raw reply; no client library needed."""
    payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
    with socket.create_connection((host, port), timeout=timeout_s) as s:
        s.sendall(payload.encode())
        chunks = []
        s.settimeout(timeout_s)
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
            reply = b"".join(chunks)
            if _resp_complete(reply):
                return reply.decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def _resp_complete(reply: bytes) -> bool:
    if reply[:1] in (b"+", b"-", b":"):
        return reply.endswith(b"\r\n")
    if reply[:1] == b"$":
        header, _, rest = reply.partition(b"\r\n")
        size = int(header[1:])
        return size < 0 or len(rest) >= size + 2
    return reply.endswith(b"\r\n")


def wait_resp_ping(proc: ManagedProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        _fail_if_dead(proc)
        try:
            reply = resp_command(proc.port, "PING")
            if reply.startswith("+PONG"):
                return
            last = reply.strip()
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeStepError(f"{proc.name} did not answer PING on port {proc.port} within {timeout_s:g} s ({last})")


def stop(proc: ManagedProcess, grace_s: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after the grace period."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            os.kill(proc.pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            _reap(proc.pid)
            if not pid_alive(proc.pid) and not _group_alive(proc.pid):
                return
            time.sleep(0.1)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Members may all be zombies waiting for their parent; those hold no port.
    return bool(group_members(pgid))


def group_members(pgid: int) -> list[int]:
    """The pids of a process group's members that are not zombies (from /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().split(") ", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return sorted(members)


def leftovers(procs: list[ManagedProcess]) -> list[str]:
    """What is still there after a stop: live processes and bound ports, described for the log."""
    problems = []
    for p in procs:
        if pid_alive(p.pid) or _group_alive(p.pid):
            problems.append(f"{p.name} (pid {p.pid}) is still running")
        if p.port and not port_is_free(p.port):
            problems.append(f"{p.name}'s port {p.port} on 127.0.0.1 is still bound")
    return problems


def start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot): with the pid, it names one process even
    after pids are reused."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def record_group(path: Path, pid: int, cmd: list[str]) -> None:
    """Note a process group we started outside the managed servers (the load generator), so that a later
    attempt can stop it when the step that started it was killed (SIGKILL runs no clean-up)."""
    path.write_text(json.dumps({"pid": pid, "start_time": start_time(pid), "cmd": cmd[:3]}))


def stop_recorded_group(path: Path) -> str | None:
    """Stop the group noted in `path` if its leader is still the process we started; forget it either way.
    Returns what was stopped."""
    try:
        noted = json.loads(path.read_text())
        pid = int(noted["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)
        return None
    stopped = None
    if pid_alive(pid) and noted.get("start_time") and start_time(pid) == noted["start_time"]:
        stop(ManagedProcess(name=Path(str(noted.get("cmd", ["?"])[0])).name, pid=pid, port=0, cmd=[], log=""))
        stopped = f"{' '.join(noted.get('cmd', [])[:2])} (pid {pid})"
    path.unlink(missing_ok=True)
    return stopped


def stop_recorded_groups(files: list[Path]) -> list[str]:
    return [s for f in files if (s := stop_recorded_group(f))]
