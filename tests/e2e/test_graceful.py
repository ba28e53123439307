"""Graceful operation (issue 7, part 5): SIGTERM, reconnecting, and a health check that names what is down.

The processes are the Procfile's (``dramatiq workers.stage1 ...``, ``disputes
scheduler``, ``disputes intake``), started with SPEC §8's environment against
servers this module owns, so breaking them disturbs nobody:

* PostgreSQL: a database of its own (``disputes_graceful``), whose backends
  the tests terminate with ``pg_terminate_backend`` — that database's only;
* Redis (dramatiq's broker): a private ``redis-server`` on a free port, which
  the tests stop, start and pause (SIGSTOP) — never the shared one;
* RabbitMQ (the intake's kombu transport): a vhost of its own, created and
  deleted here, whose connection the tests close with ``rabbitmqctl``.

Nothing in production code is slowed or hooked for the test: the SIGTERM test
holds a PostgreSQL row lock on the ticket, so the stage worker blocks inside
its transaction exactly as it would behind a slow writer.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import psycopg2
import pytest

from tests.e2e.conftest import DISPUTES, DRAMATIQ, wait_for
from tests.integration.conftest import PG_DSN, fresh_pg_database, make_app, need

DATABASE = "disputes_graceful"
STAGE1 = {"dispute_status": "not_reconciled", "category": "apparel"}


# ---------------------------------------------------------------------------------------------
# servers of our own
# ---------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrivateRedis:
    """A redis-server of this test alone: stop it, start it again, pause it."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        import redis
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        wait_for(lambda: _pings(client), 10, f"redis-server on port {self.port}", interval=0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # as a crash would: no goodbye to the clients
            self.process.wait(10)
        self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)  # connections accepted by the kernel, never answered

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - not up yet
        return False


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.resume()
        server.stop()


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise AssertionError(f"rabbitmqctl {' '.join(args)}: {done.stderr or done.stdout}")
    return done.stdout


@pytest.fixture
def vhost() -> Iterator[str]:
    """A RabbitMQ vhost of this test; its AMQP URL."""
    need(5672, "RabbitMQ")
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed")
    name = f"disputes-graceful-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@127.0.0.1:5672/{name}"
    finally:
        rabbitmqctl("delete_vhost", name)


def terminate_backends(database: str) -> int:
    """``pg_terminate_backend`` every connection to `database` (this module's own) but ours."""
    conn = psycopg2.connect(PG_DSN)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()", (database,))
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def waiting_on_locks(database: str) -> int:
    """Backends of `database` waiting for a lock now (a fresh connection: pg_stat_activity is a
    snapshot per transaction)."""
    conn = psycopg2.connect(PG_DSN)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                        (database,))
            return int(cur.fetchone()[0])
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# the system under test
# ---------------------------------------------------------------------------------------------

