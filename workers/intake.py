"""The intake: the kombu consumer of ``op.intake`` (SPEC §4).

What a message does to the tickets — validation, de-duplication, linking, the
rejected store, replay — is `models.admission`; what keeps kombu's handling of a
hostile delivery harmless is `workers.intake_hardening`. This module is the
consumer alone: the exchange and queue, and a loop that hands the deliveries the
broker has prefetched to admission as one batch (one transaction, a savepoint per
message) and acks them only after their rows (applied or rejected) committed, so
nothing is lost and nothing is half-applied, and no input can stop it.

Order: the queue has a single active consumer (RabbitMQ's ``x-single-active-consumer``):
however many intake processes run, the broker delivers to one of them, and switches
to another only once that one is gone (its unacknowledged messages first requeued),
so messages are applied in the order they arrived. More processes are hot standbys.

Several deployments on one vhost: each reads its own queue (``OP_NAMESPACE``:
``staging.disputes.intake``), and on RabbitMQ each consumer also registers on the
broker which database it feeds (`registration_queue`), so ``disputes init`` can tell
when a queue is consumed for another database (`count_consumers`).
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from itertools import count
from typing import Any, Callable, Iterator

import amqp
from amqp.exceptions import NotFound, PreconditionFailed
from kombu import Exchange, Queue
from kombu.mixins import ConsumerMixin

from disputes.logs import intake_context
from disputes.settings import INTAKE_EXCHANGE, INTAKE_QUEUE, database_fingerprint
from disputes.wiring import App
from models import admission
from models.admission import Admission, Delivery
from models.base import DATABASE_UNAVAILABLE, database
from models.outage import Outage
from workers.intake_hardening import bound_decompression, raw_delivery

__all__ = ["Admission", "Delivery", "Intake", "IntakeConsumer", "IntakeConsumers", "consume", "count_consumers",
           "declare_topology", "intake_exchange", "intake_queue", "intake_queue_named", "registration_queue"]

log = logging.getLogger("disputes.intake")

#: One consumer at a time, so messages apply in arrival order whatever the number of intake processes.
ORDERED = {"x-single-active-consumer": True}

#: A registration queue (`registration_queue`) never holds a message, lives while its consumers do, and
#: one left behind by a consumer that died before consuming from it goes after a minute unused.
REGISTRATION = {"x-max-length": 0, "x-expires": 60_000}

intake_exchange = Exchange(INTAKE_EXCHANGE, type="topic", durable=True)


def intake_queue_named(name: str) -> Queue:
    """The intake's durable queue `name` (``Settings.intake_queue``), bound to ``op.intake`` with ``#``."""
    return Queue(name, exchange=intake_exchange, routing_key="#", durable=True, queue_arguments=ORDERED)


#: The queue of a deployment without ``OP_NAMESPACE`` (SPEC §4's ``disputes.intake``).
intake_queue = intake_queue_named(INTAKE_QUEUE)


def registration_queue(queue_name: str, database_url: str) -> Queue:
    """The queue an intake consumer of `queue_name` also consumes from, to tell the broker which database
    it feeds: ``<queue>.consumer.<database fingerprint>`` (`disputes.settings.database_fingerprint`: no
    user, no password). Plain AMQP, without the management plugin, tells anyone a queue's number of
    consumers and nothing else about them; so the consumers of the intake queue less those of this
    database's registration queue are consumers for another database (`count_consumers`)."""
    return Queue(f"{queue_name}.consumer.{database_fingerprint(database_url)}", durable=False, auto_delete=True,
                 queue_arguments=REGISTRATION)


def speaks_amqp(connection: Any) -> bool:
    """A kombu connection to RabbitMQ (where queues count their consumers), not Redis or memory."""
    return connection is not None and getattr(connection.transport, "driver_type", "") == "amqp"


