"""What every benchmark shares: the servers, a private database and Redis db, child processes,
statistics and the shape of a result.

Every benchmark runs against its own PostgreSQL database (created fresh, dropped after) and its
own Redis db number, on loopback addresses only, so it never touches the tests' ``test``
database nor another benchmark's data. Everything it starts it stops, and every wait is bounded.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlparse

import psycopg2
import redis
import tomli_w

from disputes.settings import Settings
from disputes.wiring import build_app
from models import init_schema
from models.base import database
from policy import default_policy_dict, load_policy
from tools.bench.leftovers import note

#: The server the benchmarks create their databases on (the admin connection goes to ``test``).
DEFAULT_PG = "postgresql://root@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379"
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672//"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class BenchError(Exception):
    """A benchmark could not run (a server unreachable, a child process died, a wait timed out)."""


@dataclass
class Row:
    """One line of the table: a measured figure beside its baseline from the same run."""

    benchmark: str
    metric: str
    unit: str
    median: float
    baseline: float | None
    baseline_label: str
    #: ``median / baseline`` (or the reverse for costs, see `higher_is_better`).
    ratio: float | None
    target: str
    #: None when the row has no target of its own (a detail).
    met: bool | None
    runs: list[float] = field(default_factory=list)
    baseline_runs: list[float] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Outcome:
    """What one benchmark produced: its rows and free-form details (latencies, sizes, profiles)."""

    name: str
    rows: list[Row]
    details: dict[str, object] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class Servers:
    """Where the servers are (loopback only)."""

    pg: str = DEFAULT_PG
    redis: str = DEFAULT_REDIS
    amqp: str = DEFAULT_AMQP

    @classmethod
    def from_env(cls) -> "Servers":
        servers = cls(os.environ.get("OP_BENCH_PG") or DEFAULT_PG, os.environ.get("OP_BENCH_REDIS") or DEFAULT_REDIS,
                      os.environ.get("OP_BENCH_AMQP") or DEFAULT_AMQP)
        for url in (servers.pg, servers.redis, servers.amqp):
            host = urlparse(url).hostname or ""
            if host not in LOOPBACK:
                raise BenchError(f"benchmarks run on loopback servers only, not {host!r}")
        return servers

    def database_url(self, name: str) -> str:
        parsed = urlparse(self.pg)
        return parsed._replace(path=f"/{name}").geturl()

    def redis_url(self, db: int) -> str:
        return f"{self.redis.rstrip('/')}/{db}"

    def admin(self):  # -> psycopg2 connection, autocommit
        parsed = urlparse(self.pg)
        conn = psycopg2.connect(host=parsed.hostname, port=parsed.port or 5432, user=parsed.username,
                                password=parsed.password, dbname=parsed.path.lstrip("/") or "postgres",
                                connect_timeout=3)
        conn.autocommit = True
        return conn


@contextlib.contextmanager
def fresh_database(servers: Servers, name: str) -> Iterator[str]:
    """A new, empty PostgreSQL database `name` for one benchmark; dropped when it ends."""
    admin = servers.admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{name}"')
        yield servers.database_url(name)
    finally:
        with contextlib.suppress(Exception):
            if database.obj is not None and hasattr(database.obj, "close_all"):
                database.obj.close_all()
        with contextlib.suppress(Exception), admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def flush_redis(url: str) -> None:
    redis.Redis.from_url(url, socket_timeout=5).flushdb()


def pg_connect(url: str):  # -> psycopg2 connection, autocommit: the benchmarks' own SQL (setup, counts)
    parsed = urlparse(url)
    conn = psycopg2.connect(host=parsed.hostname, port=parsed.port or 5432, user=parsed.username,
                            password=parsed.password, dbname=parsed.path.lstrip("/"), connect_timeout=3)
    conn.autocommit = True
    return conn


def scalar(conn, sql: str, args: tuple = ()) -> object:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        row = cur.fetchone()
    return row[0] if row else None


def make_app(database_url: str, broker_url: str, intake_url: str = "memory://", policy=None,
             **settings: object):
    """An app on the benchmark's database and broker, with the schema created."""
    app = build_app(Settings(database_url=database_url, broker_url=broker_url, intake_url=intake_url,
                             **settings), policy=policy)  # type: ignore[arg-type]
    with app.db.connection_context():
        init_schema()
    return app


