"""Sending dispatch rows as dramatiq messages, after the transaction that wrote them commits.

A message carries the dispatch's id and its row's content (`models.outbox.carried`),
so its handler need not read the row: it claims it with one guarded ``UPDATE`` in
the transaction of its effect (the database stays the truth: a message whose
dispatch is done changes nothing). Anything with a ``queue``, an ``id`` and
``message_kwargs()`` can be sent this way: a `DispatchRef` or a `Dispatch` row,
or another kind of work item that is its own row (``tracks_sending = False``:
its reconciler re-sends it, so a failed send marks nothing).
"""
from __future__ import annotations

import logging
from typing import Iterable, Sequence
from uuid import uuid4

import dramatiq

from models.base import utcnow
from models.outage import Outages
from models.outbox import Dispatch, DispatchRef

log = logging.getLogger("disputes.dispatch")
#: A broker that does not answer fails every send (every commit of the API, every beat of the
#: scheduler's relay): said once per outage and broker, not once per send.
broker_outages = Outages("broker", log)


def actor_name(queue: str) -> str:
    """Each queue has one actor, which routes on the dispatch's kind."""
    return f"{queue}_handle"


def send_dispatches(broker: dramatiq.Broker, ids: Iterable[int]) -> int:
    """Send dispatches just written (and committed) by this process; returns how many were sent.

    They were written as sent (`models.outbox.new_dispatch`), so a send that works costs no
    statement; one that fails marks its rows unsent again for the relay's sweep, so this never
    raises for a broker problem. The `DispatchRef`s a change returns carry their queue and are sent
    as they are; bare ids are looked up."""
    ids = list(ids)
    if not ids:
        return 0
    known = [i for i in ids if hasattr(i, "message_kwargs")]
    bare = [i for i in ids if not hasattr(i, "message_kwargs")]
    rows: list = list(Dispatch.select().where(Dispatch.id.in_(bare) & Dispatch.done_at.is_null())) if bare else []
    rows = known + rows
    sent = _enqueue_rows(broker, rows)
    if sent < len(rows):
        _mark_unsent([row.id for row in rows[sent:] if getattr(row, "tracks_sending", True)])
    return sent


def send_rows(broker: dramatiq.Broker, rows: Sequence[Dispatch | DispatchRef]) -> int:
    """Send `rows` again (the relay's sweep of unsent rows, the reconciler's re-drives) and count
    the attempt on each row that went out."""
    count = _enqueue_rows(broker, rows)
    sent = [row.id for row in rows[:count]]
    if sent:
        # One statement: it commits on its own (or with the caller's transaction, if one is open).
        (Dispatch.update(sent_at=utcnow(), attempts=Dispatch.attempts + 1)
         .where(Dispatch.id.in_(sent)).execute())
    return count


def _enqueue_rows(broker: dramatiq.Broker, rows: Sequence[Dispatch | DispatchRef]) -> int:
    messages = [dramatiq.Message(queue_name=row.queue, actor_name=actor_name(row.queue), args=(row.id,),
                                 kwargs=row.message_kwargs(), options={}) for row in rows]
    count = enqueue_many(broker, messages)
    if count < len(rows):  # the broker's outage is logged once, by `enqueue_many`
        log.debug("dispatches %s not sent; the relay will retry", [row.id for row in rows[count:]][:20])
    return count


def _mark_unsent(ids: list[int]) -> None:
    """Rows whose first send failed go back to the relay's sweep of unsent dispatches. If even this
    fails (the database is down too), the reconciler re-sends them once they are old enough."""
    if not ids:
        return
    try:
        (Dispatch.update(sent_at=None, attempts=Dispatch.attempts - 1)
         .where(Dispatch.id.in_(ids) & Dispatch.done_at.is_null()).execute())
    except Exception:  # noqa: BLE001 - a best effort; the reconciler is the safety net
        log.warning("dispatches %s could not be marked unsent; the reconciler will re-send them", ids[:20],
                    exc_info=True)


def enqueue_many(broker: dramatiq.Broker, messages: list[dramatiq.Message]) -> int:
    """Enqueue `messages` in order; returns how many were enqueued before any failure (the rest are
    left to the caller's retry path). On Redis a batch goes in one pipelined round trip — the same
    script, arguments and middleware hooks as `RedisBroker.enqueue`, one message at a time
    elsewhere (or when this dramatiq's Redis broker does not look like the one this was written for)."""
    outage = broker_outages.of(broker)
    if len(messages) > 1 and _pipelinable(broker):
        try:
            sent = _enqueue_pipelined(broker, messages)  # type: ignore[arg-type]
        except Exception as error:  # noqa: BLE001 - the broker is down: what was not confirmed is sent again later
            outage.failed(error)
            return 0
        outage.answered()
        return sent
    for n, message in enumerate(messages):
        try:
            broker.enqueue(message)
        except Exception as error:  # noqa: BLE001 - the broker is down: the relay sends it later
            outage.failed(error)
            return n
    if messages:
        outage.answered()
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
