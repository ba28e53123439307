"""Property: however the merchant, the buyer, logistics and the timers interleave on one ticket,
it ends in exactly one terminal outcome and the buyer is refunded at most once, exactly what is
owed (issue 4, "Done when" 2).

Each example opens one complaint in negotiation (through `Intake.admit`), against a merchant
whose reported balance may or may not cover the claim, for an order delivered by the platform or
by the merchant, possibly already ``completed``. Then any interleaving of:

* the merchant's answer (each of the four options, possibly more than once: only the first fits),
  ``merchant.refund_approved``, a new balance report;
* the buyer's ``customer.confirmed`` (accept or decline) and ``customer.withdrew``;
* ``logistics.interception_result`` (success or failure);
* timers: a due timer *fired* (its wake-up written) and, as a separate step, the wake-up
  *delivered* to the negotiation worker — so a wake-up can arrive after the ticket moved on;
* any earlier message or wake-up delivered again.

(One rule draws the move from a weighted list: hypothesis' simplest choices then are the
productive ones — a merchant's answer — rather than redeliveries of the complaint.)

After every step the ledger is sound, at most one refund was deducted, it is never above the claim,
what reached the buyer is what the ticket records, and a terminal ticket has no timer left. At the
end every pending deadline is driven to the floor and the floor closes the ticket (with a verdict
drawn per example: merchant full or partial refund, shared liability, or the buyer liable); then
exactly one terminal transition exists and the money moved equals the money owed — the judgment,
or what the negotiation already paid when that was more (nothing is taken back).
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from models import ledger
from models.approval import pending_approval
from models.audit import TicketEvent
from models.base import database
from models.change import Actor, Role
from models.intake import ProcessedMessage
from models.outbox import Dispatch, OutboxEvent
from models.states import TERMINAL_STATES
from models.ticket import Ticket
from models.timer import PENDING, Timer
from models.workflow import apply
from scheduler.timers import fire_due_timers
from tests.conftest import running_app, wipe_database
from workers.intake import Intake
from workers.base import StageWorker

CLAIMED = 4000
#: The 48-hour interception first: it has the most interleavings (hypothesis favours early choices).
OPTIONS = ("intercept_48h", "direct_refund", "negotiated_reject", "platform_judgment")
TERMINAL = {str(s) for s in TERMINAL_STATES}
#: What can happen next, weighted by repetition (a withdrawal ends the story, so it is rarer).
MOVES = ("merchant_responds", "a_timer_fires", "a_wake_up_is_delivered", "logistics_answers", "buyer_confirms",
         "a_timer_fires", "a_wake_up_is_delivered", "merchant_approves_the_refund", "merchant_responds",
         "logistics_answers", "buyer_confirms", "a_timer_fires", "a_wake_up_is_delivered",
         "merchant_balance_changes", "a_message_is_redelivered", "a_wake_up_is_redelivered", "buyer_withdraws")
#: The floor's judgment for tickets that reach it (liability, remedy; a partial refund is 1000).
VERDICTS = (("merchant", "full_refund"), ("customer", "no_refund"), ("merchant", "partial_refund"),
            ("both", "full_refund"))
EXAMPLES = 100
STEPS = 15


@pytest.fixture
def negotiation_app(tmp_path: Path, make_policy):
    with running_app(tmp_path, "negotiation.db", make_policy(), in_memory=True) as app:
        yield app


def wipe() -> None:
    """An empty database for the next example."""
    wipe_database()


def refunds(ticket_id: int) -> list[int]:
    return [e.body["amount"] for e in OutboxEvent.select().where(
        (OutboxEvent.ticket_id == ticket_id) & (OutboxEvent.routing_key == "ledger.refund_deducted"))]


def advances(ticket_id: int) -> list[int]:
    return [e.body["amount"] for e in OutboxEvent.select().where(
        (OutboxEvent.ticket_id == ticket_id) & (OutboxEvent.routing_key == "ledger.platform_advance"))]


def terminal_transitions(ticket_id: int) -> list[tuple[str, str]]:
    return [(e.action, e.to_state) for e in TicketEvent.select().where(
        (TicketEvent.ticket == ticket_id) & TicketEvent.to_state.in_(list(TERMINAL))
        & (TicketEvent.from_state.is_null() | (TicketEvent.from_state != TicketEvent.to_state)))]


def refunded_before_floor(ticket_id: int) -> int:
    """What the negotiation paid (a refund executed before anyone on the floor judged)."""
    judged = (TicketEvent.select(TicketEvent.version)
              .where((TicketEvent.ticket == ticket_id) & (TicketEvent.action == "judge"))
              .order_by(TicketEvent.version).first())
    query = OutboxEvent.select().where((OutboxEvent.ticket_id == ticket_id)
                                       & (OutboxEvent.routing_key == "ledger.refund_deducted"))
    limit = judged.version if judged else None
    return sum(e.body["amount"] for e in query
               if limit is None or int(e.body["idempotency_key"].rsplit(":", 1)[1]) < limit)


class OneTicket(RuleBasedStateMachine):
    app = None  # set by the test

    def __init__(self) -> None:
        super().__init__()
        wipe()
        self.app.broker.flush_all()
        self.intake = Intake(self.app)
        self.negotiation = StageWorker(self.app, "negotiation")
        self.stage4 = StageWorker(self.app, "stage4")
        self.ids = itertools.count(1)
        self.messages: list[tuple[str, bytes, str]] = []
        self.fired: list[int] = []  # wake-ups written by the scheduler, not yet delivered
        self.delivered: list[int] = []
        self.ticket_id = 0
        self.terminal_seen: str | None = None
        self.verdict = VERDICTS[0]

    # -- plumbing -------------------------------------------------------------------------------
    def admit(self, routing_key: str, body: dict, message_id: str | None = None) -> str:
        message_id = message_id or f"m-{next(self.ids)}"
        raw = json.dumps(body).encode("utf-8")
        self.messages.append((routing_key, raw, message_id))
        return self.intake.admit(routing_key, raw, message_id).status

    def follow_up(self, routing_key: str, **fields: object) -> str:
        return self.admit(routing_key, {"schema_version": 1, "ticket_id": self.ticket_id, **fields})

    @property
    def ticket(self) -> Ticket:
        return Ticket.get_by_id(self.ticket_id)

    def deliver(self, dispatch_id: int) -> None:
        row = Dispatch.get_by_id(dispatch_id)
        (self.negotiation if row.queue == "negotiation" else self.stage4).handle(dispatch_id)
        self.delivered.append(dispatch_id)

    def fire_next_timer(self) -> bool:
        timer = (Timer.select().where((Timer.ticket_id == self.ticket_id) & (Timer.status == PENDING))
                 .order_by(Timer.due_at).first())
        if timer is None:
            return False
        self.fired += fire_due_timers(timer.due_at)
        return True

    # -- the world --------------------------------------------------------------------------------
    @initialize(balance=st.sampled_from((0, 1000, CLAIMED, 50_000)), delivery=st.sampled_from(("platform", "merchant")),
                status=st.sampled_from(("delivered", "shipped", "completed", "unpaid")),
                verdict=st.sampled_from(VERDICTS))
    def complaint(self, balance: int, delivery: str, status: str, verdict: tuple[str, str]) -> None:
        self.verdict = verdict  # what the floor decides if the ticket reaches it
        self.admit("merchant.balance_changed", {"schema_version": 1, "merchant_id": "m1", "balance": balance,
                                                "currency": "CNY"})
        body = {"schema_version": 1, "source": "shop", "external_ref": "C-1", "channel": "app",
                "order": {"order_id": "O-1", "amount": 6000, "currency": "CNY", "category": "apparel",
                          "delivery": delivery, "status": status},
                "user_id": "u1", "merchant_id": "m1", "dispute_type": "cancel_order", "claimed_amount": CLAIMED,
                "description": "cancel", "occurred_at": "2026-11-20T10:00:00+08:00"}
        assert self.admit("complaint.submitted", body) == "admitted"
        self.ticket_id = Ticket.get(Ticket.external_ref == "C-1").id
        assert self.ticket.state == "negotiating"

    @rule(data=st.data(), move=st.sampled_from(MOVES))
    def someone_moves(self, data: st.DataObject, move: str) -> None:
        draw = data.draw
        if move == "merchant_responds":
            evidence = draw(st.booleans(), label="evidence")
            proof = [{"kind": "logistics_proof", "uri": "https://files.example/p.pdf"}] if evidence else []
            self.follow_up("merchant.responded", merchant_id="m1",
                           option=draw(st.sampled_from(OPTIONS), label="option"), evidence=proof)
        elif move == "merchant_approves_the_refund":
            self.follow_up("merchant.refund_approved", merchant_id="m1")
        elif move == "merchant_balance_changes":
            self.admit("merchant.balance_changed", {"schema_version": 1, "merchant_id": "m1", "currency": "CNY",
                                                    "balance": draw(st.sampled_from((0, CLAIMED, 50_000)),
                                                                    label="balance")})
        elif move == "buyer_confirms":
            self.follow_up("customer.confirmed", user_id="u1", accept=draw(st.booleans(), label="accept"))
        elif move == "buyer_withdraws":
            self.follow_up("customer.withdrew", user_id="u1")
        elif move == "logistics_answers":
            self.follow_up("logistics.interception_result", success=draw(st.booleans(), label="success"))
        elif move == "a_timer_fires":
            self.fire_next_timer()
        elif move == "a_wake_up_is_delivered" and self.fired:
            dispatch_id = draw(st.sampled_from(self.fired), label="wake-up")
            self.fired.remove(dispatch_id)
            self.deliver(dispatch_id)
        elif move == "a_message_is_redelivered":
            routing_key, raw, message_id = draw(st.sampled_from(self.messages), label="message")
            seen = ProcessedMessage.select().where(ProcessedMessage.message_id == message_id).exists()
            status = self.intake.admit(routing_key, raw, message_id).status
            if seen:  # applied once: changes nothing (one refused before may apply now, as a fresh delivery)
                assert status == "duplicate"
        elif move == "a_wake_up_is_redelivered" and self.delivered:
            before = self.ticket.version
            self.deliver(draw(st.sampled_from(self.delivered), label="wake-up"))
            assert self.ticket.version == before

    # -- after every step ---------------------------------------------------------------------------
    @invariant()
    def at_most_one_refund_and_one_outcome(self) -> None:
        if not self.ticket_id:
            return
        ticket = self.ticket
        assert ledger.check_invariants() == []
        deducted = refunds(ticket.id)
        assert len(deducted) <= 1 and sum(deducted) <= ticket.claimed_amount, deducted
        assert ledger.paid_to_buyer(ticket.id) == ticket.refunded_amount
        assert ticket.refunded_amount in (0, ticket.claimed_amount)  # all of the claim, or nothing yet
        outcomes = terminal_transitions(ticket.id)
        assert len(outcomes) <= 1, outcomes
        if ticket.state in TERMINAL:
            assert outcomes and outcomes[0][1] == ticket.state
            if self.terminal_seen is None:
                self.terminal_seen = ticket.state
            assert ticket.state == self.terminal_seen  # a final state is final
            assert Timer.select().where((Timer.ticket_id == ticket.id) & (Timer.status == PENDING)).count() == 0
        if ticket.payment_issue and ticket.state == "awaiting_takeover":
            assert ticket.refunded_amount == 0  # the failure is recorded because nothing moved

    # -- at the end: everything pending runs out, the floor closes what reached it -------------------
    def teardown(self) -> None:
        if not self.ticket_id:
            return
        for dispatch_id in list(self.fired):
            self.deliver(dispatch_id)
        self.fired.clear()
        for _ in range(40):
            ticket = self.ticket
            if ticket.state in TERMINAL:
                break
            self.floor_or_clock(ticket)
        else:
            raise AssertionError(f"ticket stuck in {self.ticket.state}")
        ticket = self.ticket
        outcomes = terminal_transitions(ticket.id)
        assert len(outcomes) == 1 and outcomes[0][1] == ticket.state, outcomes
        assert Timer.select().where((Timer.ticket_id == ticket.id) & (Timer.status == PENDING)).count() == 0
        assert ledger.check_invariants() == []
        paid = ledger.paid_to_buyer(ticket.id)
        assert paid == ticket.refunded_amount
        deducted, advanced = refunds(ticket.id), advances(ticket.id)
        assert len(deducted) + len(advanced) <= 1  # one refund, from the merchant or advanced by the platform
        owed = ticket.refund_amount or 0
        if ticket.state == "withdrawn":
            assert paid <= owed
        else:  # resolved or closed: the buyer got exactly what the settlement or the judgment owes
            assert sum(deducted) + sum(advanced) == paid == owed, (ticket.state, deducted, advanced, owed)
        if ticket.state == "closed":  # the judgment, or what the negotiation already paid if that was more
            liability, remedy = self.verdict
            judged = {"full_refund": ticket.claimed_amount, "partial_refund": 1000, "no_refund": 0}[remedy]
            if liability == "both":
                judged = judged * self.app.policy.liability.both_merchant_share_percent // 100
            elif liability == "customer":
                judged = 0
            assert owed == max(judged, refunded_before_floor(ticket.id)), (owed, judged)

    def floor_or_clock(self, ticket: Ticket) -> None:
        """One move towards a final state: the floor acts on visible tickets, time on hidden ones."""
        judge = 32 if ticket.judged_by == 31 else 31
        if ticket.state == "awaiting_takeover":
            apply(ticket.id, "take_over", Actor.agent(1, 11), {}, self.app.policy)
        elif ticket.state == "stage1":
            apply(ticket.id, "to_judgment", Actor.agent(1, 11),
                  {"dispute_status": "not_reconciled", "category": "apparel"}, self.app.policy)
        elif ticket.state == "stage3":
            liability, remedy = self.verdict
            apply(ticket.id, "judge", Actor.agent(3, judge), {"liability": liability, "remedy": remedy, "amount": 1000},
                  self.app.policy)
        elif ticket.state == "stage4":
            if pending_approval(ticket.id) is not None:
                apply(ticket.id, "approve_payment", Actor(Role.SUPERVISOR, 51), {}, self.app.policy)
            elif ticket.liability in ("customer", "neither"):
                apply(ticket.id, "complaint_fee", Actor.agent(4, 41), {"amount": 0}, self.app.policy)
            else:
                apply(ticket.id, "verify_refund", Actor.agent(4, 41), {}, self.app.policy)
        else:  # hidden: a deadline must be pending, else the ticket would wait for ever
            assert self.fire_next_timer(), f"ticket waits in hidden state '{ticket.state}' with no deadline"
            for dispatch_id in self.fired:
                self.deliver(dispatch_id)
            self.fired.clear()


def test_one_ticket_ends_once_and_is_refunded_at_most_once_whatever_the_interleaving(negotiation_app) -> None:
    OneTicket.app = negotiation_app
    run_state_machine_as_test(OneTicket, settings=settings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
