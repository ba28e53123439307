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
from tools.bench.leftovers import note

#: Where Debian puts PostgreSQL's server programs (the newest version found wins).
PG_ROOT = Path("/usr/lib/postgresql")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _in(netns: str | None, argv: list[str]) -> list[str]:
    """`argv` run inside the network namespace (as is without one)."""
    return ["ip", "netns", "exec", netns, *argv] if netns else argv


def _wait_port(port: int, timeout: float, what: str, address: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise BenchError(f"{what} did not listen on port {port} within {timeout:.0f}s")


class _Crashes:
    """A server the soak crashes (SIGKILL) and starts again."""

    restarts: int

    def kill(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def restart(self, down_for: float = 1.0) -> None:
        self.kill()
        time.sleep(down_for)
        self.restarts += 1
        self.start()


class PrivateRedis(_Crashes):
    """``redis-server`` on a free port, no snapshots: a restart loses every queued message.

    With `netns`, it runs in that network namespace, listening on all of its addresses; `address`
    is where this process reaches it."""

    def __init__(self, workdir: Path, netns: str | None = None, address: str = "127.0.0.1") -> None:
        self.workdir, self.port = workdir, free_port()
        self.netns, self.address = netns, address
        self.popen: subprocess.Popen | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return self.url_at(self.address)

    def url_at(self, address: str) -> str:
        return f"redis://{address}:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BenchError("redis-server is not installed")
        log = open(self.workdir / f"redis-{self.restarts}.log", "wb")
        bind = ["--bind", "0.0.0.0", "--protected-mode", "no"] if self.netns else ["--bind", "127.0.0.1"]
        self.popen = subprocess.Popen(_in(self.netns, [binary, "--port", str(self.port), *bind, "--save", "",
                                                       "--appendonly", "no", "--dir", str(self.workdir)]),
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        _wait_port(self.port, 15, "the private Redis", self.address)

    def kill(self) -> None:
        """SIGKILL: the server dies with everything in memory."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)

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

    def __init__(self, workdir: Path, database: str = "chaos", netns: str | None = None,
                 address: str = "127.0.0.1") -> None:
        self.port, self.database = free_port(), database
        self.netns, self.address = netns, address
        self.root = Path(tempfile.mkdtemp(prefix="pg-", dir=workdir))
        self.data, self.sockets, self.log = self.root / "data", self.root / "sock", self.root / "server.log"
        self.restarts = 0
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        return self.url_at(self.address)

    def url_at(self, address: str) -> str:
        return f"postgresql://postgres@{address}:{self.port}/{self.database}"

    def _run(self, argv: list[str], timeout: float = 120) -> None:
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        argv = _in(self.netns, argv)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd="/")
        if done.returncode != 0:
            raise BenchError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")

    def create(self) -> None:
        note("pg_data", str(self.data))
        self.sockets.mkdir()
        if self._as_postgres:
            for path in (self.root.parent, self.root):
                os.chmod(path, 0o755)
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")
        self._run([_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                   "--no-sync", "--no-instructions"])
        if self.netns:  # its namespace has only the soak's links: trust them as initdb trusts loopback
            with open(self.data / "pg_hba.conf", "a", encoding="utf-8") as hba:
                hba.write("host all all 0.0.0.0/0 trust\n")
        self.start()
        self._psql(f'CREATE DATABASE "{self.database}"')

    def _psql(self, sql: str) -> None:
        import psycopg2
        conn = psycopg2.connect(host=self.address, port=self.port, user="postgres", dbname="postgres",
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
        listen = "'*'" if self.netns else "127.0.0.1"  # in its own namespace: the links' addresses
        options = (f"-p {self.port} -k {self.sockets} -c listen_addresses={listen} -c fsync=off "
                   f"-c synchronous_commit=on -c full_page_writes=off -c max_connections=300 "
                   f"-c shared_buffers=128MB")
        self._run([_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60",
                   "start"])
        _wait_port(self.port, 30, "the private PostgreSQL", self.address)

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
        note("vhosts", self.name)
        self._ctl("add_vhost", self.name)
        self._ctl("set_permissions", "-p", self.name, self.user, ".*", ".*", ".*")

    def delete(self) -> None:
        with contextlib.suppress(Exception):
            self._ctl("delete_vhost", self.name)


class PrivateRabbit(_Crashes):
    """A RabbitMQ node of its own in a network namespace (its own epmd, files under `workdir`,
    guest allowed from the namespace's links), for a soak that cuts the broker off from some hosts
    and restarts it. Its default vhost ``/`` is the soak's."""

    def __init__(self, workdir: Path, netns: str, address: str) -> None:
        self.root = workdir / "rabbitmq"
        self.netns, self.address, self.port = netns, address, 5672
        self.restarts = 0

    def url_at(self, address: str) -> str:
        return f"amqp://guest:guest@{address}:{self.port}//"

    @property
    def url(self) -> str:
        return self.url_at(self.address)

    def _env(self) -> dict[str, str]:
        root = self.root
        return {**os.environ, "HOME": str(root), "RABBITMQ_NODENAME": "rabbit@localhost",
                "RABBITMQ_NODE_IP_ADDRESS": "0.0.0.0", "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq"), "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
                "RABBITMQ_LOG_BASE": str(root / "log"), "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "plugins"),
                "RABBITMQ_PID_FILE": str(root / "pid")}

    def start(self) -> None:
        binary = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
        if not binary.exists():
            raise BenchError("rabbitmq-server is not installed: the network soak runs a RabbitMQ node of its own")
        self.root.mkdir(exist_ok=True)
        (self.root / "rabbitmq.conf").write_text(f"listeners.tcp.1 = 0.0.0.0:{self.port}\nloopback_users = none\n")
        (self.root / "plugins").write_text("[].\n")
        done = subprocess.run(_in(self.netns, [str(binary), "-detached"]), env=self._env(), check=False,
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise BenchError(f"rabbitmq-server: {done.stderr.strip() or done.stdout.strip()}")
        _wait_port(self.port, 90, "the private RabbitMQ", self.address)

    def kill(self) -> None:
        """SIGKILL to the node (and its epmd's children stay: the next start reuses epmd)."""
        for pid in self._pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        deadline = time.monotonic() + 15
        while self._pids() and time.monotonic() < deadline:
            time.sleep(0.1)

    def _pids(self) -> list[int]:
        """The node's Erlang VM (beam.smp) and its helpers, found by their RABBITMQ_MNESIA_BASE."""
        found = []
        marker = str(self.root / "mnesia").encode()
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                with contextlib.suppress(OSError):
                    if marker in (proc / "cmdline").read_bytes() and b"beam" in (proc / "cmdline").read_bytes():
                        found.append(int(proc.name))
        return found

    def stop(self) -> None:
        self.kill()
