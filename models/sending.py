"""Sending dispatch rows as dramatiq messages, after the transaction that wrote them commits.

The message carries only the dispatch id: the handler reads the row (the
database is the truth) and marks it done in the transaction of its effect.
"""
from __future__ import annotations

import logging
from typing import Iterable, Sequence
from uuid import uuid4

import dramatiq

from models.base import utcnow
from models.outbox import Dispatch, DispatchRef

log = logging.getLogger("disputes.dispatch")


def actor_name(queue: str) -> str:
    """Each queue has one actor, which routes on the dispatch's kind."""
    return f"{queue}_handle"


def send_dispatches(broker: dramatiq.Broker, ids: Iterable[int]) -> int:
    """Enqueue the dispatches still not done; returns how many were sent. A failure to send
    leaves the row for the relay, so this never raises for a broker problem. The `DispatchRef`s
    a change returns carry their queue and are sent as they are (they were written a moment ago);
    bare ids are looked up."""
    ids = list(ids)
    if not ids:
        return 0
    known = [i for i in ids if isinstance(i, DispatchRef)]
    bare = [i for i in ids if not isinstance(i, DispatchRef)]
    # Only what a message needs (the payload stays unread: the handler reads the row).
    rows: list[Dispatch | DispatchRef] = list(Dispatch.select(Dispatch.id, Dispatch.queue).where(
        Dispatch.id.in_(bare) & Dispatch.done_at.is_null())) if bare else []
    return send_rows(broker, sorted(known + rows, key=lambda row: row.id))


def send_rows(broker: dramatiq.Broker, rows: Sequence[Dispatch | DispatchRef]) -> int:
    messages = [dramatiq.Message(queue_name=row.queue, actor_name=actor_name(row.queue), args=(row.id,), kwargs={},
                                 options={}) for row in rows]
    sent = [row.id for row in rows[:enqueue_many(broker, messages)]]
    if len(sent) < len(rows):
        log.warning("dispatches %s not sent; the relay will retry", [row.id for row in rows[len(sent):]][:20])
    if sent:
        # One statement: it commits on its own (or with the caller's transaction, if one is open).
        (Dispatch.update(sent_at=utcnow(), attempts=Dispatch.attempts + 1)
         .where(Dispatch.id.in_(sent)).execute())
    return len(sent)


def enqueue_many(broker: dramatiq.Broker, messages: list[dramatiq.Message]) -> int:
    """Enqueue `messages` in order; returns how many were enqueued before any failure (the rest are
    left to the caller's retry path). On Redis a batch goes in one pipelined round trip — the same
    script, arguments and middleware hooks as `RedisBroker.enqueue`, one message at a time
    elsewhere (or when this dramatiq's Redis broker does not look like the one this was written for)."""
    if len(messages) > 1 and _pipelinable(broker):
        try:
            return _enqueue_pipelined(broker, messages)  # type: ignore[arg-type]
        except Exception:  # the broker is down: whatever was not confirmed is sent again later
            log.warning("a batch of %s messages was not enqueued", len(messages), exc_info=True)
            return 0
    for n, message in enumerate(messages):
        try:
            broker.enqueue(message)
        except Exception:  # the broker is down: the relay sends it later
            log.warning("message to %s not enqueued", message.queue_name, exc_info=True)
            return n
    return len(messages)


def _pipelinable(broker: dramatiq.Broker) -> bool:
    try:
        from dramatiq.brokers.redis import RedisBroker
    except ImportError:  # pragma: no cover - the redis extra is a dependency
        return False
    return (isinstance(broker, RedisBroker) and "dispatch" in getattr(broker, "scripts", {})
            and all(hasattr(broker, name) for name in ("_should_do_maintenance", "_max_unpack_size", "broker_id",
                                                       "heartbeat_timeout", "dead_message_ttl", "namespace")))


def _enqueue_pipelined(broker, messages: list[dramatiq.Message]) -> int:
    """`RedisBroker.enqueue` for many messages, in one pipelined round trip (no delays)."""
    from dramatiq.common import current_millis
    script, keys = broker.scripts["dispatch"], [broker.namespace]
    ready = []
    with broker.client.pipeline(transaction=False) as pipe:
        for message in messages:
            message = message.copy(options={"redis_message_id": str(uuid4())})
            broker.emit_before("enqueue", message, None)
            script(keys=keys, args=["enqueue", current_millis(), message.queue_name, broker.broker_id,
                                    broker.heartbeat_timeout, broker.dead_message_ttl,
                                    broker._should_do_maintenance("enqueue"), broker._max_unpack_size(),
                                    message.options["redis_message_id"], message.encode()], client=pipe)
            ready.append(message)
        pipe.execute()
    for message in ready:
        broker.emit_after("enqueue", message, None)
    return len(ready)
