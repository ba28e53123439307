"""Property: whatever order balances, judgments, vouchers, rejections, deadlines, returns, fees,
approvals, appeals and redeliveries come in, the books stay sound (issue 6, "Done when" 1).

A hypothesis state machine drives two merchants and up to four tickets through the real paths:
upstream messages through `Intake.admit` (with their message ids, some delivered again), agents'
and supervisors' decisions as desk dispatches handled by the stage workers (some handled again),
deadlines as fired timers whose wake-ups the stage-4 worker applies. Most steps are "the next
plausible move on some ticket" (judge it with any liability and remedy, verify / reject a voucher /
grant a fee / approve or decline a payment, upload a voucher, return goods, let the deadline pass,
appeal a closed ticket — which may bring a smaller judgment), the rest are balance reports, moves
out of turn (refused, or harmless) and redeliveries. After every step:

* ``ledger.check_invariants()`` is empty, and independently: every transaction sums to zero, every
  cached balance equals its entries, no ``merchant:`` account is below zero (what a merchant cannot
  pay is a ``debt:`` account, never positive);
* for every ticket ``paid_to_buyer == refunded_amount`` (never above the claim, never above what the
  judgment in force owes), and once closed ``== refund_amount``: the buyer gets the judged amount once
  (or keeps what was already paid when a later judgment owes less);
* every money movement published on ``op.events`` has a unique idempotency key, and what the
  outbox announces per kind equals what the ledger holds;
* complaint fees paid this month never exceed ``complaint_fee.monthly_budget`` (small here, so it bites).
"""
from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import peewee
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from policy import Policy
from models import ledger
from models.approval import pending_approval
from models.base import database, utcnow
from models.change import Actor
from models.compensation import month_start
from models.intake import ProcessedMessage
from models.ledger import LedgerEntry, LedgerTransaction
from models.dispatches import AgentDecision
from messages.events import check_event_body
from models.outbox import Dispatch, OutboxEvent, new_dispatch
from models.ticket import Ticket
from models.timer import PENDING, Timer
from models.workflow import apply
from scheduler.timers import fire_due_timers
from tests.conftest import running_app, wipe_database
from workers.base import StageWorker
from workers.intake import Intake

MERCHANTS = ("m1", "m2")
CLAIMS = (300, 800, 1500, 5000)
BALANCES = (0, 300, 800, 1500, 5000, 20_000)
THRESHOLD, BUDGET = 1000, 2500
JUDGES = (31, 32)
VERIFIERS = (41, 42)
#: 41 is also a supervisor: when 41 asked for a fee, 41 may not approve it (four eyes).
SUPERVISORS = (41, 51)
MAX_TICKETS = 4
LIABILITIES = ("merchant", "both", "customer", "neither")
REMEDIES = ("full_refund", "partial_refund", "return_and_refund", "no_refund")

#: The kinds published on op.events (balance syncs, debt bookings and offline transfers are internal).
ANNOUNCED = ("refund_deducted", "platform_advance", "complaint_fee_paid", "debt_settled")

EXAMPLES = 100
STEPS = 30


@pytest.fixture
def books_app(tmp_path: Path, make_policy):
    policy = make_policy(complaint_fee={"approval_threshold": THRESHOLD, "monthly_budget": BUDGET},
                         deadlines={"appeal": "30d"})
    # RAM-backed when available: thousands of small transactions per run
    with running_app(tmp_path, "books.db", policy, in_memory=True) as app:
        yield app


def wipe() -> None:
    """An empty database for the next example."""
    wipe_database()