class System:
    """The app (in this process, to set scenes and read the truth) and the child processes."""

    def __init__(self, tmp: Path, url: str, broker_url: str, intake_url: str) -> None:
        from policy import default_policy_dict, policy_from_dict
        self.tmp, self.url = tmp, url
        self.app = make_app(url, policy_from_dict(default_policy_dict()), broker_url=broker_url,
                            intake_url=intake_url)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OP_")}
        self.env.update(OP_DATABASE_URL=url, OP_BROKER_URL=broker_url, OP_INTAKE_URL=intake_url,
                        OP_UNSENT_GRACE="0.5", OP_REDRIVE_AFTER="5", PYTHONUNBUFFERED="1")
        self.procs: dict[str, subprocess.Popen] = {}
        self._refs = iter(range(1, 1_000_000))

    def use_intake(self, url: str) -> None:
        """``OP_INTAKE_URL`` for this process and the children, with ``op.intake``'s queue declared."""
        import dataclasses
        from workers.intake import declare_topology
        self.env["OP_INTAKE_URL"] = url
        self.app.settings = dataclasses.replace(self.app.settings, intake_url=url)
        with self.app.kombu_connection() as conn:
            declare_topology(conn)

    # -- processes ---------------------------------------------------------------------------
    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        with open(self.tmp / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_stage1(self, threads: int = 2) -> subprocess.Popen:
        return self.start("stage1", DRAMATIQ + ["workers.stage1", "workers.negotiation", "--queues", "stage1",
                                                "negotiation", "--processes", "1", "--threads", str(threads)])

    def logs(self) -> str:
        return "\n".join(f"----- {name} (exit {p.poll()}) -----\n"
                         + "\n".join((self.tmp / f"{name}.log").read_text(errors="replace").splitlines()[-25:])
                         for name, p in self.procs.items())

    def wait_log(self, name: str, text: str, timeout: float = 30) -> None:
        wait_for(lambda: text in (self.tmp / f"{name}.log").read_text(errors="replace"), timeout,
                 f"'{text}' in the {name} log", on_timeout=self.logs)

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    # -- scenes ------------------------------------------------------------------------------
    def ticket(self, negotiation: str = "failed"):
        from models.base import database, utcnow
        from models.workflow import open_ticket
        n = next(self._refs)
        fields = dict(source="graceful", external_ref=f"G-{n}", channel="app", user_id=f"u{n}", merchant_id="m1",
                      order_id=f"O-{n}", order_amount=10_000, currency="CNY", category="apparel",
                      delivery="platform", order_status="delivered", dispute_type="quality", claimed_amount=5_000,
                      occurred_at=utcnow())
        with database.connection_context():
            return open_ticket(fields, {"negotiation": negotiation}, self.app.policy).ticket

    def taken_over(self) -> int:
        """A ticket in stage 1, taken over by agent 11."""
        from models.base import database
        from models.change import Actor
        from models.workflow import apply
        ticket = self.ticket()
        with database.connection_context():
            apply(ticket.id, "take_over", Actor.agent(1, 11), {}, self.app.policy)
        return ticket.id

    def decide(self, ticket_id: int) -> int:
        """Agent 11's ``to_judgment`` on the ticket, as the API hands it to the stage-1 queue: a dispatch
        row committed, then sent (a broker that is down leaves it to the relay)."""
        from models.base import database
        from models.dispatches import AgentDecision
        from models.outbox import new_dispatch
        from models.ticket import Ticket
        from models.sending import send_dispatches
        with database.connection_context():
            version = Ticket.get_by_id(ticket_id).version
            with database.atomic():
                row = new_dispatch("stage1", AgentDecision(ticket_id=ticket_id, agent_id=11, action="to_judgment",
                                                           expected_version=version, params=STAGE1))
            send_dispatches(self.app.broker, [row.id])
        return row.id

    def due_now(self) -> int:
        """A complaint waiting on the merchant whose response deadline is due now."""
        from models.base import database, utcnow
        from models.timer import Timer
        ticket = self.ticket(negotiation="pending")
        with database.connection_context():
            Timer.update(due_at=utcnow() - timedelta(seconds=1)).where(Timer.ticket_id == ticket.id).execute()
        return ticket.id

    def publish_complaint(self) -> str:
        """A ``complaint.submitted`` on ``op.intake`` (SPEC §4); its external_ref."""
        import json
        from kombu import Producer
        from workers.intake import intake_exchange
        ref = f"IN-{uuid.uuid4().hex[:10]}"
        body = {"schema_version": 1, "source": "graceful", "external_ref": ref, "channel": "app",
                "order": {"order_id": f"O-{ref}", "amount": 10000, "currency": "CNY", "category": "apparel",
                          "delivery": "platform", "status": "delivered"},
                "user_id": "u-1", "merchant_id": "m-1", "dispute_type": "quality", "claimed_amount": 6000,
                "description": "torn", "negotiation": "failed", "occurred_at": "2026-11-20T10:00:00+08:00"}
        with self.app.kombu_connection() as conn:
            Producer(conn.channel()).publish(json.dumps(body).encode(), exchange=intake_exchange,
                                             routing_key="complaint.submitted", message_id=uuid.uuid4().hex,
                                             content_type="application/json", content_encoding="utf-8",
                                             delivery_mode=2, declare=[intake_exchange], retry=True)
        return ref

    # -- the truth -----------------------------------------------------------------------------
    def state(self, ticket_id: int) -> str:
        from models.base import database
        from models.ticket import Ticket
        with database.connection_context():
            return str(Ticket.get_by_id(ticket_id).state)

    def wait_state(self, ticket_id: int, state: str, timeout: float = 20, what: str = "") -> None:
        wait_for(lambda: self.state(ticket_id) == state, timeout,
                 f"ticket {ticket_id} to reach {state} {what}".strip(), interval=0.1, on_timeout=self.logs)

    def wait_admitted(self, ref: str, timeout: float = 20, what: str = "") -> None:
        from models.base import database
        from models.ticket import Ticket

        def admitted() -> bool:
            with database.connection_context():
                return Ticket.select().where(Ticket.external_ref == ref).exists()
        wait_for(admitted, timeout, f"complaint {ref} admitted {what}".strip(), interval=0.1, on_timeout=self.logs)


@pytest.fixture
def system(tmp_path: Path, private_redis: PrivateRedis) -> Iterator[System]:
    s = System(tmp_path, fresh_pg_database(DATABASE), private_redis.url, private_redis.url)
    try:
        yield s
    finally:
        s.stop_all()
        s.app.db.close_all()


# ---------------------------------------------------------------------------------------------
# (a) SIGTERM
# ---------------------------------------------------------------------------------------------

def test_sigterm_lets_a_stage_worker_finish_the_message_it_is_handling(system: System) -> None:
    """Given a stage-1 worker inside a decision's transaction (its ticket UPDATE waiting on a row lock
    the test holds), when the worker is sent SIGTERM it keeps going; once the lock is released the
    decision commits, its dispatch is marked done, and the process exits 0 — nothing left for the
    reconciler to redo."""
    from models.audit import TicketEvent
    from models.base import database
    from models.outbox import Dispatch

    ticket_id = system.taken_over()
    lock = psycopg2.connect(system.url)
    try:
        with lock.cursor() as cur:  # a slow writer holds the ticket
            cur.execute("SELECT id FROM ticket WHERE id = %s FOR UPDATE", (ticket_id,))
        dispatch_id = system.decide(ticket_id)
        worker = system.start_stage1()

        wait_for(lambda: waiting_on_locks(DATABASE) == 1, 30, "the worker to block on the ticket's row lock",
                 on_timeout=system.logs)

        worker.send_signal(signal.SIGTERM)  # as honcho, systemd or Kubernetes stop it
        time.sleep(1.5)
        assert worker.poll() is None, "the worker exited with a message in hand:\n" + system.logs()
    finally:
        lock.rollback()  # the slow writer is done
        lock.close()

    assert worker.wait(timeout=20) == 0, system.logs()
    with database.connection_context():
        row = Dispatch.get_by_id(dispatch_id)
        assert (row.done_at is not None, row.outcome) == (True, "applied")
        assert [e.action for e in TicketEvent.select().where(TicketEvent.ticket == ticket_id)
                .order_by(TicketEvent.version)] == ["submit", "take_over", "to_judgment"]
    assert system.state(ticket_id) == "stage3"


#: What a clean stop must not print (issue 15: "shutdown under honcho prints alarming lines").
ALARMING = ("WARNING", "ERROR", "CRITICAL", "Traceback", "Killing")


def alarming_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(word in line for word in ALARMING)]


