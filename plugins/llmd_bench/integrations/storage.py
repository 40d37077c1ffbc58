"""Results in object storage: how step pods and Airflow hand files to each other.

`LLMD_BENCH_RESULTS_URL` names the store: `s3://bucket/prefix` (any S3-compatible service; endpoint from
`LLMD_BENCH_S3_ENDPOINT` or `AWS_ENDPOINT_URL`, credentials from the usual `AWS_*` variables) or
`file:///path` (a shared mount). Unset means the results folder itself is the store (the local runtime).

Layout under the URL: `results/<run_id>/<model>/<config>/...` (a cell's files, as in the results folder)
and `reports/<run_id>/...`. A step pulls its cell's folder into its scratch results folder, works there,
and pushes back only the files it created or changed, so steps running at the same time (teardown and
load_results) never overwrite each other's files.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from llmd_bench.measure.cell_folder import RECORD_PARTS_DIR, RUN_SUMMARY_FILES
from llmd_bench.model import paths
from llmd_bench.model.errors import LlmdBenchError
from llmd_bench.model.runtimes import cluster_runtime
from llmd_bench.model.settings import SettingsError, settings
from llmd_bench.stack.runtime import selected_runtime

URL_ENV = "LLMD_BENCH_RESULTS_URL"
SCHEMES = ("s3", "file")
# Never leave the machine: lock files, temporary files of atomic writes, local process state.
_PRIVATE_PREFIXES = (".",)


class StorageError(LlmdBenchError):
    pass


@functools.cache
def _botocore_loader() -> Any:
    """One botocore data loader per process: each store's session would otherwise parse the S3 service model and the
    endpoint rules from their JSON files again (about 0.2 CPU-s per store)."""
    from botocore.loaders import create_loader  # deferred: loads botocore, for s3:// stores only

    return create_loader()


def _s3_session() -> Any:
    """A session of its own for each store (credentials are read from the environment when it is used), sharing the
    process's data loader (s3fs's `session` option, s3fs/core.py @2026.9.0; botocore's `data_loader` component)."""
    from aiobotocore.session import AioSession  # deferred: loads aiobotocore, for s3:// stores only

    session = AioSession()
    session.register_component("data_loader", _botocore_loader())
    return session


class ObjectStore:
    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in SCHEMES:
            raise StorageError(f"{URL_ENV}={url!r}: scheme must be one of {list(SCHEMES)} "
                               "(s3://bucket/prefix or file:///path)")
        self.url = url.rstrip("/")
        self.scheme = parsed.scheme
        import fsspec  # deferred: loads fsspec

        if self.scheme == "s3":
            if not parsed.netloc:
                raise StorageError(f"{URL_ENV}={url!r}: an s3 URL needs a bucket (s3://bucket/prefix)")
            self.root = f"{parsed.netloc}{parsed.path}".rstrip("/")
            self.endpoint = settings().store_endpoint
            # A store that is down must fail the step in seconds with its address, not retry for minutes.
            options: dict[str, Any] = {"skip_instance_cache": True, "session": _s3_session(),
                                       "config_kwargs": {"connect_timeout": 5, "read_timeout": 60,
                                                         "retries": {"max_attempts": 2, "mode": "standard"}}}
            if self.endpoint:
                options["endpoint_url"] = self.endpoint
            self.fs = fsspec.filesystem("s3", **options)
        else:
            self.root = parsed.path.rstrip("/") or "/"
            self.endpoint = None
            self.fs = fsspec.filesystem("file")

    def key(self, *parts: str) -> str:
        return "/".join([self.root, *[p.strip("/") for p in parts if p]])

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FileNotFoundError:
            raise
        except Exception as exc:
            where = f" at {self.endpoint}" if self.endpoint else ""
            raise StorageError(f"object storage {self.url}{where}: {what} failed: {type(exc).__name__}: {exc}") from exc

    def list_files(self, *parts: str) -> dict[str, int]:
        """Relative path -> size of every object under the prefix (empty when there is none)."""
        prefix = self.key(*parts)
        try:
            found = self._call(f"listing {prefix}", self.fs.find, prefix, detail=True)
        except FileNotFoundError:
            return {}
        return {name[len(prefix):].lstrip("/"): int(info.get("size") or 0) for name, info in found.items()
                if info.get("type") == "file"}

    def download_tree(self, local_dir: Path, *parts: str, select: Callable[[str], bool] | None = None) -> set[str]:
        """The objects under the prefix, downloaded into `local_dir` unless a local file of that name exists
        (what this machine wrote is never replaced: the local runtime shares one folder). Returns their names."""
        files = {rel for rel in self.list_files(*parts) if select is None or select(rel)}
        for rel in sorted(files):
            target = local_dir / rel
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.download")
            self._call(f"downloading {rel}", self.fs.get_file, self.key(*parts, rel), str(tmp))
            os.replace(tmp, target)
        return files

    def upload(self, local_file: Path, *parts: str) -> None:
        target = self.key(*parts)
        if self.scheme == "file":
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        self._call(f"uploading {local_file.name}", self.fs.put_file, str(local_file), target)

    def delete(self, *parts: str) -> None:
        try:
            self._call(f"deleting {'/'.join(parts)}", self.fs.rm_file, self.key(*parts))
        except FileNotFoundError:
            pass

    def read_bytes(self, *parts: str) -> bytes | None:
        try:
            return self._call(f"reading {'/'.join(parts)}", self.fs.cat_file, self.key(*parts))
        except FileNotFoundError:
            return None

    def list_dirs(self, *parts: str) -> list[str]:
        prefix = self.key(*parts)
        try:
            entries = self._call(f"listing {prefix}", self.fs.ls, prefix, detail=True)
        except FileNotFoundError:
            return []
        return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory")