@dataclass(frozen=True)
class IntakeConsumers:
    """Who consumes an intake queue, as far as the broker tells: `total` consumers, `ours` of them
    registered for this database."""

    queue: str
    total: int
    ours: int

    @property
    def others(self) -> int:
        """Consumers not registered for this database: another deployment's, or an earlier release's."""
        return max(0, self.total - self.ours)


def count_consumers(connection: Any, queue: Queue, database_url: str) -> IntakeConsumers | None:
    """The consumers of `queue` and how many feed the database of `database_url` (``disputes init``);
    None where the transport cannot count them (Redis, memory)."""
    if not speaks_amqp(connection):
        return None
    # The intake queue first: a consumer registers before it consumes from it (`IntakeConsumer.get_consumers`).
    total = _consumer_count(connection, queue.name)
    return IntakeConsumers(queue.name, total, _consumer_count(connection, registration_queue(
        queue.name, database_url).name))


def _consumer_count(connection: Any, name: str) -> int:
    """A passive declare's consumer count, on a channel of its own (a missing queue closes it): 0 if none."""
    channel = connection.channel()
    try:
        return int(channel.queue_declare(queue=name, passive=True).consumer_count)
    except NotFound:
        return 0
    finally:
        with suppress(Exception):  # already closed by the broker's 404
            channel.close()


def declare_topology(connection: Any, queue: Queue = intake_queue) -> Queue:
    """Declare ``op.intake`` and our durable queue bound to it, so messages published before the
    first consumer starts are kept, not dropped (``disputes init`` calls this). Returns the queue
    as declared: a queue an earlier release declared without a single active consumer cannot be
    changed in place (RabbitMQ refuses other arguments for an existing queue), so it is used as
    it is, with a warning — see README "Intake order"."""
    try:
        with connection.channel() as channel:
            queue(channel).declare()
        return queue
    except PreconditionFailed:
        log.warning("intake queue %s was declared without x-single-active-consumer by an earlier release: "
                    "with several intake processes, messages for one ticket may be applied out of arrival "
                    "order until it is re-created (README \"Intake order\")", queue.name)
        legacy = Queue(queue.name, exchange=queue.exchange, routing_key=queue.routing_key, durable=True)
        with connection.channel() as channel:
            legacy(channel).declare()
        return legacy


class Intake:
    """`models.admission` bound to an app's policy and broker: the consumer below, ``disputes intake
    replay``, the benchmark and the tests admit messages through it. The policy is read at each call,
    so an app whose policy is swapped admits by the new one."""

    def __init__(self, app: App) -> None:
        self.app = app

    def admit(self, routing_key: str, body: bytes, message_id: str | None = None,
              headers: dict | None = None) -> Admission:
        return admission.admit(routing_key, body, message_id, headers, policy=self.app.policy,
                               broker=self.app.broker)

    def admit_batch(self, deliveries: list[Delivery],
                    committed: Callable[[list[Admission]], None] | None = None) -> list[Admission]:
        """Admit `deliveries` in one transaction (`models.admission.admit_batch`), each message in
        its own log context; `committed` runs once it committed, before the dispatches are sent."""
        return admission.admit_batch(deliveries, policy=self.app.policy, broker=self.app.broker,
                                     context=lambda d: intake_context(d.routing_key, d.body, d.message_id),
                                     committed=committed)

    def replay(self, rejected_id: int) -> Admission:
        """Re-drive a stored message through the same path (after the cause was fixed)."""
        return admission.replay(rejected_id, policy=self.app.policy, broker=self.app.broker)


