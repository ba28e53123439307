"""The outbox relay: ``op.events`` in commit order, and dispatches a crash left unsent.

Only the holder of the ``relay`` lease publishes events, so events of one
ticket leave in the order their changes committed. An event is marked
published only after the broker confirmed it (RabbitMQ publisher confirms),
so a crash in between publishes it again: consumers de-duplicate on
``event_id`` (at-least-once, never lost).
"""
from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta

import dramatiq
from kombu import Exchange, Producer

from disputes.settings import EVENTS_EXCHANGE
from models.base import database
from models.outbox import Dispatch, OutboxEvent
from models.sending import send_rows

log = logging.getLogger("disputes.relay")

events_exchange = Exchange(EVENTS_EXCHANGE, type="topic", durable=True)
RETRY_POLICY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2.0}


def relay_events(producer: Producer, now: datetime, batch: int = 500) -> int:
    """Publish up to `batch` unpublished events in id order; returns how many."""
    rows = list(OutboxEvent.select().where(OutboxEvent.published_at.is_null()).order_by(OutboxEvent.id).limit(batch))
    published: list[int] = []
    try:
        for row in rows:
            producer.publish(json.dumps(row.body, ensure_ascii=False).encode("utf-8"), exchange=events_exchange,
                             routing_key=row.routing_key, declare=[events_exchange], delivery_mode=2,
                             content_type="application/json", content_encoding="utf-8",
                             message_id=row.body.get("event_id"), retry=True, retry_policy=RETRY_POLICY)
            published.append(row.id)
    finally:
        if published:
            with database.atomic():
                OutboxEvent.update(published_at=now).where(OutboxEvent.id.in_(published)).execute()
    return len(published)


def send_unsent_dispatches(broker: dramatiq.Broker, now: datetime, grace: float, batch: int = 500) -> int:
    """Dispatches committed but never sent (the sender died after commit)."""
    rows = list(Dispatch.select().where(Dispatch.sent_at.is_null() & Dispatch.done_at.is_null()
                                        & (Dispatch.created_at < now - timedelta(seconds=grace)))
                .order_by(Dispatch.id).limit(batch))
    return send_rows(broker, rows)
