"""`models.workflow.apply`: one change, one transaction — audit row, outbox, dispatch, or nothing."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from policy import Policy
from models.audit import TicketEvent
from tests.conftest import fund_merchant
from models.base import database, utcnow
from models.change import Actor, Role
from models.evidence import EvidenceRequest
from models.machine import NotAllowed
from models.dispatches import Arrival
from models.outbox import Dispatch, OutboxEvent, new_dispatch
from models.ticket import Ticket
from models.timer import CANCELLED, PENDING, Timer
from models.workflow import UnknownTicket, VersionConflict, apply, open_ticket

STATUS = {"dispute_status": "not_reconciled", "category": "apparel"}


def new_ticket(policy: Policy, ref: str, negotiation: str = "failed", **fields: object) -> int:
    values = dict(source="shop", external_ref=ref, channel="app", user_id="u1", merchant_id="m1", order_id=ref,
                  order_amount=10000, currency="CNY", category="apparel", delivery="platform",
                  order_status="delivered", dispute_type="quality", claimed_amount=5000, occurred_at=utcnow())
    values.update(fields)
    fund_merchant(str(values["merchant_id"]))  # merchant-side refunds deduct at once
    return open_ticket(values, {"negotiation": negotiation}, policy).ticket.id


def counts(ticket_id: int) -> tuple[int, int, int, int, int]:
    t = Ticket.get_by_id(ticket_id)
    return (t.version, TicketEvent.select().where(TicketEvent.ticket == ticket_id).count(),
            OutboxEvent.select().where(OutboxEvent.ticket_id == ticket_id).count(),
            Dispatch.select().where(Dispatch.ticket_id == ticket_id).count(),
            Timer.select().where(Timer.ticket_id == ticket_id).count())


def in_stage3(policy: Policy, ref: str) -> int:
    ticket_id = new_ticket(policy, ref)
    apply(ticket_id, "take_over", Actor.agent(1, 1), {}, policy)
    apply(ticket_id, "to_judgment", Actor.agent(1, 1), STATUS, policy)
    return ticket_id


def ledger(ticket_id: int) -> list[tuple[str, int, str]]:
    return [(e.routing_key, e.body["amount"], e.body["idempotency_key"])
            for e in OutboxEvent.select().where((OutboxEvent.ticket_id == ticket_id)
                                                & OutboxEvent.routing_key.startswith("ledger."))
            .order_by(OutboxEvent.id)]


def test_a_change_writes_its_audit_row_its_event_and_the_next_stage_dispatch_together(app, make_policy) -> None:
    # Given a ticket waiting for takeover, under push routing (the router acts on arrivals)
    policy = make_policy(routing={"mode": "push"})
    ticket_id = new_ticket(policy, "W1")
    # When a stage-1 agent takes it over
    outcome = apply(ticket_id, "take_over", Actor.agent(1, 9), {}, policy)
    # Then the ticket, its audit row, its op.events row and stage 1's arrival are all there
    ticket = Ticket.get_by_id(ticket_id)
    assert (ticket.state, ticket.version, ticket.assignee) == ("stage1", 2, 9)
    assert outcome.event.version == 2 and outcome.event.actor == "agent:9"
    event = OutboxEvent.select().order_by(OutboxEvent.id.desc()).get()
    assert (event.routing_key, event.body["version"], event.body["from_state"]) == (
        "ticket.stage1", 2, "awaiting_takeover")
    assert [(d.queue, d.kind, d.payload) for d in Dispatch.select().where(Dispatch.id.in_(outcome.dispatches))] == [
        ("stage1", "arrive", {"ticket_id": ticket_id, "version": 2})]
    assert Dispatch.get_by_id(outcome.dispatches[0]).payload_object() == Arrival(ticket_id, 2)


def test_under_pull_routing_a_change_sends_no_arrival_to_the_stage_it_enters(app, policy) -> None:
    # Given a ticket waiting for takeover, under pull routing (agents claim from the table)
    assert policy.routing.mode == "pull"
    ticket_id = new_ticket(policy, "W1b")
    # When a stage-1 agent takes it over
    outcome = apply(ticket_id, "take_over", Actor.agent(1, 9), {}, policy)
    # Then the change is recorded and published, and no message goes to the stage queue
    assert Ticket.get_by_id(ticket_id).state == "stage1"
    assert OutboxEvent.select().where(OutboxEvent.routing_key == "ticket.stage1").count() == 1
    assert not Dispatch.select().where((Dispatch.ticket_id == ticket_id) & (Dispatch.kind == "arrive")).exists()
    assert outcome.dispatches == []


def test_a_caller_holding_an_old_version_is_told_of_the_conflict_and_nothing_changes(app, policy) -> None:
    ticket_id = new_ticket(policy, "W2")
    before = counts(ticket_id)
    with pytest.raises(VersionConflict):
        apply(ticket_id, "take_over", Actor.agent(1, 9), {}, policy, expected_version=0)
    assert counts(ticket_id) == before


def test_a_change_to_a_ticket_that_does_not_exist_is_refused(app, policy) -> None:
    with pytest.raises(UnknownTicket):
        apply(4242, "withdraw", Actor(Role.USER), {}, policy)


def test_a_cause_already_claimed_is_reported_as_a_duplicate_and_changes_nothing(app, policy) -> None:
    ticket_id = new_ticket(policy, "W3")
    before = counts(ticket_id)
    outcome = apply(ticket_id, "take_over", Actor.agent(1, 9), {}, policy, claim_cause=lambda: False)
    assert outcome.duplicate and counts(ticket_id) == before


def test_an_effect_that_fails_half_way_leaves_no_trace(app, policy) -> None:
    # Given a ticket in stage 1
    ticket_id = new_ticket(policy, "W4")
    apply(ticket_id, "take_over", Actor.agent(1, 9), {}, policy)
    before = counts(ticket_id)
    # When an evidence request without its "from" reaches the effect (after the round was counted)
    with pytest.raises(KeyError):
        apply(ticket_id, "request_evidence", Actor.agent(1, 9), dict(STATUS, items=["photo"]), policy)
    # Then no round, no request, no deadline, no audit row: the transaction rolled back
    assert counts(ticket_id) == before
    assert Ticket.get_by_id(ticket_id).evidence_rounds == 0
    assert EvidenceRequest.select().count() == 0


def test_leaving_a_state_cancels_the_deadlines_it_had_set(app, policy) -> None:
    # Given a ticket in negotiation with its merchant-response deadline pending
    ticket_id = new_ticket(policy, "W5", negotiation="pending")
    assert Timer.get(Timer.ticket_id == ticket_id).status == PENDING
    # When the merchant answers
    apply(ticket_id, "platform_judgment", Actor(Role.MERCHANT), {"option": "platform_judgment"}, policy)
    # Then that deadline will not fire
    assert Timer.get(Timer.ticket_id == ticket_id).status == CANCELLED


def test_past_the_evidence_cap_stage_two_may_only_send_to_judgment(app, policy) -> None:
    # Given a ticket that has had max_rounds evidence rounds
    ticket_id = new_ticket(policy, "W6")
    apply(ticket_id, "take_over", Actor.agent(1, 1), {}, policy)
    request = {"from": "user", "items": ["photo"]}
    apply(ticket_id, "request_evidence", Actor.agent(1, 1), dict(STATUS, **request), policy)
    for _ in range(policy.evidence.max_rounds - 1):
        apply(ticket_id, "evidence_deadline", Actor(Role.SCHEDULER), {}, policy)
        apply(ticket_id, "request_evidence", Actor.agent(2, 2), request, policy)
    apply(ticket_id, "evidence_deadline", Actor(Role.SCHEDULER), {}, policy)
    assert Ticket.get_by_id(ticket_id).evidence_rounds == policy.evidence.max_rounds
    # When stage 2 asks for one more round / Then it is refused by the cap
    with pytest.raises(NotAllowed) as refusal:
        apply(ticket_id, "request_evidence", Actor.agent(2, 2), request, policy)
    assert refusal.value.guarded and refusal.value.failed == ["below_evidence_cap"]
    # And the refusal carries the guard's own words, with the ticket's numbers in them
    max_rounds = policy.evidence.max_rounds
    assert refusal.value.reason == (f"the evidence rounds are used up ({max_rounds} of {max_rounds}); "
                                    "send the ticket to judgment")
    # And judgment is still open to it
    assert apply(ticket_id, "to_judgment", Actor.agent(2, 2), {}, policy).ticket.state == "stage3"


def test_an_appeal_after_the_window_is_refused(app, policy) -> None:
    # Given a closed ticket (appeal window: one second in the test policy)
    ticket_id = in_stage3(policy, "W7")
    apply(ticket_id, "judge", Actor.agent(3, 3), {"liability": "customer", "remedy": "no_refund"}, policy)
    apply(ticket_id, "complaint_fee", Actor.agent(4, 4), {"amount": 0}, policy)
    closed_at = Ticket.get_by_id(ticket_id).closed_at
    appeal = {"party": "user", "reason_code": "disagree_liability"}
    # When the buyer appeals two seconds after closing / Then it is refused
    with pytest.raises(NotAllowed):
        apply(ticket_id, "appeal", Actor(Role.USER), appeal, policy, now=closed_at + timedelta(seconds=2))
    # And within the window it is accepted, back to judgment
    assert apply(ticket_id, "appeal", Actor(Role.USER), appeal, policy, now=closed_at).ticket.state == "stage3"


def test_a_shared_liability_refunds_the_merchant_share_of_the_claim(app, policy) -> None:
    ticket_id = in_stage3(policy, "W8")
    apply(ticket_id, "judge", Actor.agent(3, 3), {"liability": "both", "remedy": "full_refund"}, policy)
    apply(ticket_id, "verify_refund", Actor.agent(4, 4), {}, policy)
    judged = TicketEvent.get((TicketEvent.ticket == ticket_id) & (TicketEvent.action == "judge")).version
    assert ledger(ticket_id) == [("ledger.refund_deducted", 2500, f"refund_deducted:{ticket_id}:{judged}")]


def test_a_change_commits_even_when_another_connection_commits_during_its_transaction(app, policy) -> None:
    """SQLite: transactions begin IMMEDIATE (disputes.wiring), so a transaction that reads before it
    writes queues behind a concurrent writer instead of failing with "database is locked"."""
    # Given a ticket, and a worker thread about to mark some dispatch done
    ticket_id = new_ticket(policy, "L1")
    other = new_dispatch("stage1", Arrival(ticket_id, 1)).id
    committed = threading.Event()

    def worker_commits() -> None:
        database.connect(reuse_if_open=True)
        try:
            with database.atomic():
                Dispatch.update(outcome="applied").where(Dispatch.id == other).execute()
        finally:
            database.close()
            committed.set()
    thread = threading.Thread(target=worker_commits)

    def claim() -> bool:  # like the intake's claim: read first, then write
        Ticket.get_by_id(ticket_id)
        thread.start()
        committed.wait(0.5)
        return True
    # When an agent's takeover is applied while the worker commits
    try:
        outcome = apply(ticket_id, "take_over", Actor.agent(1, 9), {}, policy, claim_cause=claim)
    finally:
        thread.join()
    # Then both changes are in
    assert outcome.ticket.state == "stage1"
    assert Dispatch.get_by_id(other).outcome == "applied"


# -- regressions: defects found and fixed ----------------------------------------------

def test_an_appeal_that_raises_the_refund_pays_the_difference_under_a_new_key(app, policy) -> None:
    # Given a partial refund of 1000 verified and closed
    ticket_id = in_stage3(policy, "A1")
    apply(ticket_id, "judge", Actor.agent(3, 3), {"liability": "merchant", "remedy": "partial_refund",
                                                 "amount": 1000}, policy)
    apply(ticket_id, "verify_refund", Actor.agent(4, 4), {}, policy)
    # When the buyer appeals and another judge awards the full claim
    apply(ticket_id, "appeal", Actor(Role.USER), {"party": "user", "reason_code": "disagree_amount"}, policy)
    apply(ticket_id, "judge", Actor.agent(3, 5), {"liability": "merchant", "remedy": "full_refund"}, policy)
    apply(ticket_id, "verify_refund", Actor.agent(4, 4), {}, policy)
    # Then payments, applying each key once, moves 5000 in all
    refunds = [(amount, key) for kind, amount, key in ledger(ticket_id) if kind == "ledger.refund_deducted"]
    assert len({key for _, key in refunds}) == len(refunds)
    assert sum(amount for amount, _ in refunds) == 5000


def test_a_refund_paid_in_negotiation_is_not_paid_again_after_judgment(app, policy) -> None:
    # Given a merchant who refunded directly, and a buyer who declined anyway
    ticket_id = new_ticket(policy, "D1", negotiation="pending")
    apply(ticket_id, "direct_refund", Actor(Role.MERCHANT), {"option": "direct_refund"}, policy)
    apply(ticket_id, "decline_settlement", Actor(Role.USER), {}, policy)
    # When the floor judges the merchant liable for the full claim and verifies the refund
    apply(ticket_id, "take_over", Actor.agent(1, 1), {}, policy)
    apply(ticket_id, "to_judgment", Actor.agent(1, 1), STATUS, policy)
    apply(ticket_id, "judge", Actor.agent(3, 3), {"liability": "merchant", "remedy": "full_refund"}, policy)
    apply(ticket_id, "verify_refund", Actor.agent(4, 4), {}, policy)
    # Then the merchant paid the claim once
    assert sum(amount for kind, amount, _ in ledger(ticket_id) if kind == "ledger.refund_deducted") == 5000


def test_after_an_appeal_the_agent_who_judged_may_not_judge_again(app, policy) -> None:
    ticket_id = in_stage3(policy, "J1")
    apply(ticket_id, "judge", Actor.agent(3, 3), {"liability": "customer", "remedy": "no_refund"}, policy)
    apply(ticket_id, "complaint_fee", Actor.agent(4, 4), {"amount": 0}, policy)
    apply(ticket_id, "appeal", Actor(Role.USER), {"party": "user", "reason_code": "disagree_liability"}, policy)
    with pytest.raises(NotAllowed):
        apply(ticket_id, "judge", Actor.agent(3, 3), {"liability": "customer", "remedy": "no_refund"}, policy)
