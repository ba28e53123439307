"""The outbox relay: ``op.events`` in commit order, and dispatches a crash left unsent.

Only the holder of the ``relay`` lease publishes events, so events of one
ticket leave in the order their changes committed. An event is marked
published only after the broker confirmed it (RabbitMQ publisher confirms),
so a crash in between publishes it again: consumers de-duplicate on
``event_id`` (at-least-once, never lost).

Events move in batches. On RabbitMQ the relay publishes a whole batch on a
channel in confirm mode and then waits once for the broker's confirms (which
come as ``basic.ack``/``basic.nack`` carrying a delivery tag, often with
``multiple`` set), instead of one round trip per event as py-amqp's
``confirm_publish`` does. It then marks, in one ``UPDATE``, the longest run of
the batch, in id order, that the broker confirmed: a nack, a closed channel or
a lost connection mid-batch leaves that event and every later one unmarked, so
no event of a ticket is ever marked while an earlier one is not, and the next
attempt publishes them again in order. A transport without confirms (kombu's
``memory://``, the embedded mode) publishes one message at a time, as before.
"""
from __future__ import annotations

import json
import logging
import time
import weakref
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import dramatiq
from amqp.exceptions import MessageNacked
from kombu import Exchange, Producer

from disputes.settings import EVENTS_EXCHANGE
from models.base import database
from models.outbox import Dispatch, OutboxEvent
from models.sending import send_rows

log = logging.getLogger("disputes.relay")

events_exchange = Exchange(EVENTS_EXCHANGE, type="topic", durable=True)
RETRY_POLICY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2.0}
#: How long a batch waits for the broker's confirms before it counts as failed (its unconfirmed rows
#: are published again by a later attempt). py-amqp's own confirming publish waits forever.
CONFIRM_TIMEOUT = 30.0


class Event(NamedTuple):
    """What publishing one outbox row needs: nothing else is read."""

    id: int
    routing_key: str
    body: dict[str, Any]


def relay_events(producer: Producer, now: datetime, batch: int = 500) -> int:
    """Publish up to `batch` unpublished events in id order; returns how many the broker took."""
    if not confirms_in_batches(producer.channel):
        return relay_one_by_one(producer, unpublished_events(batch), now)
    # A lost connection reconnects and runs the batch again (as `retry=True` did per message): what
    # the first try got confirmed is marked by then, so the second reads and publishes only the rest.
    relay = producer.connection.ensure(producer, relay_confirmed_batch, **RETRY_POLICY)
    return relay(producer, now, batch)


def unpublished_events(batch: int) -> list[Event]:
    """The oldest `batch` unpublished events: three columns, in id order (the commit order per ticket)."""
    query = (OutboxEvent.select(OutboxEvent.id, OutboxEvent.routing_key, OutboxEvent.body)
             .where(OutboxEvent.published_at.is_null()).order_by(OutboxEvent.id).limit(batch))
    return [Event(*row) for row in query.tuples()]


def mark_published(ids: list[int], now: datetime) -> None:
    if ids:
        with database.atomic():
            OutboxEvent.update(published_at=now).where(OutboxEvent.id.in_(ids)).execute()


def message_body(event: Event) -> bytes:
    return json.dumps(event.body, ensure_ascii=False).encode("utf-8")


# -- without confirms: one message at a time ------------------------------------------------

def relay_one_by_one(producer: Producer, events: list[Event], now: datetime) -> int:
    """Each publish returns once the transport has the message (the memory transport at once)."""
    published: list[int] = []
    try:
        for event in events:
            producer.publish(message_body(event), exchange=events_exchange, routing_key=event.routing_key,
                             declare=[events_exchange], delivery_mode=2, content_type="application/json",
                             content_encoding="utf-8", message_id=event.body.get("event_id"), retry=True,
                             retry_policy=RETRY_POLICY)
            published.append(event.id)
    finally:
        mark_published(published, now)
    return len(published)


# -- with confirms: a batch, one wait ---------------------------------------------------------

def confirms_in_batches(channel: Any) -> bool:
    """A py-amqp channel (RabbitMQ) whose confirms the relay can count: not one another publisher
    already put in confirm mode, for the relay could not know which delivery tags are its own."""
    if not (hasattr(channel, "confirm_select") and hasattr(channel, "_basic_publish")):
        return False  # kombu's virtual transports (memory://, redis://): no publisher confirms
    return channel in _sequences or not getattr(channel, "_confirm_selected", False)


def relay_confirmed_batch(producer: Producer, now: datetime, batch: int) -> int:
    """Publish a batch without waiting, wait for its confirms once, mark the confirmed run."""
    channel = producer.channel
    if not confirms_in_batches(channel):  # a reconnect handed over a channel another publisher confirms on
        return relay_one_by_one(producer, unpublished_events(batch), now)
    events = unpublished_events(batch)
    if not events:
        return 0
    producer.maybe_declare(events_exchange)
    confirms = ConfirmedBatch(channel)
    try:
        with confirms.listening():
            for event in events:
                confirms.publish(event)
            confirms.wait(CONFIRM_TIMEOUT)
    finally:
        confirmed = confirms.confirmed_run()
        mark_published([event.id for event in events[:confirmed]], now)
    if confirmed < len(events):
        # Recoverable for kombu's `ensure`, like py-amqp's own nack: reconnect, publish the rest again.
        raise MessageNacked(f"the broker refused event {events[confirmed].id}; none after it is marked")
    return confirmed


