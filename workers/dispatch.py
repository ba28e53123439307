"""Sending dispatch rows as dramatiq messages, after the transaction that wrote them commits.

The message carries only the dispatch id: the handler reads the row (the
database is the truth) and marks it done in the transaction of its effect.
"""
from __future__ import annotations

import logging
from typing import Iterable

import dramatiq

from models.base import utcnow
from models.outbox import Dispatch

log = logging.getLogger("disputes.dispatch")


def actor_name(queue: str) -> str:
    """Each queue has one actor, which routes on the dispatch's kind."""
    return f"{queue}_handle"


def send_dispatches(broker: dramatiq.Broker, ids: Iterable[int]) -> int:
    """Enqueue the dispatches still not done; returns how many were sent. A failure to send
    leaves the row for the relay, so this never raises for a broker problem."""
    ids = list(ids)
    if not ids:
        return 0
    # Only what a message needs (the payload stays unread: the handler reads the row).
    rows = list(Dispatch.select(Dispatch.id, Dispatch.queue)
                .where(Dispatch.id.in_(ids) & Dispatch.done_at.is_null()).order_by(Dispatch.id))
    return send_rows(broker, rows)


def send_rows(broker: dramatiq.Broker, rows: list[Dispatch]) -> int:
    sent: list[int] = []
    for row in rows:
        try:
            broker.enqueue(dramatiq.Message(queue_name=row.queue, actor_name=actor_name(row.queue),
                                            args=(row.id,), kwargs={}, options={}))
            sent.append(row.id)
        except Exception:  # the broker is down: the relay sends it later
            log.warning("dispatch %s to %s not sent; the relay will retry", row.id, row.queue, exc_info=True)
            break
    if sent:
        # One statement: it commits on its own (or with the caller's transaction, if one is open).
        (Dispatch.update(sent_at=utcnow(), attempts=Dispatch.attempts + 1)
         .where(Dispatch.id.in_(sent)).execute())
    return len(sent)