class IntakeConsumer(ConsumerMixin):
    """Feeds `Intake` from ``op.intake``; acks only after the messages' rows committed.

    Group commit: a delivery is not admitted on its own. After one arrives, the consumer takes
    whatever else the broker has already sent (prefetched) — until `batch` are held, or no further
    one came within `linger` seconds, or `max_wait` seconds passed — and admits them together in one
    transaction (one commit, one WAL flush, for the lot): each message in a savepoint, so a message
    that is rejected rolls back alone and is stored as rejected in that same transaction. Then every
    message of the batch is acked, then the dispatches are sent. When the transaction fails (the
    database is down) every message of the batch is requeued and nothing is acked. A lone message
    waits at most `linger` for company."""

    def __init__(self, app: App, connection: Any, *, prefetch: int = 256, queue: Queue = intake_queue,
                 batch: int = 256, linger: float = 0.002, max_wait: float = 0.01) -> None:
        bound_decompression()
        self.intake = Intake(app)
        self.connection = connection
        self.prefetch = prefetch
        self.queue = queue
        #: On RabbitMQ, where this consumer says which database it feeds (`registration_queue`).
        self.registration = (registration_queue(queue.name, app.settings.database_url)
                             if speaks_amqp(connection) else None)
        self.batch = max(1, batch)
        self.linger = linger
        self.max_wait = max_wait
        self.held: list[Any] = []  # delivered, not yet admitted, in delivery order
        #: While the database or the transport is away the consumer retries every second or so: said once each.
        self.database_outage = Outage("database", log)
        self.transport_outage = Outage("intake transport (OP_INTAKE_URL)", log)

    def on_connection_error(self, exc: Exception, interval: float) -> None:
        """kombu retries a lost or refused connection (waiting `interval` s): logged once per outage,
        not at each try as kombu's own handler does."""
        self.transport_outage.failed(exc)

    def on_connection_revived(self) -> None:
        self.transport_outage.answered()

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        """kombu could not even build the message (a bad ``compression`` header): kombu's default acks
        and drops it; we store it as rejected with its raw bytes, then ack (requeue if the store fails).
        The messages delivered before it are admitted first, so the queue's order is kept."""
        self.flush()
        routing_key, body, message_id = raw_delivery(message)
        headers = dict(message.headers or {})
        reasons = {"_message": [f"message cannot be decoded ({type(exc).__name__}): "
                                f"headers say compression {str(headers.get('compression'))[:64]!r}"]}
        self._store_then_ack(message, lambda: admission.store_rejected(routing_key, body, message_id, headers,
                                                                       reasons))

    def get_consumers(self, Consumer: Any, channel: Any) -> list:
        # on_message: kombu hands us the raw message undecoded, so no body can make it raise.
        consumers = [Consumer(queues=[self.queue], on_message=self.on_message, prefetch_count=self.prefetch)]
        if self.registration is not None:
            # Consumed first, so every consumer the intake queue counts has registered; no prefetch of its
            # own (it never receives a message): it takes the channel's, set by the consumer above.
            consumers.insert(0, Consumer(queues=[self.registration], on_message=lambda message: message.ack()))
        return consumers

    def on_message(self, message: Any) -> None:
        """Hold the delivery; `consume` admits what is held once the prefetched ones are in."""
        self.held.append(message)

    def consume(self, limit: int | None = None, timeout: float | None = None, safety_interval: float = 1,
                **kwargs: Any) -> Iterator[None]:
        """`ConsumerMixin.consume`, admitting a batch after each wake-up: the first delivery is waited
        for as kombu does, then whatever else is ready is gathered (`gather`) and admitted (`flush`)."""
        elapsed = 0.0
        with self.consumer_context(**kwargs) as (conn, _channel, _consumers):
            self.held.clear()  # deliveries of a lost connection are redelivered on this one
            for _ in limit and range(limit) or count():
                if self.should_stop:
                    break
                self.on_iteration()
                try:
                    conn.drain_events(timeout=safety_interval)
                    self.gather(conn)
                except TimeoutError:
                    conn.heartbeat_check()
                    elapsed += safety_interval
                    if timeout and elapsed >= timeout:
                        raise
                except OSError:
                    if not self.should_stop:
                        raise
                else:
                    self.flush()
                    yield
                    elapsed = 0.0
        log.debug("intake consume exiting")

    def gather(self, conn: Any) -> None:
        """Take the deliveries already on their way, up to `batch`: stop at the first pause of
        `linger` seconds (nothing more is buffered) or after `max_wait` seconds in all."""
        deadline = time.monotonic() + self.max_wait
        while len(self.held) < self.batch:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                conn.drain_events(timeout=min(left, self.linger))
            except TimeoutError:
                return

    def flush(self) -> None:
        """Admit the held deliveries in one transaction; ack them all once it committed, or requeue
        them all when it failed. The consumer is one thread: it keeps its database connection
        between batches and drops it only on failure."""
        held, self.held = self.held, []
        if not held:
            return
        deliveries = [Delivery(*raw_delivery(message), dict(message.headers or {})) for message in held]
        stored = False

        def ack_all(_: list[Admission]) -> None:
            nonlocal stored
            stored = True
            ack_together(held)
        try:
            database.connect(reuse_if_open=True)
            self.intake.admit_batch(deliveries, committed=ack_all)
        except Exception as error:
            if stored:  # committed, but an ack failed (the broker connection is gone): kombu reconnects,
                raise   # and a redelivery is a duplicate
            self._not_stored(error, f"a batch of {len(held)} messages (first {deliveries[0].message_id})")
            self._drop_connection()
            for message in held:
                message.requeue()
            time.sleep(1.0)
            return
        self.database_outage.answered()

    def _store_then_ack(self, message: Any, store: Callable[[], object]) -> None:
        """Ack only once `store` committed; when it fails (the database is down) keep the message
        and try again shortly."""
        try:
            database.connect(reuse_if_open=True)
            store()
        except Exception as error:  # noqa: BLE001 - logged by _not_stored; the message is requeued
            self._not_stored(error, f"message {(message.properties or {}).get('message_id')}")
            self._drop_connection()
            message.requeue()
            time.sleep(1.0)
            return
        self.database_outage.answered()
        message.ack()

    def _not_stored(self, error: Exception, what: str) -> None:
        """A database away is an outage, logged once; any other failure is logged each time, with its
        traceback (the messages are requeued either way)."""
        if isinstance(error, DATABASE_UNAVAILABLE):
            self.database_outage.failed(error)
        else:
            log.error("intake could not store %s; requeueing", what, exc_info=error)

    @staticmethod
    def _drop_connection() -> None:
        if not database.is_closed() and not database.in_transaction():
            database.close()


