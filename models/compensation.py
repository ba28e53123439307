"""Compensation: what the buyer is owed, who pays it, and when — as guards and effects.

Every movement posts a balanced transaction to `models.ledger` inside the
change's database transaction, with a key unique to (ticket, version, kind),
and is published as a ``ledger.*`` event through the outbox. What reached the
buyer is tracked on the ticket (`refunded_amount`), so a later judgment (an
appeal) pays only the difference and nothing is ever paid twice.
"""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from models import ledger
from models.approval import Approval, pending_approval
from models.change import Change
from models.evidence import EvidenceItem
from models.rules import (CUSTOMER_SIDE, MERCHANT_SIDE, merchant_delivers, merchant_in_rollout,
                          not_the_appealed_judge, refuses, start_deadline)
from policy.options import money_text

if TYPE_CHECKING:
    from policy import Policy


# ---- what is owed -------------------------------------------------------------

def refund_owed(liability: str, remedy: str, claimed: int, amount: int | None, both_share: int) -> int:
    """What the merchant owes the buyer, in minor units, never above the claim."""
    if liability not in MERCHANT_SIDE or remedy == "no_refund":
        return 0
    base = min(amount if remedy == "partial_refund" and amount is not None else claimed, claimed)
    return base if liability == "merchant" else base * both_share // 100


def due(c: Change) -> int:
    """What the judgment (or settlement) in force still owes the buyer."""
    return max(0, (c.ticket.refund_amount or 0) - (c.ticket.refunded_amount or 0))


def funds(c: Change) -> int:
    """The merchant's funds, locked for the rest of the change: two refunds decided at once cannot
    both count on the same money."""
    return ledger.merchant_funds(c.ticket.merchant_id, c.ticket.currency, lock=c.deciding)


def _judged_due(c: Change) -> int:
    owed = refund_owed(c.params.get("liability", ""), c.params.get("remedy", ""), c.ticket.claimed_amount,
                       c.params.get("amount"), c.policy.liability.both_merchant_share_percent)
    return max(0, owed - (c.ticket.refunded_amount or 0))


def month_start(policy: "Policy", now: datetime) -> datetime:
    """The first instant of `now`'s month on the policy's calendar."""
    local = now.astimezone(ZoneInfo(policy.calendar.zone))
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def budget_left(policy: "Policy", now: datetime, *, lock: bool = False) -> int:
    """What remains of this month's complaint-fee budget (in the budget's currency). With `lock`
    (inside a change) the platform's account is locked first, so fees decided at once queue up."""
    currency = policy.complaint_fee.currency
    if lock:
        ledger.locked_balance("platform", currency)
    spent = ledger.spent_on_fees(month_start(policy, now), currency)
    return policy.complaint_fee.monthly_budget - spent


def fee_budget_left(c: Change) -> int:
    return budget_left(c.policy, c.now, lock=c.deciding)


# ---- guards -------------------------------------------------------------------
# Those marked `refuses` carry the words an agent or party is told when no row of the action applies
# (see `models.rules`); the others only choose between rows of one action.

#: Both complaint-fee rows say no for the same reasons (the amount only chooses between them).
FEE_REFUSAL = ("liability is '{c.ticket.liability}' (merchant-side closes with verify_refund), "
               "or a complaint fee already awaits a supervisor's approval, "
               "or the fee would pass this month's budget")

def negotiation_refund_can_execute(c: Change) -> bool:
    """The merchant's own refund: the order was paid and the merchant's funds cover the claim."""
    return c.ticket.order_status != "unpaid" and funds(c) >= c.ticket.claimed_amount - (c.ticket.refunded_amount or 0)


def rollout_and_refund_executes(c: Change) -> bool:
    return merchant_in_rollout(c) and negotiation_refund_can_execute(c)


def merchant_delivers_and_refund_executes(c: Change) -> bool:
    return merchant_delivers(c) and negotiation_refund_can_execute(c)


def judged_refund_uncovered(c: Change) -> bool:
    return c.params.get("liability") in MERCHANT_SIDE and _judged_due(c) > funds(c) and not_the_appealed_judge(c)


def needs_goods_returned(c: Change) -> bool:
    return (c.params.get("remedy") == "return_and_refund" and c.params.get("liability") in MERCHANT_SIDE
            and not_the_appealed_judge(c))


@refuses("nothing to verify yet: liability is '{c.ticket.liability}' (customer-side closes with complaint_fee), "
         "or the refund is not fully paid, or a payment awaits approval")
def refund_settled(c: Change) -> bool:
    return c.ticket.liability in MERCHANT_SIDE and due(c) == 0 and pending_approval(c.ticket.id) is None


@refuses("there is no payment voucher on file")
def voucher_pending(c: Change) -> bool:
    return c.ticket.liability in MERCHANT_SIDE and c.ticket.voucher_status == "pending"


@refuses("no payment voucher is awaited")
def waiting_for_voucher(c: Change) -> bool:
    return c.ticket.payment_wait == "voucher"


