"""What a benchmark run started, written down as it goes, so that the next run can clean up after
one that was killed (``timeout -s KILL``, an OOM kill, a closed terminal) before its own clean-up ran.

A run's record is a JSON file under ``/tmp/disputes-bench-runs/``, named after the run's process and
holding its start time (a reused pid is not mistaken for the run). Every process the run starts, and
every process those start, inherits ``DISPUTES_BENCH_RUN=<the record's id>`` in its environment (a
mark no other process has, unlike a pid or a process group id, which the system reuses). Each other
thing the run makes is noted as it is made: PostgreSQL data folders, RabbitMQ virtual hosts, network
namespaces, work folders. `sweep` (called when a run starts) finds the records whose process is gone,
kills the processes carrying their mark and undoes what they list; a run that ends normally removes
its own record after its clean-up.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

RUNS = Path(os.environ.get("OP_BENCH_RUNS", "/tmp/disputes-bench-runs"))
KINDS = ("pg_data", "vhosts", "namespaces", "dirs")
MARK = "DISPUTES_BENCH_RUN"

log = logging.getLogger("disputes.bench")
_lock = threading.Lock()
_record: Path | None = None


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: start time in clock ticks since boot


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def recorded(runs: Path | None = None) -> Iterator[None]:
    """Keep this run's record (under `runs`, default RUNS) while the block runs; dead runs' records
    are swept first."""
    global _record
    runs = runs or RUNS
    sweep(runs)
    runs.mkdir(parents=True, exist_ok=True)
    start = _start_time(os.getpid())
    run_id = f"{os.getpid()}-{start}"
    path = runs / f"{run_id}.json"
    data = {"pid": os.getpid(), "start": start, "id": run_id, **{k: [] for k in KINDS}}
    path.write_text(json.dumps(data))
    _record, before = path, os.environ.get(MARK)
    os.environ[MARK] = run_id  # inherited by every child, and theirs
    try:
        yield
    finally:
        _record = None
        if before is None:
            os.environ.pop(MARK, None)
        else:
            os.environ[MARK] = before
        with contextlib.suppress(OSError):
            path.unlink()


def note(kind: str, value: object) -> None:
    """Write down one thing this run made (nothing when no record is kept)."""
    if _record is None:
        return
    with _lock:
        data = _load(_record)
        if value not in data.setdefault(kind, []):
            data[kind].append(value)
            tmp = _record.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            tmp.replace(_record)


def sweep(runs: Path | None = None) -> list[str]:
    """Undo what the records of runs no longer alive list; returns what was cleaned."""
    cleaned: list[str] = []
    runs = runs or RUNS
    if not runs.is_dir():
        return cleaned
    for path in runs.glob("*.json"):
        data = _load(path)
        pid = int(data.get("pid", 0) or 0)
        if pid and _start_time(pid) is not None and _start_time(pid) == data.get("start"):
            continue  # that run is still going
        cleaned += _undo(data)
        with contextlib.suppress(OSError):
            path.unlink()
    if cleaned:
        log.warning("cleaned up after a benchmark run that was killed: %s", ", ".join(cleaned))
    return cleaned


def _undo(data: dict) -> list[str]:
    done = [f"process {pid}" for pid in _kill_marked(str(data.get("id", "")))]
    for folder in data.get("pg_data", []):
        done += _stop_postgres(Path(folder))
    for name in data.get("namespaces", []):
        if name in namespaces():
            remove_namespace(name)
            done.append(f"namespace {name}")
    for vhost in data.get("vhosts", []):
        ctl = shutil.which("rabbitmqctl")
        if ctl and subprocess.run([ctl, "delete_vhost", vhost], check=False, capture_output=True, timeout=60).returncode == 0:
            done.append(f"vhost {vhost}")
    for folder in data.get("dirs", []):
        if Path(folder).exists():
            shutil.rmtree(folder, ignore_errors=True)
            done.append(f"folder {folder}")
    return done


def _kill_marked(run_id: str) -> list[int]:
    """SIGKILL every process whose environment carries the run's mark."""
    if not run_id:
        return []
    mark, killed = f"{MARK}={run_id}".encode() + b"\0", []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            marked = mark in (proc / "environ").read_bytes()
        except OSError:
            continue
        if marked:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
    return killed


def _stop_postgres(data_dir: Path) -> list[str]:
    pid_file = data_dir / "postmaster.pid"
    try:
        postmaster = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(postmaster, signal.SIGQUIT)  # PostgreSQL's immediate shutdown: every backend goes with it
        return [f"PostgreSQL {data_dir}"]
    return []


def namespaces() -> list[str]:
    done = subprocess.run(["ip", "netns", "list"], check=False, capture_output=True, text=True, timeout=30)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def remove_namespace(name: str) -> None:
    """Kill every process still in the namespace, then delete it (its veth ends go with it)."""
    done = subprocess.run(["ip", "netns", "pids", name], check=False, capture_output=True, text=True, timeout=30)
    for pid in done.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    time.sleep(0.1)
    subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True, timeout=30)
