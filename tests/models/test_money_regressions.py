"""Regressions found by the demo: a declined advance, and a judgment below what was already paid."""
from __future__ import annotations

from disputes.cli.books import ticket_problems
from models.base import utcnow
from models.change import Actor, Role
from models.ledger import check_invariants
from models.ticket import Ticket
from models.workflow import apply, open_ticket
from tests.conftest import fund_merchant

STATUS = {"dispute_status": "not_reconciled", "category": "apparel"}
SUPERVISOR_A, SUPERVISOR_B = Actor(Role.SUPERVISOR, 50), Actor(Role.SUPERVISOR, 51)


def ticket(policy, ref: str, claimed: int = 90_000, negotiation: str = "failed") -> int:
    fields = dict(source="shop", external_ref=ref, channel="app", user_id="u1", merchant_id="m1", order_id=ref,
                  order_amount=100_000, currency="CNY", category="apparel", delivery="platform",
                  order_status="delivered", dispute_type="quality", claimed_amount=claimed, occurred_at=utcnow())
    return open_ticket(fields, {"negotiation": negotiation}, policy).ticket.id  # type: ignore[union-attr]


def to_stage3(policy, ticket_id: int) -> None:
    apply(ticket_id, "take_over", Actor.agent(1, 1), {}, policy)
    apply(ticket_id, "to_judgment", Actor.agent(1, 1), STATUS, policy)


def test_a_declined_advance_sends_the_ticket_back_to_wait_for_the_merchants_voucher(app, policy) -> None:
    # Given a merchant with no funds, judged liable, who missed the voucher deadline (a large advance)
    ticket_id = ticket(policy, "ADV")
    to_stage3(policy, ticket_id)
    apply(ticket_id, "judge", Actor.agent(3, 3), {"liability": "merchant", "remedy": "full_refund"}, policy)
    apply(ticket_id, "payment_voucher_deadline", Actor(Role.SCHEDULER), {}, policy)
    assert Ticket.get_by_id(ticket_id).payment_issue.startswith("platform_advance")
    # When a supervisor declines the advance
    apply(ticket_id, "decline_payment", SUPERVISOR_A, {}, policy)
    # Then the ticket waits again for the merchant's voucher, with a fresh deadline, and nothing moved
    t = Ticket.get_by_id(ticket_id)
    assert (t.state, t.payment_wait, t.refunded_amount) == ("awaiting_payment", "voucher", 0)
    apply(ticket_id, "upload_voucher", Actor(Role.MERCHANT),
          {"voucher": {"uri": "https://v.example/1", "sha256": "a" * 64, "amount": 90_000, "currency": "CNY"}},
          policy)
    assert Ticket.get_by_id(ticket_id).state == "stage4"


def test_a_judgment_below_what_the_buyer_already_received_takes_nothing_back(app, policy) -> None:
    # Given a merchant's direct refund the buyer declined anyway
    fund_merchant("m1")
    ticket_id = ticket(policy, "LOW", negotiation="pending")
    apply(ticket_id, "direct_refund", Actor(Role.MERCHANT), {"option": "direct_refund"}, policy)
    apply(ticket_id, "decline_settlement", Actor(Role.USER), {}, policy)
    to_stage3(policy, ticket_id)
    # When the floor finds the customer liable and pays no fee
    apply(ticket_id, "judge", Actor.agent(3, 3), {"liability": "customer", "remedy": "no_refund"}, policy)
    apply(ticket_id, "complaint_fee", Actor.agent(4, 4), {"amount": 0}, policy)
    # Then the ticket closes, the buyer keeps the refund, and the books hold
    t = Ticket.get_by_id(ticket_id)
    assert (t.state, t.refunded_amount, t.refund_amount) == ("closed", 90_000, 90_000)
    assert check_invariants() == [] and ticket_problems() == []