class Books(RuleBasedStateMachine):
    app = None  # set by the test before the machine runs

    def __init__(self) -> None:
        super().__init__()
        wipe()
        self.app.broker.flush_all()
        self.policy: Policy = self.app.policy
        self.intake = Intake(self.app)
        self.workers: dict[str, StageWorker] = {queue: StageWorker(self.app, queue) for queue in
                                                ("negotiation", "stage1", "stage2", "stage3", "stage4")}
        self.ids = itertools.count(1)
        self.tickets: list[int] = []
        self.messages: list[tuple[str, bytes, str]] = []
        self.dispatches: list[int] = []

    # -- plumbing ------------------------------------------------------------------------------
    def admit(self, routing_key: str, body: dict, message_id: str | None = None) -> str:
        message_id = message_id or f"msg-{next(self.ids)}"
        raw = json.dumps(body).encode("utf-8")
        self.messages.append((routing_key, raw, message_id))
        return self.intake.admit(routing_key, raw, message_id).status

    def handle(self, dispatch_id: int) -> None:
        self.dispatches.append(dispatch_id)
        row = Dispatch.get_by_id(dispatch_id)
        self.workers[row.queue].handle(dispatch_id)

    def decide(self, ticket_id: int, queue: str, action: str, agent_id: int, params: dict | None = None,
               role: str | None = None) -> None:
        """An agent's (or supervisor's) decision as the desk writes it, handled by the stage worker."""
        ticket = Ticket.get_by_id(ticket_id)
        decision = AgentDecision(ticket_id, agent_id, action, ticket.version, params or {}, role=role)
        with database.atomic():
            dispatch_id = new_dispatch(queue, decision).id
        self.handle(dispatch_id)

    def in_state(self, *states: str) -> list[Ticket]:
        return list(Ticket.select().where(Ticket.state.in_(states)).order_by(Ticket.id))

    # -- the steps, as plain methods (the rules below choose among them) -------------------------
    def open_complaint(self, merchant: str, claimed: int) -> None:
        """A complaint whose negotiation failed, taken over and sent to judgment."""
        n = next(self.ids)
        body = {"schema_version": 1, "source": "shop", "external_ref": f"C-{n}", "channel": "app",
                "order": {"order_id": f"O-{n}", "amount": 5000, "currency": "CNY", "category": "apparel",
                          "delivery": "platform", "status": "delivered"},
                "user_id": f"u{n}", "merchant_id": merchant, "dispute_type": "quality", "claimed_amount": claimed,
                "description": "broken", "negotiation": "failed", "occurred_at": "2026-11-20T10:00:00+08:00"}
        assert self.admit("complaint.submitted", body) == "admitted"
        ticket_id = Ticket.get(Ticket.external_ref == f"C-{n}").id
        self.tickets.append(ticket_id)
        apply(ticket_id, "take_over", Actor.agent(1, 11), {}, self.policy)
        self.decide(ticket_id, "stage1", "to_judgment", 11, {"dispute_status": "not_reconciled",
                                                              "category": "apparel"})
        assert Ticket.get_by_id(ticket_id).state == "stage3"

    def report_balance(self, merchant: str, amount: int) -> None:
        self.admit("merchant.balance_changed", {"schema_version": 1, "merchant_id": merchant, "balance": amount,
                                                "currency": "CNY"})

    def upload_voucher(self, ticket: Ticket, amount: int, twice: bool) -> None:
        body = {"schema_version": 1, "ticket_id": ticket.id, "merchant_id": ticket.merchant_id,
                "voucher": {"uri": "https://files.example/v.png", "sha256": "cd" * 32, "amount": amount,
                            "currency": "CNY"}}
        message_id = f"v-{next(self.ids)}"
        self.admit("payment.voucher_uploaded", body, message_id)
        if twice:
            self.admit("payment.voucher_uploaded", body, message_id)

    def return_goods(self, ticket: Ticket, twice: bool) -> None:
        message_id = f"g-{next(self.ids)}"
        body = {"schema_version": 1, "ticket_id": ticket.id, "tracking_no": "SF1"}
        self.admit("goods.returned", body, message_id)
        if twice:
            self.admit("goods.returned", body, message_id)

    def appeal(self, ticket: Ticket, party: str) -> None:
        assert self.admit("appeal.filed", {"schema_version": 1, "ticket_id": ticket.id, "party": party,
                                           "reason_code": "disagree_liability"}) == "admitted"

    def judge(self, ticket: Ticket, liability: str, remedy: str, amount: int, judge: int) -> None:
        params = {"liability": liability, "remedy": remedy}
        if remedy == "partial_refund":
            params["amount"] = amount
        self.decide(ticket.id, "stage3", "judge", judge, params)

    def supervise(self, ticket: Ticket, boss: int, approve: bool) -> None:
        pending = pending_approval(ticket.id)
        self.decide(ticket.id, "stage4", "approve_payment" if approve else "decline_payment", boss, role="supervisor")
        if boss == pending.requested_by:  # four eyes: the requester's own decision is refused
            still = pending_approval(ticket.id)
            assert still is not None and still.id == pending.id

    def deadline_passes(self, ticket: Ticket) -> None:
        timer = (Timer.select().where((Timer.ticket_id == ticket.id) & (Timer.status == PENDING))
                 .order_by(Timer.due_at).first())
        if timer is not None:
            for dispatch_id in fire_due_timers(timer.due_at):  # everything due by then fires: time passed
                self.handle(dispatch_id)

    # -- the rules ---------------------------------------------------------------------------------
    @precondition(lambda self: len(self.tickets) < MAX_TICKETS)
    @rule(merchant=st.sampled_from(MERCHANTS), claimed=st.sampled_from(CLAIMS))
    def complaint(self, merchant: str, claimed: int) -> None:
        self.open_complaint(merchant, claimed)

    @rule(merchant=st.sampled_from(MERCHANTS), amount=st.sampled_from(BALANCES))
    def balance(self, merchant: str, amount: int) -> None:
        self.report_balance(merchant, amount)

    @precondition(lambda self: self.tickets)
    @rule(data=st.data())
    def next_move(self, data: st.DataObject) -> None:
        self.progress(data)

    @precondition(lambda self: self.tickets)
    @rule(data=st.data())
    def another_move(self, data: st.DataObject) -> None:
        self.progress(data)

    @precondition(lambda self: self.tickets)
    @rule(data=st.data())
    def yet_another_move(self, data: st.DataObject) -> None:
        self.progress(data)

    def progress(self, data: st.DataObject) -> None:
        """The move someone would plausibly make on one ticket, given its state."""
        ticket = Ticket.get_by_id(data.draw(st.sampled_from(self.tickets), label="ticket"))
        draw = lambda strategy, label: data.draw(strategy, label=label)  # noqa: E731
        if ticket.state == "stage3":
            self.judge(ticket, draw(st.sampled_from(LIABILITIES), "liability"),
                       draw(st.sampled_from(REMEDIES), "remedy"),
                       draw(st.sampled_from((100, 700, 2000, 9000)), "amount"),
                       draw(st.sampled_from(JUDGES), "judge"))
        elif ticket.state == "stage4":
            verifier = draw(st.sampled_from(VERIFIERS + (51,)), "verifier")  # 51: a supervisor working stage 4
            pending = pending_approval(ticket.id)
            if pending is not None:
                self.supervise(ticket, draw(st.sampled_from(SUPERVISORS), "supervisor"), draw(st.booleans(), "approve"))
            elif ticket.voucher_status == "pending" and draw(st.booleans(), "reject"):
                self.decide(ticket.id, "stage4", "reject_voucher", verifier, {"reason_code": "amount_mismatch"})
            elif ticket.liability in ("customer", "neither"):
                fee = draw(st.sampled_from(self.policy.complaint_fee.amounts), "fee")
                self.decide(ticket.id, "stage4", "complaint_fee", verifier, {"amount": fee})
            else:
                self.decide(ticket.id, "stage4", "verify_refund", verifier)
        elif ticket.state == "awaiting_payment":
            move = draw(st.sampled_from(("deadline", "voucher", "goods", "balance")), "move")
            if move == "deadline":
                self.deadline_passes(ticket)
            elif move == "voucher":
                self.upload_voucher(ticket, draw(st.sampled_from((100, ticket.refund_amount or 0)), "voucher"),
                                    draw(st.booleans(), "twice"))
            elif move == "goods":
                self.return_goods(ticket, draw(st.booleans(), "twice"))
            else:
                self.report_balance(ticket.merchant_id, draw(st.sampled_from(BALANCES), "balance"))
        elif ticket.state == "closed" and draw(st.booleans(), "appeal"):
            self.appeal(ticket, draw(st.sampled_from(("user", "merchant")), "party"))

    @precondition(lambda self: self.tickets)
    @rule(data=st.data(), kind=st.sampled_from(("voucher", "goods", "verify", "fee", "approve", "judge", "appeal")))
    def out_of_turn(self, data: st.DataObject, kind: str) -> None:
        """A message or decision that may not fit the ticket's state: refused, or harmless."""
        ticket = Ticket.get_by_id(data.draw(st.sampled_from(self.tickets), label="ticket"))
        if kind == "voucher":
            self.upload_voucher(ticket, 5000, False)
        elif kind == "goods":
            self.return_goods(ticket, False)
        elif kind == "verify":
            self.decide(ticket.id, "stage4", "verify_refund", 41)
        elif kind == "fee":
            self.decide(ticket.id, "stage4", "complaint_fee", 41, {"amount": 500})
        elif kind == "approve":
            self.decide(ticket.id, "stage4", "approve_payment", 51, role="supervisor")
        elif kind == "judge":
            self.decide(ticket.id, "stage3", "judge", 32, {"liability": "merchant", "remedy": "full_refund"})
        elif ticket.state == "closed":
            self.appeal(ticket, "user")

    @precondition(lambda self: self.messages)
    @rule(data=st.data())
    def message_redelivered(self, data: st.DataObject) -> None:
        routing_key, raw, message_id = data.draw(st.sampled_from(self.messages), label="message")
        seen = ProcessedMessage.select().where(ProcessedMessage.message_id == message_id).exists()
        status = self.intake.admit(routing_key, raw, message_id).status
        if seen:  # applied once already: a redelivery changes nothing (a refused one may apply now)
            assert status == "duplicate"

    @precondition(lambda self: self.dispatches)
    @rule(data=st.data())
    def dispatch_redelivered(self, data: st.DataObject) -> None:
        dispatch_id = data.draw(st.sampled_from(self.dispatches), label="dispatch")
        before = Ticket.select(Ticket.id, Ticket.version).tuples()[:]
        self.handle(dispatch_id)
        assert Ticket.select(Ticket.id, Ticket.version).tuples()[:] == before

    # -- the properties ----------------------------------------------------------------------------
    @invariant()
    def books_are_sound(self) -> None:
        assert ledger.check_invariants() == []
        # the same, computed independently of check_invariants
        total = peewee.fn.SUM(LedgerEntry.amount)
        assert list(LedgerEntry.select(LedgerEntry.txn).group_by(LedgerEntry.txn).having(total != 0)) == []
        sums = dict(LedgerEntry.select(LedgerEntry.account, total).group_by(LedgerEntry.account).tuples())
        for account in ledger.Account.select():
            assert account.balance == int(sums.get(account.id) or 0), account.name
            if account.name.startswith("merchant:"):
                assert account.balance >= 0, account.name
            if account.name.startswith("debt:"):
                assert account.balance <= 0, account.name

    @invariant()
    def each_buyer_gets_the_judged_amount_once(self) -> None:
        paid = dict(LedgerEntry.select(LedgerTransaction.ticket_id, peewee.fn.SUM(LedgerEntry.amount))
                    .join(LedgerTransaction).switch(LedgerEntry).join(ledger.Account)
                    .where(ledger.Account.name.startswith("buyer:") & (LedgerTransaction.kind != "complaint_fee_paid"))
                    .group_by(LedgerTransaction.ticket_id).tuples())
        for ticket in Ticket.select():
            got = int(paid.get(ticket.id) or 0)
            assert got == ticket.refunded_amount, (ticket.id, got, ticket.refunded_amount)
            assert got <= ticket.claimed_amount
            assert got <= (ticket.refund_amount or 0), (ticket.id, got, ticket.refund_amount)
            if ticket.state == "closed":
                assert got == ticket.refund_amount, (ticket.id, ticket.liability, ticket.remedy, got,
                                                     ticket.refund_amount)

    @invariant()
    def every_movement_is_announced_once_and_the_fee_budget_holds(self) -> None:
        events = [e.body for e in OutboxEvent.select().where(OutboxEvent.routing_key.startswith("ledger."))]
        keys = Counter(e["idempotency_key"] for e in events)
        assert all(n == 1 for n in keys.values()), keys
        booked = {key: (kind, amount) for key, kind, amount in LedgerTransaction.select(
            LedgerTransaction.idempotency_key, LedgerTransaction.kind, LedgerTransaction.amount).tuples()}
        assert {e["idempotency_key"]: (e["kind"], e["amount"]) for e in events} == {
            key: value for key, value in booked.items() if value[0] in ANNOUNCED}
        assert ledger.spent_on_fees(month_start(self.policy, utcnow()), "CNY") <= BUDGET

    @invariant()
    def every_event_keeps_the_contract_and_money_events_are_numbered_per_merchant(self) -> None:
        sequences: dict[str, list[int]] = {}
        for event in OutboxEvent.select().order_by(OutboxEvent.id):
            assert check_event_body(event.routing_key, event.body) == {}, (event.routing_key, event.body)
            if event.routing_key.startswith("ledger."):
                sequences.setdefault(event.body["merchant_id"], []).append(event.body["sequence"])
        for merchant, numbers in sequences.items():
            assert sorted(numbers) == list(range(1, len(numbers) + 1)), (merchant, numbers)

    def teardown(self) -> None:
        """At the end of each example: the ledger's own per-ticket answer agrees."""
        for ticket in Ticket.select():
            assert ledger.paid_to_buyer(ticket.id) == ticket.refunded_amount


def test_the_books_stay_sound_whatever_the_order_of_money_events(books_app) -> None:
    Books.app = books_app
    run_state_machine_as_test(Books, settings=settings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
