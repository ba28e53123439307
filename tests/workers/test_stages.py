"""A ticket's life through the stage queues, on the StubBroker: send, join, assert.

Agents' decisions reach a stage as ``act`` dispatches (what the desk writes
after accepting a click); deadlines as ``wake`` dispatches from the scheduler.
"""
from __future__ import annotations

from typing import Callable

import pytest

from disputes.wiring import App
from models.audit import TicketEvent
from tests.conftest import fund_merchant
from models.change import Actor
from models.dispatches import AgentDecision
from models.outbox import Dispatch, OutboxEvent, new_dispatch
from models.ticket import Ticket
from models.timer import FIRED, PENDING, Timer
from models.workflow import apply
from scheduler.loop import Scheduler
from scheduler.timers import fire_due_timers
from models.sending import send_dispatches, send_rows

STAGE1_AGENT, STAGE2_AGENT, STAGE3_AGENT, STAGE4_AGENT = 11, 21, 31, 41
PHOTO = {"kind": "photo", "uri": "https://files.example/p1.jpg"}


def act(app: App, stage: int, ticket_id: int, agent_id: int, action: str, params: dict | None = None,
        qc: dict | None = None, expected_version: int | None = None) -> int:
    """Write and send an agent's decision as the desk does; returns the dispatch id."""
    decision = AgentDecision(ticket_id, agent_id, action, expected_version, params or {}, qc)
    row = new_dispatch(f"stage{stage}", decision)
    send_dispatches(app.broker, [row.id])
    return row.id


def take_over(app: App, ticket_id: int, agent_id: int = STAGE1_AGENT) -> None:
    """A stage-1 agent takes the ticket (the desk's claim), and its arrival is sent."""
    outcome = apply(ticket_id, "take_over", Actor.agent(1, agent_id), {}, app.policy)
    send_dispatches(app.broker, outcome.dispatches)


def trail(ticket_id: int) -> list[tuple]:
    return [(e.actor, e.action, e.from_state, e.to_state)
            for e in TicketEvent.select().where(TicketEvent.ticket == ticket_id).order_by(TicketEvent.version)]


def routing_keys(ticket_id: int) -> list[str]:
    """The state changes and money movements published (notify.* events: tests/notify)."""
    return [e.routing_key for e in OutboxEvent.select().where((OutboxEvent.ticket_id == ticket_id)
                                                              & ~OutboxEvent.routing_key.startswith("notify."))
            .order_by(OutboxEvent.id)]


def state_of(ticket_id: int) -> str:
    return Ticket.get_by_id(ticket_id).state


@pytest.fixture
def on_the_floor(app: App, publish, complaint, drain) -> Callable[..., int]:
    """``on_the_floor(**complaint_overrides)``: a ticket whose negotiation failed, taken over by
    the stage-1 agent and in ``stage1``."""
    def _make(**overrides: object) -> int:
        fund_merchant(str(overrides.get("merchant_id", "m1")))
        ticket_id = publish("complaint.submitted", complaint(negotiation="failed", **overrides)).ticket_id
        drain()  # let the arrival be done before the agent acts, as on the floor
        take_over(app, ticket_id)
        drain()
        assert state_of(ticket_id) == "stage1"
        return ticket_id
    return _make


REQUEST_BOTH = {"dispute_status": "not_reconciled", "category": "apparel", "from": "both",
                "items": ["photo", "chat_log"]}


