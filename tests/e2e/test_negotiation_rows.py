"""Every row of the negotiation phase (issue 4), end to end through ``op.intake``, with second-long deadlines.

Each test runs the system the way ``disputes run`` does in embedded mode — the dramatiq stage
workers on the in-process broker, the scheduler (timers, outbox relay, reconciler) and the kombu
intake consumer on ``memory://``, each on its own thread, against a fresh SQLite file — and drives
it only from outside: upstream messages are published with a kombu `Producer` to ``op.intake``,
agents act through the HTTP API, and what leaves the system is read from ``op.events`` by a queue
bound with ``#`` before anything is published. Each test asserts the final state, the audit trail,
the events and the ledger. (Deterministic and fast; the same kind of row runs on the real servers
in `test_direct_refund_accepted_on_the_real_servers`.)
"""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.conftest import fast_policy_dict
from tests.e2e.conftest import DISPUTES, REPO, Stack, complaint_body, wait_for

#: Deadlines of these tests unless a test says otherwise: long enough never to fire by accident.
LONG = "1h"
PROOF = {"kind": "logistics_proof", "uri": "https://files.example/e2e/no-fault.pdf", "note": "signed by the buyer"}


class Embedded:
    """One test's embedded system (threads in this process) and its view from outside."""

    def __init__(self, tmp: Path, policy_dict: dict) -> None:
        import dramatiq

        from policy import policy_from_dict
        from disputes.settings import Settings
        from disputes.wiring import build_app
        from models.schema import init_schema
        from workers import declare_all

        self.db_path = tmp / "embedded.db"
        self.policy_path = tmp / "policy.toml"
        import tomli_w
        self.policy_path.write_text(tomli_w.dumps(policy_dict), encoding="utf-8")
        self.app = build_app(Settings(database_url=f"sqlite:///{self.db_path}", broker_url="memory://",
                                      intake_url="memory://"), policy=policy_from_dict(policy_dict))
        with self.app.db.connection_context():
            init_schema()
        declare_all(self.app)
        self.stop_flag = threading.Event()
        self.threads: list[threading.Thread] = []
        self.worker = dramatiq.Worker(self.app.broker, worker_threads=4, worker_timeout=50)
        self.events: list[tuple[str, dict]] = []
        self._bind()
        from desk import create_api
        self.client = create_api(self.app).test_client()

    # -- lifecycle ------------------------------------------------------------------------------
    def _bind(self) -> None:
        from kombu import Exchange, Producer, Queue

        from disputes.settings import EVENTS_EXCHANGE
        from workers.intake import intake_exchange, intake_queue
        self.connection = self.app.kombu_connection()
        channel = self.connection.channel()
        bound = intake_queue(channel)
        bound.declare()
        bound.purge()  # the memory transport is process-wide: nothing from an earlier test
        self.producer = Producer(channel)
        self.intake_exchange = intake_exchange
        events = Exchange(EVENTS_EXCHANGE, type="topic", durable=True)
        self.tap = Queue(f"test.events.{uuid.uuid4().hex}", exchange=events, routing_key="#",
                         auto_delete=True)(self.connection.channel())
        self.tap.declare()

    def start(self) -> "Embedded":
        from scheduler.loop import Scheduler
        from workers.intake import consume
        self.worker.start()
        scheduler = Scheduler(self.app, interval=0.05)
        for name, target in (("scheduler", lambda: scheduler.run(self.stop_flag.is_set)),
                             ("intake", lambda: consume(self.app, should_stop=self.stop_flag.is_set))):
            thread = threading.Thread(target=target, name=f"e2e-{name}", daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def stop(self) -> None:
        if self.stop_flag.is_set():
            return
        self.stop_flag.set()
        for thread in self.threads:
            thread.join(timeout=10)
        self.worker.stop(timeout=10_000)
        try:
            self.tap.delete()
        except Exception:  # noqa: BLE001
            pass
        self.connection.release()
        self.app.broker.close()
        self.app.db.close()

    # -- upstream --------------------------------------------------------------------------------
    def publish(self, routing_key: str, body: dict, message_id: str | None = None) -> str:
        message_id = message_id or uuid.uuid4().hex
        self.producer.publish(json.dumps(body).encode("utf-8"), exchange=self.intake_exchange,
                              routing_key=routing_key, message_id=message_id, content_type="application/json",
                              content_encoding="utf-8", declare=[self.intake_exchange])
        return message_id

    def follow_up(self, routing_key: str, ticket_id: int, **fields: Any) -> str:
        return self.publish(routing_key, {"schema_version": 1, "ticket_id": ticket_id, **fields})

    def balance(self, merchant: str, amount: int) -> None:
        message_id = self.publish("merchant.balance_changed", {"schema_version": 1, "merchant_id": merchant,
                                                               "balance": amount, "currency": "CNY"})
        self.wait(lambda: self.processed(message_id), f"the balance report {message_id}")

    def complaint(self, **overrides: Any) -> tuple[int, dict]:
        """Publish a complaint (merchant ``m-1``, claim 6000, platform delivery) and wait for its ticket."""
        order = overrides.pop("order", {})
        body = complaint_body(**overrides)
        body["order"].update(order)
        self.publish("complaint.submitted", body)
        ticket_id = self.wait(lambda: self.ticket_id(body["source"], body["external_ref"]),
                              f"a ticket for {body['external_ref']}")
        return ticket_id, body

    # -- reading -----------------------------------------------------------------------------------
    def query(self, fn: Callable[[], Any]) -> Any:
        with self.app.db.connection_context():
            return fn()

    def ticket_id(self, source: str, ref: str) -> int | None:
        from models.ticket import Ticket
        found = self.query(lambda: Ticket.get_or_none((Ticket.source == source) & (Ticket.external_ref == ref)))
        return found.id if found else None

    def ticket(self, ticket_id: int) -> Any:
        from models.ticket import Ticket
        return self.query(lambda: Ticket.get_by_id(ticket_id))

    def processed(self, message_id: str) -> bool:
        from models.intake import ProcessedMessage, RejectedMessage
        return self.query(lambda: ProcessedMessage.select().where(ProcessedMessage.message_id == message_id).exists()
                          or RejectedMessage.select().where(RejectedMessage.message_id == message_id).exists())

    def rejection(self, message_id: str) -> dict | None:
        from models.intake import RejectedMessage
        row = self.query(lambda: RejectedMessage.get_or_none(RejectedMessage.message_id == message_id))
        return row.reasons if row else None

    def wait(self, predicate: Callable[[], Any], what: str, timeout: float = 20) -> Any:
        return wait_for(predicate, timeout, what, interval=0.05)

    def wait_state(self, ticket_id: int, state: str, timeout: float = 20) -> Any:
        seen: list[str] = []

        def reached() -> Any:
            ticket = self.ticket(ticket_id)
            seen.append(ticket.state)
            return ticket if ticket.state == state else None
        return wait_for(reached, timeout, f"ticket {ticket_id} to reach '{state}'", interval=0.05,
                        on_timeout=lambda: f"last seen: {seen[-1:]}")

    def trail(self, ticket_id: int) -> list[tuple[str, str, str | None, str]]:
        from models.audit import TicketEvent
        return self.query(lambda: [(e.actor, e.action, e.from_state, e.to_state) for e in TicketEvent.select()
                                   .where(TicketEvent.ticket == ticket_id).order_by(TicketEvent.version)])

    def drain_events(self) -> list[tuple[str, dict]]:
        while True:
            message = self.tap.get(no_ack=True)
            if message is None:
                return self.events
            self.events.append((message.delivery_info["routing_key"], json.loads(message.body)))

    def events_of(self, ticket_id: int, until: str | None = None, timeout: float = 15) -> list[tuple[str, dict]]:
        """The ticket's events from ``op.events`` in arrival order; with `until`, wait for that routing key."""
        def mine() -> list[tuple[str, dict]]:
            return [(k, b) for k, b in self.drain_events() if b.get("ticket_id") == ticket_id]
        if until is not None:
            wait_for(lambda: any(k == until for k, _ in mine()), timeout, f"{until} for ticket {ticket_id}",
                     interval=0.05, on_timeout=lambda: f"seen: {[k for k, _ in mine()]}")
        return mine()

    def money(self, ticket_id: int) -> list[tuple[str, int]]:
        from models.ledger import LedgerTransaction
        return self.query(lambda: [(t.kind, t.amount) for t in LedgerTransaction.select()
                                   .where(LedgerTransaction.ticket_id == ticket_id).order_by(LedgerTransaction.id)])

    def funds(self, merchant: str = "m-1") -> int:
        from models import ledger
        return self.query(lambda: ledger.merchant_funds(merchant, "CNY"))

    def books(self, ticket_id: int) -> None:
        """The ledger is sound and the buyer received what the ticket records."""
        from models import ledger
        assert self.query(ledger.check_invariants) == []
        ticket = self.ticket(ticket_id)
        assert self.query(lambda: ledger.paid_to_buyer(ticket_id)) == ticket.refunded_amount

    def pending_timers(self, ticket_id: int) -> list[str]:
        from models.timer import PENDING, Timer
        return self.query(lambda: [t.action for t in Timer.select().where(
            (Timer.ticket_id == ticket_id) & (Timer.status == PENDING))])

    def cli(self, *args: str) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OP_")}
        env.update(OP_DATABASE_URL=f"sqlite:///{self.db_path}", OP_POLICY=str(self.policy_path))
        done = subprocess.run(DISPUTES + list(args), env=env, cwd=str(REPO), capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    # -- agents --------------------------------------------------------------------------------------
    def agent(self, name: str, stage: int) -> dict[str, str]:
        from models.agent import Agent, hash_token
        token = f"token-{name}-{uuid.uuid4().hex}"
        self.query(lambda: Agent.create(name=name, stage=stage, token_hash=hash_token(token)))
        return {"Authorization": f"Bearer {token}"}

    def agent_id(self, headers: dict[str, str]) -> int:
        from models.agent import Agent, hash_token
        token = headers["Authorization"].split(" ", 1)[1]
        return self.query(lambda: Agent.get(Agent.token_hash == hash_token(token)).id)

    def claim(self, headers: dict[str, str]) -> dict | None:
        response = self.client.post("/me/claim", headers=headers)
        assert response.status_code in (200, 204), response.get_json()
        return response.get_json() if response.status_code == 200 else None

    def act(self, headers: dict[str, str], ticket: dict, action: str, params: dict | None = None,
            qc: dict | None = None) -> None:
        body: dict[str, Any] = {"action": action, "expected_version": ticket["version"], "params": params or {}}
        if qc is not None:
            body["qc"] = qc
        response = self.client.post(f"/tickets/{ticket['id']}/actions", headers=headers, json=body)
        assert response.status_code == 202, response.get_json()


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Callable[..., Embedded]]:
    """``embedded(deadlines={...}, rollout={...}, ...)``: start an embedded system with the test policy
    (every deadline "1h" unless named; policy sections merged over the default)."""
    started: list[Embedded] = []

    def _start(deadlines: dict[str, str] | None = None, **sections: dict) -> Embedded:
        data = fast_policy_dict(**sections)
        data["deadlines"] = {name: LONG for name in data["deadlines"]} | (deadlines or {})
        where = tmp_path / f"run{len(started)}"
        where.mkdir()
        system = Embedded(where, data)
        started.append(system)
        return system.start()
    try:
        yield _start
    finally:
        for system in reversed(started):
            system.stop()


def keys(events: list[tuple[str, dict]]) -> list[str]:
    """The state changes and money movements, in arrival order (``notify.*`` is another contract's)."""
    return [k for k, _ in events if not k.startswith("notify.")]


def one(events: list[tuple[str, dict]], key: str) -> dict:
    found = [b for k, b in events if k == key]
    assert len(found) == 1, (key, keys(events))
    return found[0]


def respond(system: Embedded, ticket_id: int, option: str, **extra: Any) -> str:
    return system.follow_up("merchant.responded", ticket_id, merchant_id="m-1", option=option, **extra)


# ---- direct_refund -----------------------------------------------------------------------------

def test_direct_refund_covered_is_refunded_at_once_and_the_buyer_accepting_resolves_it(embedded) -> None:
    system = embedded()
    system.balance("m-1", 10_000)
    ticket_id, body = system.complaint()
    system.wait_state(ticket_id, "negotiating")
    # When the merchant refunds directly
    respond(system, ticket_id, "direct_refund")
    waiting = system.wait_state(ticket_id, "awaiting_confirmation")
    # Then the refund was executed at once: deducted from the merchant, announced with its key
    assert (waiting.refund_amount, waiting.refunded_amount) == (6000, 6000)
    assert system.money(ticket_id) == [("refund_deducted", 6000)]
    assert system.funds() == 4000
    assert system.pending_timers(ticket_id) == ["customer_confirmation_deadline"]
    # When the buyer accepts
    system.follow_up("customer.confirmed", ticket_id, user_id=body["user_id"], accept=True)
    resolved = system.wait_state(ticket_id, "resolved")
    assert resolved.assignee is None and resolved.floor_at is None  # settled without an agent
    assert system.trail(ticket_id) == [
        ("system", "submit", None, "negotiating"),
        ("merchant", "direct_refund", "negotiating", "awaiting_confirmation"),
        ("user", "accept_settlement", "awaiting_confirmation", "resolved")]
    events = system.events_of(ticket_id, until="ticket.resolved")
    assert keys(events) == ["ticket.negotiating", "ticket.awaiting_confirmation", "ledger.refund_deducted",
                            "ticket.resolved"]
    refund = one(events, "ledger.refund_deducted")
    version = one(events, "ticket.awaiting_confirmation")["version"]
    assert (refund["amount"], refund["currency"], refund["merchant_id"], refund["user_id"]) == (6000, "CNY", "m-1",
                                                                                               body["user_id"])
    assert refund["idempotency_key"] == f"refund_deducted:{ticket_id}:{version}"
    assert one(events, "ticket.awaiting_confirmation")["data"]["option"] == "direct_refund"
    assert system.pending_timers(ticket_id) == []
    system.books(ticket_id)


def test_direct_refund_the_merchant_cannot_cover_goes_to_the_floor_with_the_reason(embedded) -> None:
    system = embedded()
    system.balance("m-1", 2500)
    ticket_id, _ = system.complaint()
    respond(system, ticket_id, "direct_refund")
    ticket = system.wait_state(ticket_id, "awaiting_takeover")
    # Then nothing moved, and the reason is on the ticket (the desk shows it) and in the event
    assert system.money(ticket_id) == [] and system.funds() == 2500
    assert ticket.refunded_amount == 0 and ticket.floor_at is not None
    shown = system.client.get(f"/tickets/{ticket_id}", headers=system.agent("reader", 1)).get_json()
    assert shown["payment"]["issue"] == ticket.payment_issue
    assert "25.00 CNY" in ticket.payment_issue and "60.00 CNY" in ticket.payment_issue  # major units, named
    assert system.trail(ticket_id)[-1] == ("merchant", "direct_refund", "negotiating", "awaiting_takeover")
    event = one(system.events_of(ticket_id, until="ticket.awaiting_takeover"), "ticket.awaiting_takeover")
    assert event["data"]["refund_failed"] == ticket.payment_issue and event["data"]["option"] == "direct_refund"
    assert not [k for k in keys(system.events_of(ticket_id)) if k.startswith("ledger.")]
    system.books(ticket_id)


# ---- negotiated_reject, the buyer's answer -------------------------------------------------------

def test_negotiated_reject_then_silence_resolves_it_at_the_confirmation_deadline(embedded) -> None:
    system = embedded(deadlines={"customer_confirmation": "1s"})
    ticket_id, _ = system.complaint()
    respond(system, ticket_id, "negotiated_reject", reason_code="agreed_no_refund")
    system.wait_state(ticket_id, "awaiting_confirmation")
    # When the buyer says nothing for a second
    system.wait_state(ticket_id, "resolved", timeout=15)
    assert system.trail(ticket_id) == [
        ("system", "submit", None, "negotiating"),
        ("merchant", "negotiated_reject", "negotiating", "awaiting_confirmation"),
        ("scheduler", "customer_confirmation_deadline", "awaiting_confirmation", "resolved")]
    assert keys(system.events_of(ticket_id, until="ticket.resolved")) == [
        "ticket.negotiating", "ticket.awaiting_confirmation", "ticket.resolved"]
    assert system.money(ticket_id) == [] and system.ticket(ticket_id).refund_amount is None
    system.books(ticket_id)


def test_a_buyer_who_declines_the_settlement_sends_it_to_the_floor(embedded) -> None:
    system = embedded()
    ticket_id, body = system.complaint()
    respond(system, ticket_id, "negotiated_reject")
    system.wait_state(ticket_id, "awaiting_confirmation")
    system.follow_up("customer.confirmed", ticket_id, user_id=body["user_id"], accept=False)
    ticket = system.wait_state(ticket_id, "awaiting_takeover")
    assert ticket.floor_at is not None
    assert system.trail(ticket_id)[-1] == ("user", "decline_settlement", "awaiting_confirmation", "awaiting_takeover")
    event = one(system.events_of(ticket_id, until="ticket.awaiting_takeover"), "ticket.awaiting_takeover")
    assert (event["actor"], event["action"]) == ("user", "decline_settlement")
    assert system.pending_timers(ticket_id) == [] and system.money(ticket_id) == []


def test_a_merchant_who_does_not_answer_in_time_sends_it_to_the_floor(embedded) -> None:
    system = embedded(deadlines={"merchant_response": "1s"})
    ticket_id, _ = system.complaint()
    system.wait_state(ticket_id, "awaiting_takeover", timeout=15)
    assert system.trail(ticket_id)[-1] == ("scheduler", "merchant_response_deadline", "negotiating",
                                           "awaiting_takeover")
    assert keys(system.events_of(ticket_id, until="ticket.awaiting_takeover")) == [
        "ticket.negotiating", "ticket.awaiting_takeover"]


# ---- intercept_48h --------------------------------------------------------------------------------

def test_intercept_the_merchant_approving_the_refund_during_the_countdown_resolves_it(embedded) -> None:
    system = embedded()
    system.balance("m-1", 10_000)
    ticket_id, _ = system.complaint()
    respond(system, ticket_id, "intercept_48h")
    system.wait_state(ticket_id, "intercepting")
    assert system.pending_timers(ticket_id) == ["interception_deadline"]
    system.follow_up("merchant.refund_approved", ticket_id, merchant_id="m-1")
    ticket = system.wait_state(ticket_id, "resolved")
    assert ticket.refunded_amount == 6000 and system.money(ticket_id) == [("refund_deducted", 6000)]
    assert system.trail(ticket_id)[1:] == [
        ("merchant", "intercept_48h", "negotiating", "intercepting"),
        ("merchant", "approve_refund", "intercepting", "resolved")]
    assert keys(system.events_of(ticket_id, until="ticket.resolved")) == [
        "ticket.negotiating", "ticket.intercepting", "ticket.resolved", "ledger.refund_deducted"]
    assert system.pending_timers(ticket_id) == []
    system.books(ticket_id)


def test_intercept_a_merchant_delivered_order_is_refunded_when_the_countdown_ends(embedded) -> None:
    system = embedded(deadlines={"interception": "1s"})
    system.balance("m-1", 10_000)
    ticket_id, _ = system.complaint(order={"delivery": "merchant"})
    respond(system, ticket_id, "intercept_48h")
    ticket = system.wait_state(ticket_id, "resolved", timeout=15)
    assert ticket.refunded_amount == 6000 and system.funds() == 4000
    assert system.trail(ticket_id)[1:] == [
        ("merchant", "intercept_48h", "negotiating", "intercepting"),
        ("scheduler", "interception_deadline", "intercepting", "resolved")]
    events = system.events_of(ticket_id, until="ledger.refund_deducted")
    assert keys(events) == ["ticket.negotiating", "ticket.intercepting", "ticket.resolved", "ledger.refund_deducted"]
    assert one(events, "ticket.resolved")["actor"] == "scheduler"
    system.books(ticket_id)


def test_intercept_a_platform_delivered_order_is_intercepted_then_refunded_when_logistics_confirms(
        embedded) -> None:
    system = embedded(deadlines={"interception": "3s"})
    system.balance("m-1", 10_000)
    ticket_id, _ = system.complaint(order={"delivery": "platform"})
    respond(system, ticket_id, "intercept_48h")
    # When the countdown ends: the platform asks logistics to intercept (an event), the ticket waits on
    wait_for(lambda: len([b for k, b in system.events_of(ticket_id) if k == "ticket.intercepting"]) == 2, 15,
             "the interception request")
    request = [b for k, b in system.events_of(ticket_id) if k == "ticket.intercepting"][1]
    assert (request["actor"], request["action"], request["from_state"]) == ("scheduler", "interception_deadline",
                                                                            "intercepting")
    assert request["data"]["interception_requested"] is True and request["data"]["order_id"]
    assert system.ticket(ticket_id).state == "intercepting" and system.money(ticket_id) == []
    # When logistics confirms the parcel was stopped
    system.follow_up("logistics.interception_result", ticket_id, success=True)
    ticket = system.wait_state(ticket_id, "resolved")
    assert ticket.refunded_amount == 6000 and system.money(ticket_id) == [("refund_deducted", 6000)]
    assert system.trail(ticket_id)[1:] == [
        ("merchant", "intercept_48h", "negotiating", "intercepting"),
        ("scheduler", "interception_deadline", "intercepting", "intercepting"),
        ("system", "interception_succeeded", "intercepting", "resolved")]
    assert keys(system.events_of(ticket_id, until="ledger.refund_deducted")) == [
        "ticket.negotiating", "ticket.intercepting", "ticket.intercepting", "ticket.resolved",
        "ledger.refund_deducted"]
    assert system.pending_timers(ticket_id) == []
    system.books(ticket_id)


def test_intercept_a_failed_interception_sends_it_to_the_floor(embedded) -> None:
    system = embedded(deadlines={"interception": "2s"})
    system.balance("m-1", 10_000)
    ticket_id, _ = system.complaint(order={"delivery": "platform"})
    respond(system, ticket_id, "intercept_48h")
    wait_for(lambda: len([k for k, _ in system.events_of(ticket_id) if k == "ticket.intercepting"]) == 2, 15,
             "the interception request")
    system.follow_up("logistics.interception_result", ticket_id, success=False)
    ticket = system.wait_state(ticket_id, "awaiting_takeover")
    assert ticket.refunded_amount == 0 and system.money(ticket_id) == [] and system.funds() == 10_000
    assert system.trail(ticket_id)[-1] == ("system", "interception_failed", "intercepting", "awaiting_takeover")
    assert keys(system.events_of(ticket_id, until="ticket.awaiting_takeover"))[-1] == "ticket.awaiting_takeover"
    assert system.pending_timers(ticket_id) == []


def test_intercept_an_order_already_completed_when_the_countdown_ends_is_not_refunded(embedded) -> None:
    system = embedded(deadlines={"interception": "1s"})
    system.balance("m-1", 10_000)
    ticket_id, _ = system.complaint(order={"delivery": "merchant", "status": "completed"})
    respond(system, ticket_id, "intercept_48h")
    ticket = system.wait_state(ticket_id, "awaiting_takeover", timeout=15)
    assert ticket.refunded_amount == 0 and system.money(ticket_id) == [] and system.funds() == 10_000
    assert system.trail(ticket_id)[-1] == ("scheduler", "interception_deadline", "intercepting", "awaiting_takeover")
    assert not [k for k in keys(system.events_of(ticket_id, until="ticket.awaiting_takeover"))
                if k.startswith("ledger.")]


# ---- platform_judgment ---------------------------------------------------------------------------

def test_platform_judgment_sends_it_to_the_floor_with_the_merchant_no_fault_evidence(embedded) -> None:
    system = embedded()
    ticket_id, _ = system.complaint()
    respond(system, ticket_id, "platform_judgment", reason_code="no_fault", evidence=[PROOF])
    system.wait_state(ticket_id, "awaiting_takeover")
    shown = system.client.get(f"/tickets/{ticket_id}", headers=system.agent("reader", 1)).get_json()
    assert shown["negotiation_option"] == "platform_judgment" and shown["waiting_on"] == "stage1"
    assert [(e["party"], e["kind"], e["uri"], e["note"]) for e in shown["evidence"]] == [
        ("merchant", "logistics_proof", PROOF["uri"], PROOF["note"])]
    assert system.trail(ticket_id)[-1] == ("merchant", "platform_judgment", "negotiating", "awaiting_takeover")
    assert keys(system.events_of(ticket_id, until="ticket.awaiting_takeover")) == [
        "ticket.negotiating", "ticket.awaiting_takeover"]
    assert system.money(ticket_id) == []


# ---- withdrawal -----------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["negotiating", "awaiting_confirmation", "intercepting", "awaiting_takeover"])
def test_a_buyer_who_withdraws_ends_the_ticket_and_its_timers(embedded, where: str) -> None:
    system = embedded(deadlines={"merchant_response": "2s", "customer_confirmation": "2s", "interception": "2s"})
    ticket_id, body = system.complaint(negotiation="failed" if where == "awaiting_takeover" else "pending")
    if where == "awaiting_confirmation":
        respond(system, ticket_id, "negotiated_reject")
    elif where == "intercepting":
        respond(system, ticket_id, "intercept_48h")
    system.wait_state(ticket_id, where)
    system.follow_up("customer.withdrew", ticket_id, user_id=body["user_id"])
    system.wait_state(ticket_id, "withdrawn")
    assert system.pending_timers(ticket_id) == []
    trail = system.trail(ticket_id)
    assert trail[-1] == ("user", "withdraw", where, "withdrawn")
    # And no deadline it had fires later
    time.sleep(2.5)
    assert system.trail(ticket_id) == trail and system.ticket(ticket_id).state == "withdrawn"
    assert keys(system.events_of(ticket_id, until="ticket.withdrawn"))[-1] == "ticket.withdrawn"


# ---- appeals --------------------------------------------------------------------------------------

def close_on_the_floor(system: Embedded, ticket_id: int, judge_headers: dict[str, str]) -> None:
    """The floor: stage 1 takes over and sends to judgment; stage 3 judges the merchant liable;
    stage 4 verifies the refund (deducted at judgment)."""
    s1, s4 = system.agent(f"s1-{ticket_id}", 1), system.agent(f"s4-{ticket_id}", 4)
    ticket = system.claim(s1)
    assert ticket["id"] == ticket_id
    system.act(s1, ticket, "to_judgment", {"dispute_status": "not_reconciled", "category": "apparel"})
    system.wait_state(ticket_id, "stage3")
    ticket = system.claim(judge_headers)
    system.act(judge_headers, ticket, "judge", {"liability": "merchant", "remedy": "partial_refund", "amount": 2000},
               qc={"verdict": "ok"})
    system.wait_state(ticket_id, "stage4")
    ticket = system.claim(s4)
    system.act(s4, ticket, "verify_refund", qc={"verdict": "ok"})
    system.wait_state(ticket_id, "closed")


def test_an_appeal_within_the_window_returns_to_judgment_by_another_judge(embedded) -> None:
    system = embedded()
    system.balance("m-1", 10_000)
    first_judge, second_judge = system.agent("judge-a", 3), system.agent("judge-b", 3)
    ticket_id, body = system.complaint(negotiation="failed")
    system.wait_state(ticket_id, "awaiting_takeover")
    close_on_the_floor(system, ticket_id, first_judge)
    assert system.money(ticket_id) == [("refund_deducted", 2000)]
    # When the buyer appeals at once
    system.follow_up("appeal.filed", ticket_id, party="user", reason_code="disagree_amount")
    ticket = system.wait_state(ticket_id, "stage3")
    assert ticket.closed_at is None and ticket.judged_by == system.agent_id(first_judge)
    # Then the judge who judged it is not offered it; another judge is
    assert system.claim(first_judge) is None
    claimed = system.claim(second_judge)
    assert claimed["id"] == ticket_id and claimed["assignee"] == system.agent_id(second_judge)
    # And the new judgment (the full claim) pays only the difference
    system.act(second_judge, claimed, "judge", {"liability": "merchant", "remedy": "full_refund"},
               qc={"verdict": "ok"})
    system.wait_state(ticket_id, "stage4")
    assert system.money(ticket_id) == [("refund_deducted", 2000), ("refund_deducted", 4000)]
    appeal = [t for t in system.trail(ticket_id) if t[1] == "appeal"]
    assert appeal == [("user", "appeal", "closed", "stage3")]
    # (the relay publishes asynchronously: wait until the second pass through stage 3 is out)
    wait_for(lambda: sum(k == "ticket.stage3" for k, _ in system.events_of(ticket_id)) >= 2, 15,
             "the appeal's ticket.stage3 event")
    event = [b for k, b in system.events_of(ticket_id) if k == "ticket.stage3"][-1]
    assert event["action"] == "appeal" and event["data"]["excluded_agent"] == system.agent_id(first_judge)
    system.books(ticket_id)


def test_an_appeal_after_the_window_is_rejected_with_the_reason(embedded) -> None:
    system = embedded(deadlines={"appeal": "1s"})
    system.balance("m-1", 10_000)
    judge = system.agent("judge-a", 3)
    ticket_id, _ = system.complaint(negotiation="failed")
    system.wait_state(ticket_id, "awaiting_takeover")
    close_on_the_floor(system, ticket_id, judge)
    closed = system.ticket(ticket_id)
    # When the merchant appeals two seconds after closing
    time.sleep(max(0.0, 2.0 - (time.time() - closed.closed_at.timestamp())))
    message_id = system.follow_up("appeal.filed", ticket_id, party="merchant", reason_code="disagree_liability")
    system.wait(lambda: system.processed(message_id), "the appeal to be handled")
    # Then it is refused and kept with the reason; the ticket stays closed
    reasons = system.rejection(message_id)
    assert reasons and "appeal" in json.dumps(reasons) and "within appeal window" in json.dumps(reasons)
    assert system.ticket(ticket_id).state == "closed"
    listing = [line.split("\t") for line in system.cli("intake", "rejected").splitlines()]
    row = next(cols for cols in listing if len(cols) >= 6 and cols[3] == message_id)
    assert (row[2], row[4]) == ("appeal.filed", "rejected") and "within appeal window" in row[5]


# ---- gradual rollout --------------------------------------------------------------------------------

MERCHANTS = [f"rollout-m{i}" for i in range(24)]


def rollout_answers(system: Embedded, tag: str) -> dict[str, bool]:
    """Each merchant answers a fresh complaint with intercept_48h: admitted (True) or rejected."""
    tickets = {}
    for merchant in MERCHANTS:
        ticket_id, _ = system.complaint(merchant_id=merchant, external_ref=f"{tag}-{merchant}")
        tickets[merchant] = (ticket_id, system.follow_up("merchant.responded", ticket_id, merchant_id=merchant,
                                                        option="intercept_48h"))
    answers = {}
    for merchant, (ticket_id, message_id) in tickets.items():
        system.wait(lambda: system.processed(message_id), f"{merchant}'s answer")
        reasons = system.rejection(message_id)
        state = system.ticket(ticket_id).state
        if reasons is None:
            assert state == "intercepting"
        else:
            assert state == "negotiating", state  # refused whole: nothing half-applied
            assert "rollout" in json.dumps(reasons), reasons
        answers[merchant] = reasons is None
    return answers


def test_a_flow_in_gradual_rollout_is_offered_to_a_stable_growing_share_of_merchants(embedded) -> None:
    # At 30%: some merchants are in, some out, and each gets the same answer every time
    at_30 = embedded(rollout={"intercept_48h": 30})
    first = rollout_answers(at_30, "a")
    again = rollout_answers(at_30, "b")
    assert first == again
    inside = {m for m, ok in first.items() if ok}
    assert 0 < len(inside) < len(MERCHANTS)
    # And a merchant outside is told why, can still answer with a flow it has, and the CLI lists the refusal
    outsider = next(m for m, ok in first.items() if not ok)
    listing = at_30.cli("intake", "rejected")
    assert "merchant in rollout" in listing and "merchant.responded" in listing
    ticket_id, _ = at_30.complaint(merchant_id=outsider, external_ref=f"c-{outsider}")
    at_30.follow_up("merchant.responded", ticket_id, merchant_id=outsider, option="platform_judgment")
    at_30.wait_state(ticket_id, "awaiting_takeover")
    at_30.stop()
    # When the share is raised to 70%: everyone inside stays inside, and some join
    at_70 = embedded(rollout={"intercept_48h": 70})
    raised = rollout_answers(at_70, "c")
    grown = {m for m, ok in raised.items() if ok}
    assert inside <= grown and len(grown) > len(inside)


# ---- the same kind of row on the real servers ------------------------------------------------------

@pytest.mark.deadlines(merchant_response="1h", customer_confirmation="1h")
def test_direct_refund_accepted_on_the_real_servers(stack: Stack) -> None:
    """RabbitMQ intake, Redis broker, PostgreSQL: ``disputes intake`` and ``disputes scheduler`` as processes."""
    from models import ledger
    from models.ledger import LedgerTransaction
    stack.start_intake()
    stack.start_scheduler()
    stack.start_workers("negotiation", ["workers.negotiation"], queues=["negotiation"], threads=2)
    (reader,) = stack.add_agents(("e2e-neg-reader", 1))
    stack.publish("merchant.balance_changed", {"schema_version": 1, "merchant_id": "m-1", "balance": 10_000,
                                               "currency": "CNY"})
    body = complaint_body()
    stack.publish("complaint.submitted", body)
    tid = stack.find_ticket(body["source"], body["external_ref"], reader)["id"]
    stack.publish("merchant.responded", {"schema_version": 1, "ticket_id": tid, "merchant_id": "m-1",
                                         "option": "direct_refund"})
    t = stack.wait_state(tid, "awaiting_confirmation", reader)
    assert t["amounts"]["refunded"] == t["amounts"]["refund"] == body["claimed_amount"]
    assert t["waiting_on"] == "user"
    stack.publish("customer.confirmed", {"schema_version": 1, "ticket_id": tid, "user_id": body["user_id"],
                                         "accept": True})
    t = stack.wait_state(tid, "resolved", reader)
    trail = stack.api("GET", f"/tickets/{tid}/events", reader, expect=200)[1]
    assert [(e["actor"], e["action"], e["from_state"], e["to_state"]) for e in trail] == [
        ("system", "submit", None, "negotiating"),
        ("merchant", "direct_refund", "negotiating", "awaiting_confirmation"),
        ("user", "accept_settlement", "awaiting_confirmation", "resolved")]

    def resolved_published() -> list | None:
        got = [k for k, _ in stack.tap.of(tid) if not k.startswith("notify.")]
        return got if "ticket.resolved" in got else None
    got = wait_for(resolved_published, 15, "ticket.resolved on op.events", on_timeout=stack.logs)
    assert got == ["ticket.negotiating", "ticket.awaiting_confirmation", "ledger.refund_deducted", "ticket.resolved"]
    refund = next(b for k, b in stack.tap.of(tid) if k == "ledger.refund_deducted")
    assert refund["amount"] == body["claimed_amount"] and refund["idempotency_key"].startswith("refund_deducted:")
    with stack.app.db.connection_context():
        assert ledger.check_invariants() == []
        assert ledger.merchant_funds("m-1", "CNY") == 10_000 - body["claimed_amount"]
        assert ledger.paid_to_buyer(tid) == body["claimed_amount"]
        assert [(x.kind, x.amount) for x in LedgerTransaction.select().where(LedgerTransaction.ticket_id == tid)] == [
            ("refund_deducted", body["claimed_amount"])]
    stack.assert_alive()