def write_policy(directory: Path, **deadlines: str) -> Path:
    """The default policy with some deadlines changed, as a TOML file for child processes."""
    data = default_policy_dict()
    data["deadlines"] = {**data["deadlines"], **deadlines}  # type: ignore[dict-item]
    path = directory / "policy.toml"
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    load_policy(str(path))
    return path


# ---- child processes ---------------------------------------------------------------------------

def _bin(name: str, module: str) -> list[str]:
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


DISPUTES = _bin("disputes", "disputes.cli")
DRAMATIQ = _bin("dramatiq", "dramatiq")


def child_env(**op: str) -> dict[str, str]:
    """This environment without any ``OP_*`` setting, plus the benchmark's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OP_") and k != "PGOPTIONS"}
    env.update(op)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Procs:
    """Child processes, each in its own session; all stopped (TERM, then KILL) on exit."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.children: list[tuple[str, subprocess.Popen, Path]] = []
        self.started = 0

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        self.started += 1
        log = self.logdir / f"{name}-{self.started}.log"
        profiles = os.environ.get("OP_BENCH_PROFILE")  # a folder: each child runs under py-spy
        if profiles and shutil.which("py-spy", path=str(Path(sys.executable).parent)):
            Path(profiles).mkdir(parents=True, exist_ok=True)
            out = Path(profiles) / f"{name}-{self.started}.txt"
            argv = [shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy", "record",  # type: ignore[list-item]
                    "--format", "raw", "--subprocesses", "--rate", "50", "-o", str(out), "--", *argv]
        with open(log, "wb") as handle:
            popen = subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        self.children.append((name, popen, log))
        return popen

    def check(self) -> None:
        for name, popen, log in self.children:
            if popen.poll() is not None:
                raise BenchError(f"{name} exited {popen.returncode}:\n{tail(log)}")

    def stop(self, popen: subprocess.Popen) -> None:
        if popen.poll() is None:
            popen.send_signal(_STOP_SIGNAL())
            try:
                popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)  # and anything left in its group (dramatiq's workers)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=5)

    def finished(self, popen: subprocess.Popen) -> Path:
        """Forget a child that exited on purpose; returns its log."""
        for entry in list(self.children):
            if entry[1] is popen:
                self.children.remove(entry)
                return entry[2]
        raise KeyError(popen.pid)

    def stop_all(self) -> None:
        live = [p for _, p, _ in self.children if p.poll() is None]
        for popen in live:
            popen.send_signal(_STOP_SIGNAL())
        deadline = time.monotonic() + 10
        for popen in live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        for _, popen, _ in self.children:
            self.stop(popen)

    def __enter__(self) -> "Procs":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def _STOP_SIGNAL() -> int:
    """SIGTERM; SIGINT when children run under py-spy, which then writes its profile."""
    return signal.SIGINT if os.environ.get("OP_BENCH_PROFILE") else signal.SIGTERM


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"disputes-bench-{prefix}-") as path:
        note("dirs", path)
        yield Path(path)


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05,
               check: Callable[[], None] | None = None) -> object:
    """Poll until `predicate` returns something truthy; `BenchError` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def rss_kb(pid: int) -> int:
    """Resident set size of one process, in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# ---- statistics ------------------------------------------------------------------------------

def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    """The `q`-th percentile (0..100), nearest-rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(round(q / 100 * len(ordered) + 0.5))))
    return ordered[rank - 1]


def ratio(a: float, b: float | None) -> float | None:
    return a / b if b else None