def test_a_stop_sent_to_the_whole_process_group_still_lets_the_worker_finish_its_message(system: System) -> None:
    """honcho (and systemd's default KillMode) signal the process group: dramatiq's main process and
    its worker process both get SIGTERM, and the main process forwards its own. The worker process
    hears one stop twice; it must still finish the decision in hand, exit 0 and say nothing alarming
    (dramatiq alone takes the echo for "kill now": a warning, exit 1, the message abandoned)."""
    from models.base import database
    from models.outbox import Dispatch

    ticket_id = system.taken_over()
    lock = psycopg2.connect(system.url)
    try:
        with lock.cursor() as cur:
            cur.execute("SELECT id FROM ticket WHERE id = %s FOR UPDATE", (ticket_id,))
        dispatch_id = system.decide(ticket_id)
        worker = system.start_stage1()
        wait_for(lambda: waiting_on_locks(DATABASE) == 1, 30, "the worker to block on the ticket's row lock",
                 on_timeout=system.logs)

        # The group's signal reaches the worker process a moment before dramatiq's main process
        # forwards its own (which it does at once here, and after logging under honcho).
        for child in children(worker.pid):
            os.kill(child, signal.SIGTERM)
        time.sleep(0.5)
        os.killpg(worker.pid, signal.SIGTERM)  # as honcho stops a Procfile process
        time.sleep(1.5)
        assert worker.poll() is None, "the worker exited with a message in hand:\n" + system.logs()
    finally:
        lock.rollback()
        lock.close()

    assert worker.wait(timeout=20) == 0, system.logs()
    with database.connection_context():
        row = Dispatch.get_by_id(dispatch_id)
        assert (row.done_at is not None, row.outcome) == (True, "applied")
    log = (system.tmp / "stage1.log").read_text(errors="replace")
    assert alarming_lines(log) == [], log


