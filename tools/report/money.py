"""Money moved, events published and intake problems — what left the system or never got in.

Money is read from the ``ledger.*`` events of the outbox, the same messages
the payments system applies, so the report agrees with what downstream saw.
"""
from __future__ import annotations

from collections import Counter, defaultdict

import peewee

from tools.report.history import History
from tools.report.stats import counted
from models.intake import RejectedMessage
from models.outbox import OutboxEvent
from models.ticket import LinkedComplaint


def money_moved(h: History) -> dict[str, dict[str, int]]:
    """Sum of ``amount`` per ledger kind and currency, each idempotency key counted once (as the
    payments system applies it), in integer minor units."""
    seen: set[str] = set()
    totals: dict[str, Counter[str]] = defaultdict(Counter)
    rows = OutboxEvent.select().where(OutboxEvent.routing_key.startswith("ledger.") & OutboxEvent.ticket_id.in_(h.ids))
    for row in rows.order_by(OutboxEvent.id):
        body = row.body
        key = str(body.get("idempotency_key") or f"outbox:{row.id}")
        if key in seen:
            continue
        seen.add(key)
        totals[str(body.get("kind") or row.routing_key.split(".", 1)[1])][body["currency"]] += int(body["amount"])
    return {kind: dict(sorted(c.items())) for kind, c in sorted(totals.items())}


def events_published(h: History) -> dict[str, object]:
    query = (OutboxEvent.select(OutboxEvent.routing_key, peewee.fn.COUNT(OutboxEvent.id).alias("n"))
             .where(OutboxEvent.ticket_id.in_(h.ids) & OutboxEvent.published_at.is_null(False))
             .group_by(OutboxEvent.routing_key).order_by(OutboxEvent.routing_key).tuples())
    by_key = {key: n for key, n in query}
    waiting = OutboxEvent.select().where(OutboxEvent.ticket_id.in_(h.ids) & OutboxEvent.published_at.is_null()).count()
    return {"published": sum(by_key.values()), "unpublished": waiting, "by_routing_key": by_key}


def intake_counts(h: History) -> dict[str, object]:
    """Complaints linked to an open ticket, and messages rejected (and not replayed) in the window."""
    where = RejectedMessage.status == "rejected"
    if h.start is not None:
        where &= RejectedMessage.received_at >= h.start
    if h.end is not None:
        where &= RejectedMessage.received_at < h.end
    rejected = (RejectedMessage.select(RejectedMessage.routing_key, peewee.fn.COUNT(RejectedMessage.id))
                .where(where).group_by(RejectedMessage.routing_key).tuples())
    linked = LinkedComplaint.select().where(LinkedComplaint.ticket.in_(h.ids)).count()
    return {"linked_complaints": linked, "rejected": counted(dict(rejected))}