def ack_together(messages: list[Any]) -> None:
    """Ack a batch: on AMQP one frame for all (``multiple``: every earlier delivery of the channel is
    settled by now, since deliveries are handled in order); kombu's virtual transports (Redis,
    memory) ignore ``multiple``, so there each message is acked by itself."""
    last = messages[-1]
    channel = getattr(last, "channel", None)
    if isinstance(channel, amqp.Channel) and all(getattr(m, "channel", None) is channel for m in messages):
        last.ack(multiple=True)
        for message in messages[:-1]:
            message._state = "ACK"  # kombu's own bookkeeping: acked by the frame above
        return
    for message in messages:
        message.ack()


def consume(app: App, *, should_stop: Callable[[], bool] | None = None, queue: Queue | None = None) -> None:
    """Run the intake consumer until interrupted (``disputes intake``): on the app's queue
    (``OP_NAMESPACE``), or on `queue` (the benchmark names its own)."""
    queue = queue or intake_queue_named(app.settings.intake_queue)
    with app.kombu_connection() as connection:
        consumer = IntakeConsumer(app, connection, queue=declare_topology(connection, queue))
        if should_stop is not None:
            consumer.should_stop = False

            def watch() -> None:
                while not should_stop():
                    time.sleep(0.2)
                consumer.should_stop = True
            threading.Thread(target=watch, daemon=True, name="intake-stop").start()
        consumer.run()