@refuses("no return of the goods is awaited")
def waiting_for_goods(c: Change) -> bool:
    return c.ticket.payment_wait == "goods"


def goods_back_and_covered(c: Change) -> bool:
    return waiting_for_goods(c) and funds(c) >= due(c)


def advance_needs_approval(c: Change) -> bool:
    return due(c) > c.policy.complaint_fee.approval_threshold


@refuses(FEE_REFUSAL)
def fee_payable_now(c: Change) -> bool:
    amount = int(c.params.get("amount", 0))
    # A fee of nothing fits any budget: it neither reads the month's spending nor queues on the
    # platform account's lock that serializes the fees which do spend.
    return (_customer_side_without_pending(c) and amount <= c.policy.complaint_fee.approval_threshold
            and (amount == 0 or amount <= fee_budget_left(c)))


@refuses(FEE_REFUSAL)
def fee_needs_approval(c: Change) -> bool:
    amount = int(c.params.get("amount", 0))
    return (_customer_side_without_pending(c) and amount > c.policy.complaint_fee.approval_threshold
            and amount <= fee_budget_left(c))


@refuses("no complaint fee asked for by another agent awaits approval within this month's budget")
def fee_approved_by_another(c: Change) -> bool:
    pending = pending_approval(c.ticket.id)
    return (pending is not None and pending.kind == "complaint_fee" and pending.requested_by != c.actor.agent_id
            and pending.amount <= fee_budget_left(c))


@refuses("no platform advance asked for by another agent awaits approval")
def advance_approved_by_another(c: Change) -> bool:
    pending = pending_approval(c.ticket.id)
    return pending is not None and pending.kind == "platform_advance" and pending.requested_by != c.actor.agent_id


@refuses("no complaint fee asked for by another agent awaits a decision")
def fee_pending_for_another(c: Change) -> bool:
    pending = pending_approval(c.ticket.id)
    return pending is not None and pending.kind == "complaint_fee" and pending.requested_by != c.actor.agent_id


def _customer_side_without_pending(c: Change) -> bool:
    return c.ticket.liability in CUSTOMER_SIDE and pending_approval(c.ticket.id) is None


# ---- effects ------------------------------------------------------------------

def record_judgment(c: Change) -> None:
    t = c.ticket
    t.liability, t.remedy, t.judged_by = c.params["liability"], c.params["remedy"], c.actor.agent_id
    owed = refund_owed(t.liability, t.remedy, t.claimed_amount, c.params.get("amount"),
                       c.policy.liability.both_merchant_share_percent)
    # Money that already reached the buyer (a merchant's direct refund, an earlier judgment) is not
    # taken back by a later, smaller judgment: the buyer keeps it and nothing more is owed.
    t.refund_amount = max(owed, t.refunded_amount or 0)
    t.voucher_status = t.payment_wait = t.payment_issue = None
    c.data.update(liability=t.liability, remedy=t.remedy, refund_amount=t.refund_amount, currency=t.currency)
    if owed < (t.refunded_amount or 0):
        c.data.update(judged_amount=owed, already_refunded=t.refunded_amount)


def deduct_refund(c: Change) -> None:
    """Take what is due from the merchant's funds (the guards made sure they cover it)."""
    amount = due(c)
    if amount > 0:
        _move(c, "refund_deducted", amount, [(f"merchant:{c.ticket.merchant_id}", -amount),
                                             (f"buyer:{c.ticket.user_id}", amount)])
    c.ticket.payment_issue = None


def refund_in_negotiation(c: Change) -> None:
    c.ticket.refund_amount = c.ticket.claimed_amount
    c.data.update(refund_amount=c.ticket.claimed_amount, currency=c.ticket.currency)
    deduct_refund(c)


def record_refund_failure(c: Change) -> None:
    """A refund that cannot execute is a visible condition of the ticket, not a log line."""
    if c.ticket.order_status == "unpaid":
        reason = "the order was never paid: there is nothing to refund"
    else:
        owed = max(0, c.ticket.claimed_amount - (c.ticket.refunded_amount or 0))
        reason = (f"merchant funds {money_text(funds(c), c.ticket.currency)} do not cover the refund of "
                  f"{money_text(owed, c.ticket.currency)}")
    c.ticket.payment_issue = reason
    c.data.update(refund_failed=reason)


def await_goods(c: Change) -> None:
    c.ticket.payment_wait = "goods"
    start_deadline("payment_voucher")(c)


def await_voucher(c: Change) -> None:
    """The merchant's funds do not cover the refund: the merchant transfers offline and uploads a voucher."""
    c.ticket.payment_wait = "voucher"
    c.ticket.payment_issue = (f"merchant funds {money_text(funds(c), c.ticket.currency)} do not cover "
                              f"{money_text(due(c), c.ticket.currency)}: voucher awaited")
    start_deadline("payment_voucher")(c)
    c.data.update(awaiting="voucher")


