"""End-to-end fixtures: the real servers (PostgreSQL, Redis, RabbitMQ) and the real processes.

Everything here runs the system the way the Procfile does — ``disputes intake``,
``disputes scheduler`` and ``dramatiq workers.stageN`` as separate processes
with the environment of SPEC §8 — and drives it from outside: upstream
messages are published with kombu to ``op.intake``, agents act through the
HTTP API (``desk.create_api(app).test_client()`` on an app built from the
same environment), and what leaves the system is captured from ``op.events``
by a test queue bound with ``#`` before anything is published.

Isolation per test:

* PostgreSQL: a fresh schema ``e2e_<hex>`` in database ``test``, selected for
  every process (this one and the children) with libpq's ``PGOPTIONS``
  (``-c search_path=...``), created before and dropped after the test;
* Redis (dramatiq's broker): database 5, FLUSHDB before the test;
* RabbitMQ (``OP_INTAKE_URL``): ``disputes.intake`` declared and purged before
  the test; the events tap is an exclusive auto-delete queue of its own.

When a server does not answer, the test is skipped — unless
``OP_REQUIRE_SERVERS=1`` (CI), which makes it fail loudly instead.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

#: Where the servers are; each can be overridden for a CI that runs them elsewhere.
PG_HOST = os.environ.get("OP_E2E_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("OP_E2E_PG_PORT", "5432"))
PG_DATABASE = os.environ.get("OP_E2E_PG_DATABASE", "test")
PG_USERS = tuple(filter(None, os.environ.get("OP_E2E_PG_USERS", "root,postgres").split(",")))
REDIS_URL = os.environ.get("OP_E2E_REDIS_URL", "redis://127.0.0.1:6379/5")
AMQP_URL = os.environ.get("OP_E2E_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")

#: Every policy deadline, shortened so that "the deadline passed" takes seconds.
DEADLINES = ("merchant_response", "customer_confirmation", "interception", "evidence", "payment_voucher", "appeal")


# ---------------------------------------------------------------------------------------------
# markers and reports
# ---------------------------------------------------------------------------------------------

def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "deadlines(**durations): policy deadlines of an e2e test (default 2s)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/e2e needs the servers."""
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.servers)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Keep each phase's report on the item, so teardown knows whether to show process logs."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"e2e_rep_{report.when}", report)


# ---------------------------------------------------------------------------------------------
# the servers
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Servers:
    pg_user: str
    redis_url: str
    amqp_url: str

    @property
    def database_url(self) -> str:
        return f"postgresql://{self.pg_user}@{PG_HOST}:{PG_PORT}/{PG_DATABASE}"

    def pg_connect(self, search_path: str | None = None) -> Any:
        import psycopg2
        options = f"-c search_path={search_path}" if search_path else None
        conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=self.pg_user, dbname=PG_DATABASE,
                                connect_timeout=3, options=options)
        return conn


def _probe_postgres() -> tuple[str | None, str]:
    import psycopg2
    problems = []
    for user in PG_USERS:
        try:
            psycopg2.connect(host=PG_HOST, port=PG_PORT, user=user, dbname=PG_DATABASE, connect_timeout=3).close()
            return user, ""
        except Exception as error:  # noqa: BLE001 - any failure means "not reachable as this user"
            problems.append(f"{user}: {str(error).strip()}")
    return None, f"PostgreSQL {PG_HOST}:{PG_PORT}/{PG_DATABASE} ({'; '.join(problems)})"


def _probe_redis() -> str:
    import redis
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=3).ping()
        return ""
    except Exception as error:  # noqa: BLE001
        return f"Redis {REDIS_URL} ({error})"


def _probe_rabbitmq() -> str:
    from kombu import Connection
    try:
        with Connection(AMQP_URL, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
        return ""
    except Exception as error:  # noqa: BLE001
        return f"RabbitMQ {AMQP_URL} ({error})"


@pytest.fixture(scope="session")
def servers() -> Servers:
    """The three servers, or a skip (a failure when ``OP_REQUIRE_SERVERS=1``)."""
    user, pg_problem = _probe_postgres()
    problems = [p for p in (pg_problem, _probe_redis(), _probe_rabbitmq()) if p]
    if problems:
        message = "servers not reachable: " + "; ".join(problems)
        if os.environ.get("OP_REQUIRE_SERVERS") == "1":
            pytest.fail(message + " (OP_REQUIRE_SERVERS=1)", pytrace=False)
        pytest.skip(message)
    assert user is not None
    return Servers(pg_user=user, redis_url=REDIS_URL, amqp_url=AMQP_URL)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def fast_policy_file(path: Path, sections: dict[str, dict] | None = None, **deadlines: str) -> Path:
    """The default policy with every deadline at "2s" (`deadlines` override) and `sections` merged
    over their defaults (``{"complaint_fee": {"approval_threshold": 2000}}``), written as TOML."""
    import tomli_w

    from policy import default_policy_dict, load_policy
    data = default_policy_dict()
    for name, values in (sections or {}).items():
        current = data.get(name)
        data[name] = {**current, **values} if isinstance(current, dict) else values
    data["deadlines"] = {name: deadlines.get(name, "2s") for name in DEADLINES}
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    load_policy(str(path))  # a bad file would stop every process at start-up: fail here instead
    return path


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1,
             on_timeout: Callable[[], str] | None = None) -> Any:
    """Poll `predicate` until it returns something truthy (returned); AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


def _bin(name: str, module: str) -> list[str]:
    """The venv's console script next to this interpreter, else ``python -m``."""
    script = Path(sys.executable).parent / name
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