def children(pid: int) -> list[int]:
    """The processes `pid` started (dramatiq's worker processes of its main process)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    assert found, f"process {pid} has no children"
    return found


def procfile() -> dict[str, str]:
    lines = (Path(__file__).resolve().parents[2] / "Procfile").read_text(encoding="utf-8").splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def test_every_procfile_process_stops_cleanly_the_way_honcho_stops_it(system: System) -> None:
    """Each Procfile line run as honcho runs it (``/bin/sh -c LINE`` in a session of its own) and
    stopped as honcho stops it (SIGTERM to the process group): every one exits 0 — honcho prints
    the shell's exit code, so a line that is not ``exec``'d reports ``rc=-15`` — and prints no
    warning, error or traceback; our own processes say so in one calm line."""
    import sys
    import urllib.request

    lines = procfile()
    assert set(lines) == {"negotiation", "stage1", "stage2", "stage3", "stage4", "notify", "intake", "scheduler",
                          "api"}
    port = free_port()
    system.env.update(OP_API_PORT=str(port), PATH=f"{Path(sys.executable).parent}{os.pathsep}{system.env['PATH']}")
    procs = {name: system.start(name, ["/bin/sh", "-c", command]) for name, command in lines.items()}
    for name in ("negotiation", "stage1", "stage2", "stage3", "stage4", "notify"):
        system.wait_log(name, "Worker process is ready for action.")
    system.wait_log("scheduler", "started")
    system.wait_log("intake", "Connected to")

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False
    wait_for(answers, 30, "the API to answer", interval=0.2, on_timeout=system.logs)
    time.sleep(1)  # a scheduler beat or two, the intake waiting on its queue

    for proc in procs.values():
        os.killpg(proc.pid, signal.SIGTERM)
    codes = {name: proc.wait(timeout=30) for name, proc in procs.items()}
    assert codes == {name: 0 for name in procs}, system.logs()
    logs = {name: (system.tmp / f"{name}.log").read_text(errors="replace") for name in procs}
    assert {name: alarming_lines(text) for name, text in logs.items()} == {name: [] for name in procs}, system.logs()
    assert "scheduler" in logs["scheduler"] and " stopped" in logs["scheduler"]
    assert "intake stopped" in logs["intake"]
    assert "API stopped" in logs["api"]
    assert all("Worker has been shut down." in logs[name] for name in ("stage1", "stage2", "notify"))


# ---------------------------------------------------------------------------------------------
# (b) reconnecting
# ---------------------------------------------------------------------------------------------

def test_worker_scheduler_and_intake_carry_on_after_their_database_connections_are_killed(
        system: System, private_redis: PrivateRedis) -> None:
    """Every connection to the database is terminated under a running stage worker, scheduler and
    intake consumer (a PostgreSQL failover or restart looks like this to them): the next decision,
    the next due deadline and the next complaint are each handled, with no operator action."""
    system.use_intake(private_redis.url)  # kombu's Redis transport here; RabbitMQ in the broker test
    system.start_stage1()
    system.start("scheduler", DISPUTES + ["scheduler"])
    system.start("intake", DISPUTES + ["intake"])
    system.wait_log("scheduler", "started")

    # Warm: each has a database connection open or pooled.
    ticket = system.taken_over()
    system.decide(ticket)
    system.wait_state(ticket, "stage3", what="before the connections are killed")
    system.wait_state(system.due_now(), "awaiting_takeover", what="before the connections are killed")
    system.wait_admitted(system.publish_complaint(), what="before the connections are killed")

    assert terminate_backends(DATABASE) >= 3

    ticket = system.taken_over()
    system.decide(ticket)
    system.wait_state(ticket, "stage3", timeout=15, what="after the connections were killed")
    system.wait_state(system.due_now(), "awaiting_takeover", timeout=15, what="after the connections were killed")
    system.wait_admitted(system.publish_complaint(), timeout=15, what="after the connections were killed")
    assert all(p.poll() is None for p in system.procs.values()), system.logs()


def test_worker_scheduler_and_intake_resume_after_their_brokers_come_back(
        vhost: str, system: System, private_redis: PrivateRedis) -> None:
    """The private Redis (dramatiq's broker) is killed and started again, and RabbitMQ closes the
    intake consumer's connection: a decision made while Redis was down is applied once it is back
    (the relay sends what could not be sent), a deadline falling due meanwhile is applied, and the
    intake admits the next complaint — all without restarting any process."""
    system.use_intake(vhost)
    system.start_stage1()
    system.start("scheduler", DISPUTES + ["scheduler"])
    system.start("intake", DISPUTES + ["intake"])
    system.wait_log("scheduler", "started")
    ticket = system.taken_over()
    system.decide(ticket)
    system.wait_state(ticket, "stage3", what="before Redis went down")

    private_redis.stop()
    decided, due = system.taken_over(), system.due_now()
    system.decide(decided)  # committed; its message cannot be sent now
    time.sleep(2)
    private_redis.start()
    system.wait_state(decided, "stage3", timeout=30, what="after Redis came back")
    system.wait_state(due, "awaiting_takeover", timeout=30, what="after Redis came back")

    vhost_name = vhost.rsplit("/", 1)[1]
    connections = [line.split("\t") for line in rabbitmqctl("list_connections", "pid", "vhost").splitlines()]
    ours = [pid for pid, host in (c for c in connections if len(c) == 2) if host == vhost_name]
    assert ours, "the intake consumer has no connection to its vhost"
    for pid in ours:
        rabbitmqctl("close_connection", pid, "graceful test: the broker closes the connection")
    system.wait_admitted(system.publish_complaint(), timeout=30, what="after RabbitMQ closed the connection")
    assert all(p.poll() is None for p in system.procs.values()), system.logs()


# ---------------------------------------------------------------------------------------------
# (c) /health
# ---------------------------------------------------------------------------------------------

def health(app) -> tuple[int, dict]:
    from desk import create_api
    response = create_api(app).test_client().get("/health")
    return response.status_code, response.get_json()


def test_health_names_the_dependency_that_is_down(system: System, private_redis: PrivateRedis) -> None:
    """SPEC §6: ``GET /health`` is 200 when the database and the broker answer, 503 naming the one that
    does not otherwise — Redis killed, Redis hung (SIGSTOP: it accepts, never answers; the probe must
    not hang the API), the database unreachable — and 200 again, without a restart, once they are back
    (also after every database connection was killed)."""
    from disputes.probes import PROBE_TIMEOUT
    from disputes.settings import Settings
    from disputes.wiring import build_app

    assert health(system.app) == (200, {"status": "ok", "database": "ok", "broker": "ok"})

    private_redis.stop()
    status, body = health(system.app)
    assert (status, body["database"], body["broker"], body["status"]) == (503, "ok", "down", "down")
    assert list(body["error"]["fields"]) == ["broker"] and "broker" in body["error"]["message"]

    private_redis.start()
    assert health(system.app) == (200, {"status": "ok", "database": "ok", "broker": "ok"})

    private_redis.pause()
    started = time.monotonic()
    status, body = health(system.app)
    assert time.monotonic() - started < PROBE_TIMEOUT + 1.5, "the health check hung on a broker that does not answer"
    assert (status, body["broker"], body["database"]) == (503, "down", "ok")
    private_redis.resume()
    assert health(system.app)[0] == 200

    terminate_backends(DATABASE)
    assert health(system.app) == (200, {"status": "ok", "database": "ok", "broker": "ok"})

    closed = free_port()
    unreachable = build_app(Settings(database_url=f"postgresql://root@127.0.0.1:{closed}/{DATABASE}",
                                     broker_url=private_redis.url), policy=system.app.policy)
    try:
        status, body = health(unreachable)
        assert (status, body["database"], body["broker"], body["status"]) == (503, "down", "ok", "down")
        assert list(body["error"]["fields"]) == ["database"] and "database" in body["error"]["message"]
    finally:
        from models.base import database
        unreachable.broker.close()
        database.initialize(system.app.db)  # the models' handle back to the system's database