def goods_returned(c: Change) -> None:
    c.ticket.payment_wait = None
    c.data.update(tracking_no=c.params.get("tracking_no"))


def goods_never_returned(c: Change) -> None:
    """``return_and_refund`` without the goods back by the deadline: nothing more is owed."""
    c.ticket.refund_amount = c.ticket.refunded_amount or 0
    c.ticket.payment_wait = None
    c.data.update(goods_returned=False, refund_amount=c.ticket.refund_amount)


def record_voucher(c: Change) -> None:
    v = c.params["voucher"]
    EvidenceItem.create(ticket=c.ticket.id, round=c.ticket.evidence_rounds, party="merchant", kind="voucher",
                        uri=v["uri"], sha256=v.get("sha256"), note=money_text(v["amount"], v["currency"]),
                        submitted_at=c.now)
    c.ticket.voucher_status, c.ticket.payment_wait = "pending", None
    c.data.update(voucher_amount=v["amount"], currency=v["currency"])


def reject_voucher(c: Change) -> None:
    c.ticket.voucher_status = "rejected"
    c.data.update(reason_code=c.params.get("reason_code"))
    await_voucher(c)


def verify_offline_transfer(c: Change) -> None:
    """The agent checked the voucher: the buyer was paid outside our books."""
    amount = due(c)
    if amount > 0:
        _move(c, "offline_transfer", amount, [("offline", -amount), (f"buyer:{c.ticket.user_id}", amount)],
              publish=False)
    c.ticket.voucher_status, c.ticket.payment_issue = "verified", None


def platform_advance(c: Change) -> None:
    """The merchant missed the voucher deadline: the platform pays the buyer and books the merchant's debt."""
    amount = due(c)
    if amount <= 0:
        return
    _move(c, "platform_advance", amount, [("platform", -amount), (f"buyer:{c.ticket.user_id}", amount)])
    ledger.post(f"debt:{c.ticket.id}:{c.next_version}", "debt_recorded", c.ticket.currency,
                [(f"debt:{c.ticket.merchant_id}", -amount), ("platform", amount)], ticket_id=c.ticket.id, at=c.now)
    c.ticket.payment_wait, c.ticket.payment_issue = None, None
    c.data.update(merchant_debt=amount)


def request_fee_approval(c: Change) -> None:
    _ask(c, "complaint_fee", int(c.params["amount"]), c.actor.agent_id)


def request_advance_approval(c: Change) -> None:
    c.ticket.payment_wait = None
    _ask(c, "platform_advance", due(c), None)


def pay_complaint_fee(c: Change) -> None:
    _pay_fee(c, int(c.params["amount"]))


def execute_approval(c: Change) -> None:
    pending = _decide(c, "approved")
    if pending.kind == "complaint_fee":
        _pay_fee(c, pending.amount)
    else:
        platform_advance(c)


def decline_approval(c: Change) -> None:
    pending = _decide(c, "declined")
    c.data.update(declined=pending.kind, amount=pending.amount)
    if pending.kind == "platform_advance":
        await_voucher(c)


def _pay_fee(c: Change, amount: int) -> None:
    c.ticket.complaint_fee = amount
    c.data.update(complaint_fee=amount, currency=c.ticket.currency)
    if amount > 0:
        _move(c, "complaint_fee_paid", amount, [("platform", -amount), (f"buyer:{c.ticket.user_id}", amount)])


def _ask(c: Change, kind: str, amount: int, requested_by: int | None) -> None:
    Approval.create(ticket_id=c.ticket.id, kind=kind, amount=amount, currency=c.ticket.currency,
                    requested_by=requested_by, requested_at=c.now)
    c.ticket.payment_issue = f"{kind} of {money_text(amount, c.ticket.currency)} awaits a supervisor's approval"
    c.data.update(pending_approval=kind, amount=amount)


def _decide(c: Change, decision: str) -> Approval:
    pending = pending_approval(c.ticket.id)
    assert pending is not None  # the row's guard checked it
    (Approval.update(decision=decision, decided_by=c.actor.agent_id, decided_at=c.now)
     .where(Approval.id == pending.id).execute())
    c.ticket.payment_issue = None
    c.data.update(approval=decision, approval_kind=pending.kind)
    return pending


def _move(c: Change, kind: str, amount: int, entries: list[tuple[str, int]], *, publish: bool = True) -> None:
    key = f"{kind}:{c.ticket.id}:{c.next_version}"
    txn = ledger.post(key, kind, c.ticket.currency, entries, ticket_id=c.ticket.id, at=c.now,
                      announced_to=c.ticket.merchant_id if publish else None)
    if txn is None:
        return  # already posted: nothing moves twice
    if any(name.startswith("buyer:") for name, _ in entries) and kind != "complaint_fee_paid":
        c.ticket.refunded_amount = (c.ticket.refunded_amount or 0) + amount
    if publish:
        c.extra_events.append((kind, {"idempotency_key": key, "amount": amount, "sequence": txn.sequence}))
    c.data.update(paid=amount, currency=c.ticket.currency)