DISPUTES = _bin("disputes", "disputes.cli")
DRAMATIQ = _bin("dramatiq", "dramatiq")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path
    #: Killed on purpose by the test (not a crash).
    killed: bool = False

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)  # start_new_session: the group id is the leader's pid
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the whole process group (dramatiq's parent and its worker processes)."""
        self.killed = True
        self.signal_group(signal.SIGKILL)
        self.popen.wait(timeout=10)


@dataclass
class Agent:
    name: str
    stage: int
    token: str
    id: int


@dataclass
class EventTap:
    """An exclusive queue bound to ``op.events`` with ``#``: every published event, in order."""

    connection: Any
    queue: Any
    events: list[tuple[str, dict]] = field(default_factory=list)

    def drain(self) -> list[tuple[str, dict]]:
        while True:
            message = self.queue.get(no_ack=True)
            if message is None:
                return self.events
            body = message.body
            self.events.append((message.delivery_info["routing_key"], json.loads(body)))

    def of(self, ticket_id: int) -> list[tuple[str, dict]]:
        return [(key, body) for key, body in self.drain() if body.get("ticket_id") == ticket_id]


_refs = itertools.count(1)


def complaint_body(ref: str | None = None, **overrides: Any) -> dict:
    """A valid ``complaint.submitted`` body (SPEC §4)."""
    n = next(_refs)
    ref = ref or f"E2E-{uuid.uuid4().hex[:10]}-{n}"
    body: dict[str, Any] = {
        "schema_version": 1, "source": "e2e-shop", "external_ref": ref, "channel": "app",
        "order": {"order_id": f"O-{ref}", "amount": 10000, "currency": "CNY", "category": "apparel",
                  "delivery": "platform", "status": "delivered"},
        "user_id": "u-1", "merchant_id": "m-1", "dispute_type": "quality", "claimed_amount": 6000,
        "description": "the seams came apart on first wash", "negotiation": "pending",
        "occurred_at": "2026-11-20T10:00:00+08:00",
    }
    body.update(overrides)
    return body


class Stack:
    """One test's system: the environment, the in-process app and API client, the child processes,
    the intake publisher and the events tap."""

    def __init__(self, servers: Servers, tmp: Path, schema: str, env: dict[str, str]) -> None:
        self.servers, self.tmp, self.schema, self.env = servers, tmp, schema, env
        self.procs: list[Proc] = []
        self.app: Any = None
        self.client: Any = None
        self.tap: EventTap | None = None
        self._publisher: Any = None
        self._producer: Any = None

    # -- processes -------------------------------------------------------------------------
    def start(self, name: str, argv: list[str]) -> Proc:
        log = self.tmp / f"{name}-{len(self.procs)}.log"
        handle = open(log, "wb")
        popen = subprocess.Popen(argv, env=self.env, cwd=str(REPO), stdout=handle, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        handle.close()
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def start_intake(self) -> Proc:
        return self.start("intake", DISPUTES + ["intake"])

    def start_scheduler(self) -> Proc:
        return self.start("scheduler", DISPUTES + ["scheduler"])

    def start_workers(self, name: str, modules: list[str], queues: list[str] | None = None,
                      threads: int = 4) -> Proc:
        argv = DRAMATIQ + modules + ["--processes", "1", "--threads", str(threads)]
        if queues:
            argv += ["--queues", *queues]
        return self.start(name, argv)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ``disputes ARGS`` with the test's environment; raises on a non-zero exit."""
        done = subprocess.run(DISPUTES + list(args), env=self.env, cwd=str(REPO), capture_output=True,
                              text=True, timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(f"disputes {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def add_agents(self, *specs: tuple[str, int] | tuple[str, int, int]) -> list[Agent]:
        """``disputes agents add`` for each (name, stage[, capacity]), run in parallel; the token is
        what the command printed, the id is read back from the database."""
        from models.agent import Agent as AgentRow
        running = []
        for spec in specs:
            name, stage = spec[0], spec[1]
            capacity = spec[2] if len(spec) > 2 else 10  # type: ignore[misc]
            argv = DISPUTES + ["agents", "add", "--name", name, "--stage", str(stage), "--capacity", str(capacity)]
            running.append((name, stage, subprocess.Popen(argv, env=self.env, cwd=str(REPO), text=True,
                                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)))
        agents = []
        for name, stage, popen in running:
            out, err = popen.communicate(timeout=60)
            assert popen.returncode == 0, f"agents add {name} failed:\n{out}\n{err}"
            token = out.strip()
            assert token and "\n" not in token, f"agents add printed more than the token: {out!r}"
            with self.app.db.connection_context():
                row = AgentRow.get(AgentRow.name == name)
            agents.append(Agent(name, stage, token, row.id))
        return agents

    def logs(self) -> str:
        return "\n".join(f"----- {p.name} (pid {p.popen.pid}, exit {p.popen.poll()}) -----\n{p.tail()}"
                         for p in self.procs)

    def assert_alive(self) -> None:
        dead = [p for p in self.procs if not p.alive() and not p.killed]
        assert not dead, "a process died:\n" + self.logs()

    def stop_all(self) -> None:
        live = [p for p in self.procs if p.alive()]
        for p in live:  # the leader only: dramatiq's main process forwards SIGTERM to its workers
            p.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in live:
            try:
                p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in self.procs:  # and anything left in a group (dramatiq's worker children)
            p.signal_group(signal.SIGKILL)
            try:
                p.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    # -- upstream ----------------------------------------------------------------------------
    def publish(self, routing_key: str, body: dict | bytes, message_id: str | None = None,
                headers: dict | None = None) -> str:
        """Publish one upstream message to ``op.intake`` as SPEC §4 describes; returns its message_id."""
        from workers.intake import intake_exchange
        message_id = message_id or uuid.uuid4().hex
        raw = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        self._producer.publish(raw, exchange=intake_exchange, routing_key=routing_key, message_id=message_id,
                               delivery_mode=2, content_type="application/json", content_encoding="utf-8",
                               headers=headers or {}, declare=[intake_exchange], retry=True)
        return message_id

    # -- the API -------------------------------------------------------------------------------
    def api(self, method: str, path: str, agent: Agent | None = None, body: dict | None = None,
            expect: int | tuple[int, ...] | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {agent.token}"} if agent else {}
        response = self.client.open(path, method=method, headers=headers, json=body)
        payload = response.get_json(silent=True)
        if expect is not None:
            wanted = (expect,) if isinstance(expect, int) else expect
            assert response.status_code in wanted, f"{method} {path} -> {response.status_code}: {payload}"
        return response.status_code, payload

    def ticket(self, ticket_id: int, agent: Agent) -> dict:
        return self.api("GET", f"/tickets/{ticket_id}", agent, expect=200)[1]

    def wait_state(self, ticket_id: int, state: str, agent: Agent, timeout: float = 20) -> dict:
        seen: dict = {}

        def reached() -> dict | None:
            seen.update(self.ticket(ticket_id, agent))
            return dict(seen) if seen["state"] == state else None

        return wait_for(reached, timeout, f"ticket {ticket_id} to reach '{state}'", interval=0.2,
                        on_timeout=lambda: f"last seen: {seen.get('state')} v{seen.get('version')}\n{self.logs()}")

    def find_ticket(self, source: str, external_ref: str, agent: Agent, timeout: float = 15) -> dict:
        def found() -> dict | None:
            rows = self.api("GET", f"/tickets?source={source}&external_ref={external_ref}", agent, expect=200)[1]
            return rows[0] if rows else None
        return wait_for(found, timeout, f"a ticket for {source}:{external_ref}", interval=0.2,
                        on_timeout=self.logs)


#: How long a test waits for another pytest session's e2e test on the same servers to finish.
LOCK_WAIT_SECONDS = float(os.environ.get("OP_E2E_LOCK_WAIT", "300"))


@pytest.fixture
def servers_lock(servers: Servers) -> Iterator[None]:
    """One e2e test at a time per machine: the intake queue ``disputes.intake`` and Redis db 5 are
    shared names, so two pytest sessions running these tests at once would consume each other's
    messages (and FLUSHDB each other's queues). An exclusive ``flock`` serializes them."""
    import fcntl
    import tempfile
    path = Path(tempfile.gettempdir()) / "disputes-e2e-servers.lock"
    with open(path, "a+") as handle:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another session held {path} for over {LOCK_WAIT_SECONDS:.0f}s", pytrace=False)
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def open_stack(servers: Servers, tmp: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
               deadlines: dict[str, str] | None = None, policy: dict[str, dict] | None = None) -> Iterator[Stack]:
    """A clean slate on the three servers: a fresh PostgreSQL schema, Redis db flushed, the intake
    queue purged, an events tap bound — and everything stopped and dropped on exit. `deadlines`
    default to the test's ``deadlines`` marker (else 2 s each); `policy` sections merge over the default."""
    import redis
    from kombu import Connection, Exchange, Producer, Queue

    import models
    from disputes.settings import EVENTS_EXCHANGE, settings_from_env
    from disputes.wiring import build_app
    from workers.intake import declare_topology

    tmp.mkdir(parents=True, exist_ok=True)
    schema = f"e2e_{uuid.uuid4().hex[:12]}"
    admin = servers.pg_connect()
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{schema}"')
    if deadlines is None:
        marker = request.node.get_closest_marker("deadlines")
        deadlines = dict(marker.kwargs) if marker else {}
    policy_path = fast_policy_file(tmp / "policy.toml", policy, **deadlines)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OP_")}
    env.update({
        "OP_DATABASE_URL": servers.database_url, "OP_BROKER_URL": servers.redis_url,
        "OP_INTAKE_URL": servers.amqp_url, "OP_POLICY": str(policy_path),
        "PGOPTIONS": f"-c search_path={schema}", "PYTHONUNBUFFERED": "1",
        # Re-drive lost dispatches after 5 s (production default 30 s) so the kill test is quick.
        "OP_REDRIVE_AFTER": "5",
    })
    # This process's libpq connections use the test's schema too.
    monkeypatch.setenv("PGOPTIONS", env["PGOPTIONS"])

    redis.Redis.from_url(servers.redis_url).flushdb()

    s = Stack(servers, tmp, schema, env)
    raised = False
    publisher = Connection(servers.amqp_url, transport_options={"confirm_publish": True})
    tap_connection = Connection(servers.amqp_url)
    try:
        channel = publisher.channel()
        bound = declare_topology(publisher)(channel)  # as `disputes init` does, whatever declared it before
        bound.purge()
        s._publisher, s._producer = publisher, Producer(channel)
        events_exchange = Exchange(EVENTS_EXCHANGE, type="topic", durable=True)
        tap_queue = Queue(f"e2e.events.{uuid.uuid4().hex}", exchange=events_exchange, routing_key="#",
                          durable=False, auto_delete=True, exclusive=True)(tap_connection.channel())
        tap_queue.declare()
        s.tap = EventTap(tap_connection, tap_queue)

        s.app = build_app(settings_from_env(env))
        with s.app.db.connection_context():
            models.init_schema()
        from desk import create_api
        s.client = create_api(s.app).test_client()
        try:
            yield s
        except BaseException:
            raised = True
            raise
    finally:
        s.stop_all()
        failed = raised or any(getattr(getattr(request.node, f"e2e_rep_{when}", None), "failed", False)
                               for when in ("setup", "call"))
        if failed and s.procs:
            print(s.logs())
        for closing in (tap_connection.release, publisher.release):
            try:
                closing()
            except Exception:  # noqa: BLE001
                pass
        if s.app is not None:
            try:
                s.app.broker.close()
            except Exception:  # noqa: BLE001
                pass
            try:
                s.app.db.close_all()  # the pool's connections, before the schema goes
            except Exception:  # noqa: BLE001
                pass
        try:
            with admin.cursor() as cur:
                cur.execute("SET lock_timeout = '10s'")
                cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        except Exception as error:  # noqa: BLE001 - a leftover schema is harmless; say so
            print(f"could not drop schema {schema}: {error}")
        admin.close()


@pytest.fixture
def stack(servers: Servers, servers_lock: None, tmp_path: Path, request: pytest.FixtureRequest,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """A clean slate on the three servers and the environment every process of the test shares.

    The test starts the processes it needs (``stack.start_intake()``, ...); they are all stopped
    — SIGTERM, then SIGKILL of their process groups — when it ends, and their logs are shown
    when it failed."""
    with open_stack(servers, tmp_path, request, monkeypatch) as s:
        yield s


@pytest.fixture
def stacks(servers: Servers, servers_lock: None, tmp_path: Path, request: pytest.FixtureRequest,
           monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """``with stacks("run-a", deadlines={...}, policy={...}) as stack:``: several clean slates, one after
    another, in one test (each its own schema; leaving the block stops its processes and drops it)."""
    def _open(name: str, deadlines: dict[str, str] | None = None, policy: dict[str, dict] | None = None) -> Any:
        return open_stack(servers, tmp_path / name, request, monkeypatch, deadlines, policy)
    return _open
