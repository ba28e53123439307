"""What the system recorded during a demo, read back from its database for the demo's summary.

These are the demo's own figures — per merchant option, how many tickets the
negotiation settled without an agent; the money moved, by ledger kind; how
many tickets took each payment and after-the-floor path — so the summary
does not depend on the shape of `tools.report`. Money is integer minor units.
"""
from __future__ import annotations

from collections import Counter

import peewee

from tools.report.tables import RESOLVED_BY
from tools.simulation.world import ANSWERS, SILENT
from models.approval import Approval
from models.audit import TicketEvent
from models.ledger import LedgerTransaction
from models.party import SurveyAnswer
from models.states import State
from models.ticket import Ticket

#: Audit actions worth counting, with what they mean.
PATHS = {"merchant_response_deadline": "merchant response deadlines missed",
         "accept_settlement": "settlements accepted", "decline_settlement": "buyer declined the settlement",
         "approve_refund": "refunds approved in the countdown", "interception_succeeded": "interceptions succeeded",
         "interception_failed": "interception failed",
         "upload_voucher": "vouchers uploaded", "reject_voucher": "vouchers rejected",
         "return_goods": "goods returned",
         "payment_voucher_deadline": "payment deadlines missed", "appeal": "appeals admitted",
         "withdraw": "withdrawals", "cannot_judge": "cannot judge"}


def option_outcomes() -> dict[str, dict[str, object]]:
    """Per merchant answer (``silent`` when none was admitted in time), the tickets that began in
    negotiation: resolved without an agent (and how), sent to the floor, withdrawn, still open."""
    began = TicketEvent.select(TicketEvent.ticket).where((TicketEvent.version == 1)
                                                         & (TicketEvent.to_state == State.NEGOTIATING.value))
    rows: dict[str, dict] = {a: _row() for a in ANSWERS}
    resolving = {e.ticket_id: e.action for e in TicketEvent.select(TicketEvent.ticket, TicketEvent.action)
                 .where(TicketEvent.to_state == State.RESOLVED.value)}
    for t in Ticket.select(Ticket.id, Ticket.state, Ticket.negotiation_option, Ticket.floor_at).where(
            Ticket.id.in_(began)):
        row = rows.setdefault(t.negotiation_option or SILENT, _row())
        row["tickets"] += 1
        if t.state == State.RESOLVED:
            row["resolved_without_agent"] += 1
            action = resolving.get(t.id, "?")
            row["resolved_by"][RESOLVED_BY.get(action, action)] += 1  # the report's words
        elif t.floor_at is not None:
            row["to_floor"] += 1
        elif t.state == State.WITHDRAWN:
            row["withdrawn"] += 1
        else:
            row["open"] += 1
    return {a: {**r, "resolved_by": dict(r["resolved_by"])} for a, r in rows.items()}


def _row() -> dict:
    return {"tickets": 0, "resolved_without_agent": 0, "to_floor": 0, "withdrawn": 0, "open": 0,
            "resolved_by": Counter()}


def money_by_kind() -> dict[str, dict[str, int]]:
    """Every ledger movement by kind: how many and how much (all currencies of the demo are one)."""
    n, total = peewee.fn.COUNT(LedgerTransaction.id), peewee.fn.SUM(LedgerTransaction.amount)
    return {kind: {"count": int(c), "amount": int(s or 0)} for kind, c, s in
            LedgerTransaction.select(LedgerTransaction.kind, n, total).group_by(LedgerTransaction.kind)
            .order_by(LedgerTransaction.kind).tuples()}


def paths_taken() -> dict[str, int]:
    """How often the paths beyond the straight line ran, from the audit trail and the approvals."""
    actions = dict(TicketEvent.select(TicketEvent.action, peewee.fn.COUNT(TicketEvent.id))
                   .where(TicketEvent.action.in_(list(PATHS))).group_by(TicketEvent.action).tuples())
    out = {label: int(actions.get(action, 0)) for action, label in PATHS.items()}
    decided: Counter[str] = Counter()
    for kind, decision in Approval.select(Approval.kind, Approval.decision).tuples():
        decided[f"{kind.replace('_', ' ')} approvals {decision or 'pending'}"] += 1
    out.update(sorted(decided.items()))
    out["survey answers"] = SurveyAnswer.select().count()
    out["debts settled"] = LedgerTransaction.select().where(LedgerTransaction.kind == "debt_settled").count()
    return out