def test_a_failed_negotiation_goes_through_all_four_stages_to_a_verified_refund(
        app, worker, publish, complaint, drain, clock) -> None:
    # Given a complaint whose negotiation failed, against a merchant whose funds cover refunds
    fund_merchant("m1")
    ticket_id = publish("complaint.submitted", complaint(negotiation="failed", claimed_amount=5000), "c-1").ticket_id
    drain()
    assert state_of(ticket_id) == "awaiting_takeover"
    # When a stage-1 agent takes it over and asks both parties for evidence
    take_over(app, ticket_id)
    act(app, 1, ticket_id, STAGE1_AGENT, "request_evidence", REQUEST_BOTH)
    drain()
    assert state_of(ticket_id) == "awaiting_evidence"
    # And only the merchant answers
    assert publish("evidence.submitted", {"schema_version": 1, "ticket_id": ticket_id, "party": "merchant",
                                          "items": [PHOTO]}, "e-1").status == "admitted"
    assert state_of(ticket_id) == "awaiting_evidence"
    # And the evidence deadline passes: the scheduler wakes the ticket into stage 2
    clock.advance(1.5)
    assert Scheduler(app).tick()["timers_fired"] == 1
    drain()
    assert state_of(ticket_id) == "stage2"
    # And stage 2 claims it and sends it to judgment, flagging stage 1's evidence request
    act(app, 2, ticket_id, STAGE2_AGENT, "claim")
    drain()
    act(app, 2, ticket_id, STAGE2_AGENT, "to_judgment",
        qc={"verdict": "flag", "reason_code": "unnecessary_evidence_request"})
    drain()
    # And stage 3 finds the merchant liable for a full refund
    act(app, 3, ticket_id, STAGE3_AGENT, "judge", {"liability": "merchant", "remedy": "full_refund"},
        qc={"verdict": "ok"})
    drain()
    assert state_of(ticket_id) == "stage4"
    # And stage 4 verifies the refund
    act(app, 4, ticket_id, STAGE4_AGENT, "verify_refund", qc={"verdict": "ok"})
    drain()
    # Then the ticket is closed with the judgment on it
    ticket = Ticket.get_by_id(ticket_id)
    assert (ticket.state, ticket.liability, ticket.remedy, ticket.refund_amount, ticket.evidence_rounds) == (
        "closed", "merchant", "full_refund", 5000, 1)
    assert ticket.closed_at is not None and ticket.judged_by == STAGE3_AGENT and ticket.assignee is None
    # And the audit trail tells who did what, in order
    assert trail(ticket_id) == [
        ("system", "submit", None, "awaiting_takeover"),
        (f"agent:{STAGE1_AGENT}", "take_over", "awaiting_takeover", "stage1"),
        (f"agent:{STAGE1_AGENT}", "request_evidence", "stage1", "awaiting_evidence"),
        ("merchant", "submit_evidence", "awaiting_evidence", "awaiting_evidence"),
        ("scheduler", "evidence_deadline", "awaiting_evidence", "stage2"),
        (f"agent:{STAGE2_AGENT}", "claim", "stage2", "stage2"),
        (f"agent:{STAGE2_AGENT}", "to_judgment", "stage2", "stage3"),
        (f"agent:{STAGE3_AGENT}", "judge", "stage3", "stage4"),
        (f"agent:{STAGE4_AGENT}", "verify_refund", "stage4", "closed"),
    ]
    # And each stage's quality check is about the agent of the stage before it
    qc = [(e.action, e.qc_verdict, e.qc_reason, e.qc_about)
          for e in TicketEvent.select().where((TicketEvent.ticket == ticket_id) & TicketEvent.qc_verdict.is_null(False))
          .order_by(TicketEvent.version)]
    assert qc == [("to_judgment", "flag", "unnecessary_evidence_request", STAGE1_AGENT),
                  ("judge", "ok", None, STAGE2_AGENT),
                  ("verify_refund", "ok", None, STAGE3_AGENT)]
    # And downstream hears of every state change, and of the refund deducted at judgment, in commit order
    assert routing_keys(ticket_id) == [
        "ticket.awaiting_takeover", "ticket.stage1", "ticket.awaiting_evidence", "ticket.stage2",
        "ticket.stage3", "ticket.stage4", "ledger.refund_deducted", "ticket.closed"]
    refund = OutboxEvent.select().where(OutboxEvent.routing_key == "ledger.refund_deducted").get().body
    closed = OutboxEvent.select().where(OutboxEvent.routing_key == "ticket.closed").get().body
    assert (refund["amount"], refund["currency"], refund["idempotency_key"]) == (
        5000, "CNY", f"refund_deducted:{ticket_id}:{closed['version'] - 1}")
    assert (closed["actor"], closed["action"], closed["from_state"]) == (f"agent:{STAGE4_AGENT}", "verify_refund",
                                                                         "stage4")
    # And every dispatch was done exactly once, none refused
    assert {d.outcome for d in Dispatch.select()} == {"applied"}
    assert Timer.get(Timer.ticket_id == ticket_id).status == FIRED