def publish_unconfirmed(channel: Any, event: Event) -> None:
    """The message `relay_one_by_one` sends, property for property, without waiting for its confirm.

    With ``confirm_publish`` py-amqp replaces ``basic_publish`` by a version that waits for each
    confirm; ``_basic_publish`` is the plain send that version itself wraps."""
    properties = {"delivery_mode": 2, "message_id": event.body.get("event_id")}
    message = channel.prepare_message(message_body(event), 0, "application/json", "utf-8", {}, properties)
    channel._basic_publish(message, exchange=events_exchange.name, routing_key=event.routing_key)


class _Sequence:
    """How many messages a channel published since the relay put it in confirm mode."""

    def __init__(self) -> None:
        self.published = 0


#: Per channel: the broker numbers a channel's messages 1, 2, ... from ``confirm.select`` on, and its
#: confirms name those numbers; kept per channel object, so a new channel (a reconnect) starts at 1.
_sequences: weakref.WeakKeyDictionary[Any, _Sequence] = weakref.WeakKeyDictionary()


def confirm_mode(channel: Any) -> _Sequence:
    """Put `channel` in confirm mode once; its count of published messages."""
    sequence = _sequences.get(channel)
    if sequence is None or not getattr(channel, "_confirm_selected", False):  # new, or re-opened by py-amqp
        channel.confirm_select()
        channel._confirm_selected = True  # py-amqp's own flag: its confirming publish must not select again
        sequence = _sequences[channel] = _Sequence()
    return sequence


class ConfirmedBatch:
    """Messages published on a channel in confirm mode, and the broker's answers to them.

    The broker acks or nacks each delivery tag once, possibly several at a time (``multiple``:
    every tag up to this one) and not necessarily in order."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.sequence = confirm_mode(channel)
        self.first = self.sequence.published + 1
        self.sent = 0
        self.acked: set[int] = set()
        self.nacked: set[int] = set()

    @property
    def last(self) -> int:
        return self.first + self.sent - 1

    def publish(self, event: Event) -> None:
        publish_unconfirmed(self.channel, event)
        self.sequence.published += 1
        self.sent += 1

    def listening(self) -> _Listening:
        return _Listening(self)

    def on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self.acked.update(self._tags(delivery_tag, multiple))

    def on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self.nacked.update(self._tags(delivery_tag, multiple))

    def _tags(self, delivery_tag: int, multiple: bool) -> list[int]:
        # Tags of earlier batches (answered late, after a timeout) are not ours to count.
        if not multiple:
            return [delivery_tag] if self.first <= delivery_tag <= self.last else []
        return [t for t in range(self.first, min(delivery_tag, self.last) + 1)
                if t not in self.acked and t not in self.nacked]

    def settled(self) -> bool:
        return len(self.acked) + len(self.nacked) >= self.sent

    def wait(self, timeout: float) -> None:
        """Read the connection until every message is acked or nacked. A channel the broker closed
        (an exchange that is gone) or a lost connection raises from ``drain_events``."""
        deadline = time.monotonic() + timeout
        while not self.settled():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.sent - len(self.acked) - len(self.nacked)} events unconfirmed "
                                   f"after {timeout:.0f} s")
            self.channel.connection.drain_events(timeout=remaining)

    def confirmed_run(self) -> int:
        """How many messages from the first on the broker acked without a gap: only those may be
        marked, so that no later event of a ticket is marked while an earlier one is not."""
        run = 0
        while run < self.sent and self.first + run in self.acked:
            run += 1
        return run


class _Listening:
    """Subscribes a batch to its channel's ack and nack events while it publishes and waits."""

    def __init__(self, batch: ConfirmedBatch) -> None:
        self.batch = batch

    def __enter__(self) -> ConfirmedBatch:
        events = self.batch.channel.events
        events["basic_ack"].add(self.batch.on_ack)
        events["basic_nack"].add(self.batch.on_nack)
        return self.batch

    def __exit__(self, *exc: object) -> None:
        events = self.batch.channel.events  # py-amqp empties it when the channel closes
        events["basic_ack"].discard(self.batch.on_ack)
        events["basic_nack"].discard(self.batch.on_nack)


def send_unsent_dispatches(broker: dramatiq.Broker, now: datetime, grace: float, batch: int = 500) -> int:
    """Dispatches committed but never sent (the sender died after commit)."""
    rows = list(Dispatch.select().where(Dispatch.sent_at.is_null() & Dispatch.done_at.is_null()
                                        & (Dispatch.created_at < now - timedelta(seconds=grace)))
                .order_by(Dispatch.id).limit(batch))
    return send_rows(broker, rows)