DEFAULT_CLUSTER_URL = "s3://llmd-bench"


def results_url() -> str | None:
    """The store's URL: LLMD_BENCH_RESULTS_URL, else s3://llmd-bench in the kubernetes runtime (what the
    step pods are given), else none (the local runtime keeps results in its folder)."""
    url = settings().results_url
    if url:
        return url

    return DEFAULT_CLUSTER_URL if cluster_runtime(selected_runtime()) else None


def configured() -> ObjectStore | None:
    url = results_url()
    if not url:
        return None
    store = ObjectStore(url)
    if store.scheme == "file" and Path(store.root).resolve() == paths.results_root().parent.resolve():
        return None  # the store is the local folder itself: nothing to move
    return store


@dataclass
class Snapshot:
    """What a folder held after the pull, so that the push sends only what the step changed."""

    local_dir: Path
    remote_parts: tuple[str, ...]
    files: dict[str, tuple[int, int]] = field(default_factory=dict)
    remote: set[str] = field(default_factory=set)  # the objects that were in the store at the pull


def _local_files(folder: Path) -> dict[str, tuple[int, int]]:
    out = {}
    if folder.exists():
        for f in folder.rglob("*"):
            rel = f.relative_to(folder)
            if f.is_file() and not f.is_symlink() and not any(p.startswith(_PRIVATE_PREFIXES) for p in rel.parts):
                st = f.stat()
                out[rel.as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


def pull(local_dir: Path, base: Path, remote_top: str, store: ObjectStore | None = None,
         select: Callable[[str], bool] | None = None) -> Snapshot | None:
    """Copy the folder's objects (those `select` accepts) into `local_dir` (under `base`, mirrored under
    `remote_top/`)."""
    store = store or configured()
    if store is None:
        return None
    parts = (remote_top, *local_dir.relative_to(base).parts)
    local_dir.mkdir(parents=True, exist_ok=True)
    remote = store.download_tree(local_dir, *parts, select=select)
    print(f"[llmd-bench] pulled {len(remote)} file(s) from {store.key(*parts)}", flush=True)
    return Snapshot(local_dir, parts, _local_files(local_dir), remote)


def push(snapshot: Snapshot | None, store: ObjectStore | None = None) -> int:
    """Send the files the step created or changed; delete the objects of files it removed (an archive
    volume replaced by its .xz), so the next pod does not pull them again."""
    if snapshot is None:
        return 0
    store = store or configured()
    assert store is not None
    now = _local_files(snapshot.local_dir)
    changed = [rel for rel, sig in now.items() if snapshot.files.get(rel) != sig]
    wait = _PushWait()
    for rel in sorted(changed):
        wait.call(store.upload, snapshot.local_dir / rel, *snapshot.remote_parts, rel)
    removed = sorted(rel for rel in snapshot.remote if rel in snapshot.files and rel not in now)
    for rel in removed:
        wait.call(store.delete, *snapshot.remote_parts, rel)
    print(f"[llmd-bench] pushed {len(changed)} file(s) to {store.key(*snapshot.remote_parts)}"
          + (f", removed {len(removed)}" if removed else ""), flush=True)
    return len(changed)


PUSH_WAIT_ENV = "LLMD_BENCH_STORE_PUSH_WAIT_S"
DEFAULT_PUSH_WAIT_S = 120.0


class _PushWait:
    """A push carries what the step measured, and its pod's disk goes with the pod: while the store is
    unreachable (restarting, a network blip) keep trying for LLMD_BENCH_STORE_PUSH_WAIT_S in all (default
    120 s) before failing the step. A pull, which has nothing to lose yet, fails at once."""

    def __init__(self) -> None:
        try:
            self.budget_s = settings().store_push_wait_s  # default DEFAULT_PUSH_WAIT_S
        except SettingsError as exc:
            raise StorageError(str(exc)) from None
        self.deadline = time.monotonic() + self.budget_s

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        delay = 1.0
        while True:
            try:
                return fn(*args)
            except StorageError as exc:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    raise StorageError(f"{exc} (still failing after retrying for {self.budget_s:g} s; "
                                       f"{PUSH_WAIT_ENV} sets how long)") from None
                print(f"[llmd-bench] {exc}; retrying in {min(delay, left):.0f} s", flush=True)
                time.sleep(min(delay, left))
                delay = min(delay * 2, 15.0)


def pull_cell(cell_dir: Path) -> Snapshot | None:
    return pull(cell_dir, paths.results_root(), "results")


def pull_run(run_dir: Path) -> Snapshot | None:
    """What compare reads of each cell: the records (with their parts) and the parsed levels, not the GuideLLM
    reports or archives (a 16-cell run holds hundreds of MB of those)."""

    return pull(run_dir, paths.results_root(), "results",
                select=lambda rel: rel.rsplit("/", 1)[-1] in RUN_SUMMARY_FILES or f"/{RECORD_PARTS_DIR}/" in f"/{rel}")


def push_report(report_dir: Path) -> int:
    """Send a generated report folder to `reports/<run_id>/`."""
    store = configured()
    if store is None:
        return 0
    snapshot = Snapshot(report_dir, ("reports", report_dir.name))
    return push(snapshot, store)


def read_report_file(run_id: str, name: str) -> bytes | None:
    """A report file from the store (the Airflow UI reads reports made in pods from here)."""
    store = configured()
    if store is None:
        return None
    return store.read_bytes("reports", paths.safe_component(run_id), name)


def report_runs() -> list[str]:
    store = configured()
    return store.list_dirs("reports") if store else []
