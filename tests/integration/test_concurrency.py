"""Concurrency on PostgreSQL: two hands on one ticket at the same instant, two schedulers on one timer table.

Part 4 of issue 7. The API is served for real (waitress on a socket, the app
built for PostgreSQL, a dramatiq worker applying what it accepts); each pair
of requests is released together by a `threading.Barrier`, and what a user
would notice is asserted: exactly one of the two is applied — one audit row
for the version it made, one ``op.events`` event, money moved once — and the
other is told 409 with SPEC §6's error body (or, for a claim, 204: nothing
left to claim). The schedulers are two ``disputes scheduler`` processes.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Callable, Iterator

import dramatiq
import pytest

import workers
from desk import create_api
from policy import Policy, default_policy_dict, policy_from_dict
from disputes.wiring import App
from models.agent import Agent, hash_token
from models.audit import TicketEvent
from models.base import database, utcnow
from models.change import Actor, Role
from models.outbox import Dispatch, OutboxEvent
from models.ticket import Ticket
from models.timer import FIRED, PENDING, Timer
from models.workflow import apply, open_ticket
from scheduler.loop import Scheduler
from tests.conftest import fund_merchant
from tests.integration.conftest import fresh_pg_database, make_app

pytestmark = pytest.mark.servers

STAGE1 = {"dispute_status": "not_reconciled", "category": "apparel"}
OK = {"verdict": "ok"}


# ---------------------------------------------------------------------------------------------
# a real server on PostgreSQL
# ---------------------------------------------------------------------------------------------

class Desk:
    """The API served by waitress on a real socket, a dramatiq worker applying its dispatches,
    and agents with tokens."""

    def __init__(self, app: App, port: int) -> None:
        self.app, self.port = app, port
        self.tokens: dict[str, str] = {}
        self.ids: dict[str, int] = {}
        self.scheduler = Scheduler(app)  # one instance: it keeps the relay lease from round to round

    def add(self, name: str, stage: int, supervisor: bool = False) -> None:
        token = f"tok-{name}"
        with database.connection_context():
            row = Agent.create(name=name, stage=stage, token_hash=hash_token(token), capacity=500,
                               supervisor=supervisor)
        self.tokens[name], self.ids[name] = token, row.id

    def request(self, method: str, path: str, agent: str, body: dict | None = None) -> tuple[int, dict | None]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            headers = {"Authorization": f"Bearer {self.tokens[agent]}", "Content-Type": "application/json"}
            conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
        finally:
            conn.close()

    def decide(self, agent: str, ticket_id: int, action: str, version: int, params: dict | None = None,
               qc: dict | None = None) -> Callable[[], tuple[int, dict | None]]:
        body = {"action": action, "expected_version": version, "params": params or {}, "qc": qc}
        return lambda: self.request("POST", f"/tickets/{ticket_id}/actions", agent, body)

    def claim(self, agent: str) -> Callable[[], tuple[int, dict | None]]:
        return lambda: self.request("POST", "/me/claim", agent)

    def apply(self, ticket_id: int, action: str, agent: str | None, params: dict | None = None,
              qc: dict | None = None, role: Role = Role.SYSTEM) -> Ticket:
        """Set a scene directly through the workflow."""
        with database.connection_context():
            stage = None
            if agent is not None:
                with database.atomic():
                    stage = Agent.get_by_id(self.ids[agent]).stage
            actor = Actor.agent(stage, self.ids[agent]) if agent else Actor(role)
            apply(ticket_id, action, actor, params or {}, self.app.policy, qc=qc)
            return Ticket.get_by_id(ticket_id)


_refs = iter(range(1, 1_000_000))


def new_ticket(app: App) -> Ticket:
    n = next(_refs)
    fields = dict(source="race", external_ref=f"R-{n}", channel="app", user_id=f"u{n}", merchant_id="m1",
                  order_id=f"O-{n}", order_amount=10_000, currency="CNY", category="apparel",
                  delivery="platform", order_status="delivered", dispute_type="quality", claimed_amount=5_000,
                  occurred_at=utcnow())
    with database.connection_context():
        outcome = open_ticket(fields, {"negotiation": "failed"}, app.policy)
    assert outcome.ticket is not None
    return outcome.ticket


@pytest.fixture
def policy() -> Policy:
    data = default_policy_dict()
    data["complaint_fee"]["approval_threshold"] = 500  # type: ignore[index]  # fees above 5.00 need four eyes
    return policy_from_dict(data)


@pytest.fixture
def desk(policy: Policy) -> Iterator[Desk]:
    from waitress.server import create_server

    app = make_app(fresh_pg_database("disputes_concurrency"), policy)
    with database.connection_context():
        fund_merchant("m1")
    workers.declare_all(app)
    worker = dramatiq.Worker(app.broker, worker_threads=4)
    worker.start()
    server = create_server(create_api(app), host="127.0.0.1", port=0, threads=8)
    serving = threading.Thread(target=server.run, name="waitress", daemon=True)
    serving.start()
    d = Desk(app, server.effective_port)
    for name, stage, supervisor in (("s1a", 1, False), ("s1b", 1, False), ("s3a", 3, False), ("s4a", 4, False),
                                    ("sup1", 4, True), ("sup2", 4, True)):
        d.add(name, stage, supervisor)
    try:
        yield d
    finally:
        server.close()
        worker.stop()
        app.broker.close()
        app.db.close_all()


def together(*calls: Callable[[], object]) -> list[object]:
    """Run the calls in threads released at the same instant by a barrier; their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except BaseException as error:  # noqa: BLE001 - reported by the caller
            results[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


def settle(ticket_id: int, timeout: float = 20.0) -> None:
    """Wait until no decision on the ticket is still waiting for the worker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with database.connection_context():
            if not Dispatch.select().where((Dispatch.ticket_id == ticket_id) & (Dispatch.kind == "act")
                                           & Dispatch.done_at.is_null()).exists():
                return
        time.sleep(0.05)
    raise AssertionError(f"the decisions on ticket {ticket_id} were not applied in {timeout}s")


def trail(ticket_id: int, version: int) -> tuple[list[str], int]:
    """The audit actions recorded for `version` of the ticket, and its ``ticket.*`` events of that version."""
    with database.connection_context():
        actions = [e.action for e in TicketEvent.select().where((TicketEvent.ticket == ticket_id)
                                                                & (TicketEvent.version == version))]
        events = [o for o in OutboxEvent.select().where((OutboxEvent.ticket_id == ticket_id)
                                                        & OutboxEvent.routing_key.startswith("ticket."))
                  if o.body.get("version") == version]
    return actions, len(events)


def assert_conflict(status: int, body: dict | None,
                    codes: tuple[str, ...] = ("version_conflict", "state_conflict")) -> None:
    """SPEC §6: 409 and ``{"error": {"code", "message", "fields"}}``."""
    assert status == 409, (status, body)
    assert body is not None and set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] in codes and isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["fields"], dict) and error["fields"], error


# ---------------------------------------------------------------------------------------------
# the four races, five rounds each
# ---------------------------------------------------------------------------------------------

def claim_race(desk: Desk, round_: int) -> None:
    """Two stage-1 agents press "Claim next" when one ticket waits: one gets it, the other 204."""
    ticket = new_ticket(desk.app)
    first, second = ("s1a", "s1b") if round_ % 2 else ("s1b", "s1a")
    (s1, b1), (s2, b2) = together(desk.claim(first), desk.claim(second))
    assert sorted([s1, s2]) == [200, 204], (s1, b1, s2, b2)
    winner, body = (first, b1) if s1 == 200 else (second, b2)
    assert body is not None and body["id"] == ticket.id and body["assignee"] == desk.ids[winner], body
    actions, events = trail(ticket.id, 2)
    assert actions == ["take_over"] and events == 1
    with database.connection_context():
        t = Ticket.get_by_id(ticket.id)
        assert (t.state, t.version, t.assignee) == ("stage1", 2, desk.ids[winner])
        assert TicketEvent.select().where((TicketEvent.ticket == ticket.id)
                                          & (TicketEvent.action == "take_over")).count() == 1


DECISIONS = [
    (("to_judgment", STAGE1), ("request_evidence", {**STAGE1, "from": "user", "items": ["photo"]})),
    (("to_judgment", STAGE1), ("to_judgment", STAGE1)),  # a double click
]


def decision_race(desk: Desk, round_: int) -> None:
    """The assigned agent decides twice at once (two tabs, a double click): one applies, one 409."""
    ticket = new_ticket(desk.app)
    ticket = desk.apply(ticket.id, "take_over", "s1a")
    (a1, p1), (a2, p2) = DECISIONS[round_ % len(DECISIONS)]
    v = ticket.version
    (s1, b1), (s2, b2) = together(desk.decide("s1a", ticket.id, a1, v, p1), desk.decide("s1a", ticket.id, a2, v, p2))
    assert sorted([s1, s2]) == [202, 409], (s1, b1, s2, b2)
    accepted = a1 if s1 == 202 else a2
    assert_conflict(*((s2, b2) if s1 == 202 else (s1, b1)), codes=("version_conflict",))
    settle(ticket.id)
    actions, events = trail(ticket.id, v + 1)
    assert actions == [accepted] and events == 1
    with database.connection_context():
        assert Ticket.get_by_id(ticket.id).version == v + 1
        outcomes = [d.outcome for d in Dispatch.select().where((Dispatch.ticket_id == ticket.id)
                                                                & (Dispatch.kind == "act"))]
    assert outcomes == ["applied"], outcomes


def lease_race(desk: Desk, round_: int) -> None:
    """An agent decides at the instant the scheduler takes the ticket back (its claim lease ran
    out): either the decision applies and the lease is left alone, or the lease expires and the
    agent is told 409 — never both, never a 202 that is then thrown away."""
    ticket = new_ticket(desk.app)
    desk.apply(ticket.id, "take_over", "s1a")
    desk.apply(ticket.id, "to_judgment", "s1a", STAGE1)
    ticket = desk.apply(ticket.id, "claim", "s3a")
    with database.connection_context():
        Ticket.update(assigned_at=utcnow() - timedelta(seconds=desk.app.policy.routing.lease.seconds() + 60)
                      ).where(Ticket.id == ticket.id).execute()
    v = ticket.version
    params = {"liability": "customer", "remedy": "no_refund"}
    (status, body), _ = together(desk.decide("s3a", ticket.id, "judge", v, params, OK), desk.scheduler.tick)
    settle(ticket.id)
    actions, events = trail(ticket.id, v + 1)
    if status == 202:
        assert actions == ["judge"] and events == 1, actions
    else:
        assert_conflict(status, body, codes=("version_conflict",))
        assert actions == ["lease_expired"], actions
    with database.connection_context():
        assert TicketEvent.select().where((TicketEvent.ticket == ticket.id) & TicketEvent.action.in_(
            ["judge", "lease_expired"])).count() == 1
        outcomes = [d.outcome for d in Dispatch.select().where((Dispatch.ticket_id == ticket.id)
                                                                & (Dispatch.kind == "act"))]
    assert outcomes == (["applied"] if status == 202 else []), outcomes


APPROVALS = [("approve_payment", "approve_payment"), ("approve_payment", "decline_payment")]


def approval_race(desk: Desk, round_: int) -> None:
    """Two supervisors decide the same complaint fee at once: one decision applies (the fee is
    paid at most once), the other is told 409."""
    ticket = new_ticket(desk.app)
    desk.apply(ticket.id, "take_over", "s1a")
    desk.apply(ticket.id, "to_judgment", "s1a", STAGE1)
    desk.apply(ticket.id, "claim", "s3a")
    desk.apply(ticket.id, "judge", "s3a", {"liability": "customer", "remedy": "no_refund"}, OK)
    desk.apply(ticket.id, "claim", "s4a")
    ticket = desk.apply(ticket.id, "complaint_fee", "s4a", {"amount": 1000}, OK)
    assert ticket.state == "stage4"
    first, second = APPROVALS[round_ % len(APPROVALS)]
    v = ticket.version
    (s1, b1), (s2, b2) = together(desk.decide("sup1", ticket.id, first, v), desk.decide("sup2", ticket.id, second, v))
    assert sorted([s1, s2]) == [202, 409], (s1, b1, s2, b2)
    assert_conflict(*((s2, b2) if s1 == 202 else (s1, b1)))
    accepted = first if s1 == 202 else second
    settle(ticket.id)
    actions, events = trail(ticket.id, v + 1)
    assert actions == [accepted] and events == (1 if accepted == "approve_payment" else 0), (actions, events)
    with database.connection_context():
        t = Ticket.get_by_id(ticket.id)
        fees = OutboxEvent.select().where((OutboxEvent.ticket_id == ticket.id)
                                          & (OutboxEvent.routing_key == "ledger.complaint_fee_paid")).count()
    assert (t.state, fees) == (("closed", 1) if accepted == "approve_payment" else ("stage4", 0))


RACES = [claim_race, decision_race, lease_race, approval_race]


def test_two_hands_on_one_ticket_at_the_same_instant_apply_once_and_the_other_is_told(desk: Desk) -> None:
    """20 rounds through the real HTTP API on PostgreSQL: claims, decisions, a decision against the
    scheduler's lease expiry, and two supervisors' approvals — each applied exactly once."""
    for round_ in range(5):
        for race in RACES:
            race(desk, round_)


# ---------------------------------------------------------------------------------------------
# two schedulers, one timer table
# ---------------------------------------------------------------------------------------------

#: Due timers both schedulers find at the same instant: more than one firing batch (1,000), so both
#: take a share under ``FOR UPDATE SKIP LOCKED``. Firing them takes about a second; applying them is
#: the stage-2 worker's share of the test's time (35 wake-ups/s at a load average of 14 on 2 cores).
TIMERS = 1200
#: This file's own Redis db: the dramatiq broker and the kombu transport of op.events.
REDIS_URL = "redis://127.0.0.1:6379/9"


def clone_waiting_tickets(app: App, n: int) -> list[int]:
    """`n` tickets waiting on evidence, each with its evidence deadline pending, made by copying one
    ticket driven there through the workflow — three statements instead of `n` admissions. (The
    evidence deadline, awaiting_evidence → stage2, notifies nobody: the worker's share stays small.)"""
    template = ticket_awaiting_evidence(app)
    ticket_columns = [f.column_name for f in Ticket._meta.sorted_fields if f.name != "id"]
    unique = {"external_ref": "external_ref || '-' || g", "order_id": "order_id || '-' || g"}
    select = ", ".join(unique.get(c, f'"{c}"') for c in ticket_columns)
    timer_columns = [f.column_name for f in Timer._meta.sorted_fields if f.name not in ("id", "ticket_id")]
    quoted = ", ".join(f'"{c}"' for c in ticket_columns)
    with database.connection_context(), database.atomic():
        ids = [r[0] for r in database.execute_sql(
            f"INSERT INTO ticket ({quoted}) SELECT {select} FROM ticket, generate_series(1, %s) AS g "
            "WHERE id = %s RETURNING id", (n - 1, template)).fetchall()]
        database.execute_sql(
            f"INSERT INTO timer (ticket_id, {', '.join(chr(34) + c + chr(34) for c in timer_columns)}) "
            f"SELECT t.id, {', '.join('m.' + chr(34) + c + chr(34) for c in timer_columns)} "
            "FROM ticket t, timer m WHERE m.ticket_id = %s AND m.status = %s AND t.id <> %s",
            (template, PENDING, template))
        assert Timer.select().where(Timer.status == PENDING).count() == n
        # And their events so far (created, taken over, evidence requested), not relayed yet: a backlog
        # the relay publishes while the deadlines add each ticket's next event behind it.
        outbox = OutboxEvent._meta.table_name
        body = ("jsonb_set(jsonb_set(jsonb_set(o.body::jsonb, '{ticket_id}', to_jsonb(t.id)), "
                "'{event_id}', to_jsonb(gen_random_uuid()::text)), '{external_ref}', to_jsonb(t.external_ref))::text")
        database.execute_sql(
            f"INSERT INTO {outbox} (ticket_id, routing_key, body, created_at) "
            f"SELECT t.id, o.routing_key, {body}, o.created_at FROM ticket t, {outbox} o "
            "WHERE o.ticket_id = %s AND t.id <> %s ORDER BY t.id, o.id", (template, template))
    return [template] + ids


def ticket_awaiting_evidence(app: App) -> int:
    ticket = new_ticket(app)
    with database.connection_context():
        apply(ticket.id, "take_over", Actor.agent(1, 1), {}, app.policy)
        apply(ticket.id, "request_evidence", Actor.agent(1, 1), {**STAGE1, "from": "user", "items": ["photo"]},
              app.policy)
        assert Ticket.get_by_id(ticket.id).state == "awaiting_evidence"
        (timer,) = Timer.select().where((Timer.ticket_id == ticket.id) & (Timer.status == PENDING))
        assert (timer.action, timer.queue) == ("evidence_deadline", "stage2")
    return ticket.id


def test_two_scheduler_processes_fire_each_due_timer_once_and_relay_each_event_once_in_order(
        tmp_path, policy: Policy) -> None:
    """Two ``disputes scheduler`` processes on one PostgreSQL database find 1,200 evidence
    deadlines due at the same instant: every deadline is applied exactly once (one wake dispatch per
    timer, one audit row per ticket, every ticket in evidence review), and ``op.events`` carries each
    committed change exactly once, in version order per ticket, although both schedulers run the relay
    loop (only the holder of the relay lease publishes)."""
    import redis
    from kombu import Connection, Exchange, Queue

    from disputes.settings import EVENTS_EXCHANGE
    from tests.e2e.conftest import DISPUTES, DRAMATIQ, wait_for
    from tests.integration.conftest import need

    need(6379, "Redis")
    url = fresh_pg_database("disputes_concurrency_sched")
    app = make_app(url, policy)
    redis.Redis.from_url(REDIS_URL).flushdb()
    tickets = clone_waiting_tickets(app, TIMERS)
    with database.connection_context():  # due in an hour: nothing fires until both schedulers run
        Timer.update(due_at=utcnow() + timedelta(hours=1)).execute()

    env = {k: v for k, v in os.environ.items() if not k.startswith("OP_")}
    env.update(OP_DATABASE_URL=url, OP_BROKER_URL=REDIS_URL, OP_INTAKE_URL=REDIS_URL, PYTHONUNBUFFERED="1")
    procs: list[subprocess.Popen] = []
    logs: list[Path] = []

    def start(name: str, argv: list[str]) -> None:
        log = tmp_path / f"{name}.log"
        with open(log, "wb") as out:
            procs.append(subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True))
        logs.append(log)

    def show() -> str:
        return "\n".join(f"----- {log.name} -----\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:])
                         for log in logs)

    events = Queue(f"events-tap-{os.getpid()}", Exchange(EVENTS_EXCHANGE, type="topic", durable=True),
                   routing_key="#")
    with Connection(REDIS_URL) as tap:
        events(tap.default_channel).declare()  # bound before anything is published
        try:
            # The deadlines' queue (it also takes the arrivals in stage 2 they cause).
            start("workers", DRAMATIQ + ["workers.stage2", "--queues", "stage2",
                                         "--processes", "2", "--threads", "4"])
            start("scheduler-a", DISPUTES + ["scheduler"])
            start("scheduler-b", DISPUTES + ["scheduler"])
            wait_for(lambda: all("started" in log.read_text(errors="replace") for log in logs[1:]), 30,
                     "both schedulers to start", on_timeout=show)
            with database.connection_context():  # every timer falls due at once, under both schedulers
                Timer.update(due_at=utcnow() - timedelta(seconds=1)).execute()

            def settled() -> bool:
                assert all(p.poll() is None for p in procs), "a process died:\n" + show()
                with database.connection_context():
                    return (Ticket.select().where(Ticket.state == "stage2").count() == TIMERS
                            and not Dispatch.select().where(Dispatch.done_at.is_null()
                                                            & (Dispatch.kind == "wake")).exists()
                            and not OutboxEvent.select().where(OutboxEvent.published_at.is_null()).exists())
            wait_for(settled, 180, "every deadline applied and every event published", interval=0.5,
                     on_timeout=show)
            received = drain_events(tap, events)
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
            app.db.close_all()
    assert all(p.returncode == 0 for p in procs), show()

    with database.connection_context():
        assert Timer.select().where(Timer.status == FIRED).count() == TIMERS
        wakes = [d.payload["timer_id"] for d in Dispatch.select().where(Dispatch.kind == "wake")]
        assert len(wakes) == len(set(wakes)) == TIMERS  # each timer fired by one scheduler, once
        assert {d.outcome for d in Dispatch.select().where(Dispatch.kind == "wake")} == {"applied"}
        per_ticket = Counter(e.ticket_id for e in TicketEvent.select().where(
            TicketEvent.action == "evidence_deadline"))
        assert sorted(per_ticket) == sorted(tickets) and set(per_ticket.values()) == {1}
        outbox = {o.body["event_id"] for o in OutboxEvent.select()}
    ids = [body["event_id"] for _, body in received]
    assert len(ids) == len(set(ids)), "an event was published twice"
    assert set(ids) == outbox, f"{len(outbox - set(ids))} events never published"
    versions: dict[int, list[int]] = defaultdict(list)
    for key, body in received:
        if key.startswith("ticket."):
            versions[body["ticket_id"]].append(body["version"])
    # Per ticket: created, taken over, evidence requested (the backlog), then the deadline — in that order.
    assert sorted(versions) == sorted(tickets)
    assert all(v == [1, 2, 3, 4] for v in versions.values()), "a ticket's events out of commit order, or missing"


def drain_events(connection, queue) -> list[tuple[str, dict]]:
    """Everything the tap queue holds, in the order it was published."""
    bound = queue(connection.default_channel)
    received = []
    while True:
        message = bound.get(no_ack=True)
        if message is None:
            break
        received.append((message.delivery_info["routing_key"], json.loads(message.body)))
    bound.delete()
    return received