def test_evidence_from_every_requested_party_wakes_the_ticket_before_the_deadline(
        app, worker, publish, drain, on_the_floor) -> None:
    # Given a ticket waiting for evidence from both parties
    ticket_id = on_the_floor()
    act(app, 1, ticket_id, STAGE1_AGENT, "request_evidence", REQUEST_BOTH)
    drain()
    # When both answer
    for party in ("user", "merchant"):
        publish("evidence.submitted", {"schema_version": 1, "ticket_id": ticket_id, "party": party,
                                       "items": [PHOTO]})
    drain()
    # Then it is in stage 2 at once and its deadline will never fire
    assert state_of(ticket_id) == "stage2"
    assert Timer.get(Timer.ticket_id == ticket_id).status == "cancelled"
    assert trail(ticket_id)[-1] == ("merchant", "submit_evidence", "awaiting_evidence", "stage2")


def test_a_customer_side_judgment_closes_with_a_complaint_fee(app, worker, drain, on_the_floor) -> None:
    # Given a ticket sent straight to judgment
    ticket_id = on_the_floor()
    act(app, 1, ticket_id, STAGE1_AGENT, "to_judgment", {"dispute_status": "not_reconciled", "category": "apparel"})
    drain()
    # When stage 3 finds the buyer liable and stage 4 grants a goodwill fee
    act(app, 3, ticket_id, STAGE3_AGENT, "judge", {"liability": "customer", "remedy": "no_refund"},
        qc={"verdict": "ok"})
    drain()
    act(app, 4, ticket_id, STAGE4_AGENT, "verify_refund", qc={"verdict": "ok"})
    drain()
    # Then verifying a refund nobody owes is refused, and the stage-4 dispatch says why
    assert state_of(ticket_id) == "stage4"
    assert Dispatch.select().order_by(Dispatch.id.desc()).get().outcome.startswith("refused:")
    act(app, 4, ticket_id, STAGE4_AGENT, "complaint_fee", {"amount": 500}, qc={"verdict": "ok"})
    drain()
    # And the fee closes it, paid as a ledger event
    assert state_of(ticket_id) == "closed"
    assert routing_keys(ticket_id)[-2:] == ["ticket.closed", "ledger.complaint_fee_paid"]


def test_a_buyer_who_never_returns_the_goods_is_refunded_nothing(
        app, worker, drain, on_the_floor, clock) -> None:
    # Given a return-and-refund judgment against the merchant
    ticket_id = on_the_floor()
    act(app, 1, ticket_id, STAGE1_AGENT, "to_judgment", {"dispute_status": "not_reconciled", "category": "apparel"})
    drain()
    act(app, 3, ticket_id, STAGE3_AGENT, "judge", {"liability": "merchant", "remedy": "return_and_refund"},
        qc={"verdict": "ok"})
    drain()
    assert state_of(ticket_id) == "awaiting_payment"
    # When the payment deadline passes
    clock.advance(1.5)
    Scheduler(app).tick()
    drain()
    # Then stage 4 has it back, nothing is owed, and no money moved
    assert state_of(ticket_id) == "stage4"
    assert trail(ticket_id)[-1] == ("scheduler", "payment_voucher_deadline", "awaiting_payment", "stage4")
    assert not [k for k in routing_keys(ticket_id) if k.startswith("ledger.")]
    assert Ticket.get_by_id(ticket_id).refund_amount == 0


def test_a_merchant_who_does_not_answer_in_time_sends_the_ticket_to_the_floor(
        app, worker, publish, complaint, drain, clock) -> None:
    ticket_id = publish("complaint.submitted", complaint()).ticket_id
    clock.advance(1.5)
    Scheduler(app).tick()
    drain()
    assert trail(ticket_id)[-1] == ("scheduler", "merchant_response_deadline", "negotiating", "awaiting_takeover")


