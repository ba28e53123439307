"""Servers of one's own, for a benchmark that stops and restarts them: Redis, a PostgreSQL cluster,
a RabbitMQ virtual host.

Other engineers' tests and benchmarks use the machine's shared servers at the same time, so a
run that restarts a server must own it: `PrivateRedis` is a ``redis-server`` on a free loopback
port without persistence, `PrivatePostgres` a cluster made with ``initdb`` in a temporary folder
(as the ``postgres`` user when run as root, trust authentication) on a free port, and
`RabbitVhost` a virtual host of the shared RabbitMQ (the exchange and queue names of the contract
stay as they are), deleted at the end.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from tools.bench.core import BenchError

#: Where Debian puts PostgreSQL's server programs (the newest version found wins).
PG_ROOT = Path("/usr/lib/postgresql")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise BenchError(f"{what} did not listen on port {port} within {timeout:.0f}s")


class PrivateRedis:
    """``redis-server`` on a free port, no snapshots: a restart loses every queued message."""

    def __init__(self, workdir: Path) -> None:
        self.workdir, self.port = workdir, free_port()
        self.popen: subprocess.Popen | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BenchError("redis-server is not installed")
        log = open(self.workdir / f"redis-{self.restarts}.log", "wb")
        self.popen = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                       "--appendonly", "no", "--dir", str(self.workdir)],
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        _wait_port(self.port, 15, "the private Redis")

    def kill(self) -> None:
        """SIGKILL: the server dies with everything in memory."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)

    def restart(self, down_for: float = 1.0) -> None:
        self.kill()
        time.sleep(down_for)
        self.restarts += 1
        self.start()

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=10)
        self.kill()


def _pg_bin(name: str) -> str:
    versions = sorted((p for p in PG_ROOT.glob("*/bin") if (p / name).exists()),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if versions:
        return str(versions[-1] / name)
    found = shutil.which(name)
    if found is None:
        raise BenchError(f"PostgreSQL's {name} is not installed")
    return found


class PrivatePostgres:
    """A PostgreSQL cluster of our own (``initdb`` into a temporary folder, trust authentication),
    on a free port; as root, its files belong to ``postgres`` and its programs run as that user."""

    def __init__(self, workdir: Path, database: str = "chaos") -> None:
        self.port, self.database = free_port(), database
        self.root = Path(tempfile.mkdtemp(prefix="pg-", dir=workdir))
        self.data, self.sockets, self.log = self.root / "data", self.root / "sock", self.root / "server.log"
        self.restarts = 0
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run(self, argv: list[str], timeout: float = 120) -> None:
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd="/")
        if done.returncode != 0:
            raise BenchError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")

    def create(self) -> None:
        self.sockets.mkdir()
        if self._as_postgres:
            for path in (self.root.parent, self.root):
                os.chmod(path, 0o755)
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")
        self._run([_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                   "--no-sync", "--no-instructions"])
        self.start()
        self._psql(f'CREATE DATABASE "{self.database}"')

    def _psql(self, sql: str) -> None:
        import psycopg2
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                                connect_timeout=5)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def start(self) -> None:
        # A commit must be durable when it returns: the soak's PostgreSQL "crash" (an immediate stop) may
        # not lose acknowledged transactions, or it would lose what the system already acked upstream
        # (synchronous_commit=off did: complaint C6-00473 of a 2,000-ticket soak). fsync=off stays: it only
        # matters when the operating system crashes, which the soak does not simulate.
        options = (f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
                   f"-c synchronous_commit=on -c full_page_writes=off -c max_connections=300 "
                   f"-c shared_buffers=128MB")
        self._run([_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60",
                   "start"])
        _wait_port(self.port, 30, "the private PostgreSQL")

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"])

    def restart(self, down_for: float = 1.0) -> None:
        """A crash and a recovery: stop in ``immediate`` mode (every backend killed, no checkpoint)."""
        self.stop("immediate")
        time.sleep(down_for)
        self.restarts += 1
        self.start()

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class RabbitVhost:
    """A virtual host of its own on the shared RabbitMQ (guest may use it), deleted at the end."""

    def __init__(self, amqp_url: str, prefix: str = "disputes-chaos") -> None:
        from urllib.parse import urlparse
        self.name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self._base = urlparse(amqp_url)
        self.user = self._base.username or "guest"

    @property
    def url(self) -> str:
        from urllib.parse import quote
        return self._base._replace(path="/" + quote(self.name, safe="")).geturl()

    def _ctl(self, *args: str) -> None:
        binary = shutil.which("rabbitmqctl")
        if binary is None:
            raise BenchError("rabbitmqctl is not installed: a private vhost is needed for the chaos soak")
        done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise BenchError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")

    def create(self) -> None:
        self._ctl("add_vhost", self.name)
        self._ctl("set_permissions", "-p", self.name, self.user, ".*", ".*", ".*")

    def delete(self) -> None:
        with contextlib.suppress(Exception):
            self._ctl("delete_vhost", self.name)