def test_a_decision_delivered_twice_is_applied_once(app, worker, drain, on_the_floor) -> None:
    # Given a stage-1 decision sent once
    ticket_id = on_the_floor()
    version = Ticket.get_by_id(ticket_id).version
    dispatch_id = act(app, 1, ticket_id, STAGE1_AGENT, "request_evidence", REQUEST_BOTH)
    # When the broker delivers it again, and once more after it was done
    send_rows(app.broker, [Dispatch.get_by_id(dispatch_id)])
    drain()
    send_rows(app.broker, [Dispatch.get_by_id(dispatch_id)])
    drain()
    # Then the ticket moved once: one audit row, one evidence round, one deadline
    ticket = Ticket.get_by_id(ticket_id)
    assert (ticket.state, ticket.version, ticket.evidence_rounds) == ("awaiting_evidence", version + 1, 1)
    assert [a for _, a, _, _ in trail(ticket_id)].count("request_evidence") == 1
    assert Timer.select().where(Timer.ticket_id == ticket_id).count() == 1
    assert Dispatch.get_by_id(dispatch_id).outcome == "applied"


def test_a_decision_made_on_a_stale_view_of_the_ticket_is_refused(app, worker, drain, on_the_floor) -> None:
    # Given an agent who saw the ticket at an older version
    ticket_id = on_the_floor()
    seen = Ticket.get_by_id(ticket_id).version - 1
    # When the decision arrives
    dispatch_id = act(app, 1, ticket_id, STAGE1_AGENT, "to_judgment",
                      {"dispute_status": "not_reconciled", "category": "apparel"}, expected_version=seen)
    drain()
    # Then nothing changes and the dispatch records the conflict
    assert state_of(ticket_id) == "stage1"
    assert Dispatch.get_by_id(dispatch_id).outcome.startswith("refused:")


def test_a_deadline_that_fires_after_its_ticket_moved_on_changes_nothing(
        app, worker, publish, drain, on_the_floor, clock) -> None:
    # Given a ticket waiting for evidence whose deadline fired (its wake-up not yet delivered)
    ticket_id = on_the_floor()
    act(app, 1, ticket_id, STAGE1_AGENT, "request_evidence", dict(REQUEST_BOTH, **{"from": "user"}))
    drain()
    clock.advance(1.5)
    wake_ids = fire_due_timers(clock())
    assert len(wake_ids) == 1
    # And meanwhile the buyer's evidence moved it to stage 2
    publish("evidence.submitted", {"schema_version": 1, "ticket_id": ticket_id, "party": "user", "items": [PHOTO]})
    drain()
    before = Ticket.get_by_id(ticket_id)
    assert before.state == "stage2"
    # When the wake-up is delivered
    send_dispatches(app.broker, wake_ids)
    drain()
    # Then it is marked stale and the ticket is untouched
    assert Dispatch.get_by_id(wake_ids[0]).outcome.startswith("stale")
    after = Ticket.get_by_id(ticket_id)
    assert (after.state, after.version) == (before.state, before.version)
    assert "evidence_deadline" not in [a for _, a, _, _ in trail(ticket_id)]


class TestUnderPushRouting:
    @pytest.fixture
    def policy(self, make_policy):
        return make_policy(routing={"mode": "push"})

    def test_an_arrival_nobody_can_take_is_recorded_as_done(self, app, worker, publish, complaint, drain) -> None:
        ticket_id = publish("complaint.submitted", complaint(negotiation="timed_out")).ticket_id
        drain()
        arrival = Dispatch.get((Dispatch.ticket_id == ticket_id) & (Dispatch.kind == "arrive"))
        assert (arrival.queue, arrival.outcome) == ("stage1", "no agent available")
        assert Timer.select().where((Timer.ticket_id == ticket_id) & (Timer.status == PENDING)).count() == 0


def test_a_dispatch_whose_payload_does_not_fit_its_kind_is_refused_once_not_retried(
        app, worker, drain, on_the_floor) -> None:
    # Given an act dispatch written by hand without the agent who decided
    ticket_id = on_the_floor()
    row = Dispatch.create(queue="stage1", kind="act", ticket_id=ticket_id,
                          payload={"ticket_id": ticket_id, "action": "to_judgment"})
    # When it is sent and handled
    send_rows(app.broker, [row])
    drain()
    # Then it is done with the reason (a `Refused`), the ticket untouched
    done = Dispatch.get_by_id(row.id)
    assert done.done_at is not None and done.outcome.startswith("refused: bad 'act' payload: KeyError")
    assert state_of(ticket_id) == "stage1"
