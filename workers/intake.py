"""The intake: the kombu consumer of ``op.intake`` (SPEC §4).

What a message does to the tickets — validation, de-duplication, linking, the
rejected store, replay — is `models.admission`; what keeps kombu's handling of a
hostile delivery harmless is `workers.intake_hardening`. This module is the
consumer alone: the exchange and queue, and a loop that hands each delivery to
admission and acks only after its row (applied or rejected) committed, so
nothing is lost and nothing is half-applied, and no input can stop it.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from kombu import Exchange, Queue
from kombu.mixins import ConsumerMixin

from disputes.logs import intake_context
from disputes.settings import INTAKE_EXCHANGE, INTAKE_QUEUE
from disputes.wiring import App
from models import admission
from models.admission import Admission
from models.base import database
from workers.intake_hardening import bound_decompression, raw_delivery

__all__ = ["Admission", "Intake", "IntakeConsumer", "consume", "declare_topology", "intake_exchange",
           "intake_queue"]

log = logging.getLogger("disputes.intake")

intake_exchange = Exchange(INTAKE_EXCHANGE, type="topic", durable=True)
intake_queue = Queue(INTAKE_QUEUE, exchange=intake_exchange, routing_key="#", durable=True)


def declare_topology(connection: Any) -> None:
    """Declare ``op.intake`` and our durable queue bound to it, so messages published before the
    first consumer starts are kept, not dropped (``disputes init`` calls this)."""
    intake_queue(connection.default_channel).declare()


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

    def replay(self, rejected_id: int) -> Admission:
        """Re-drive a stored message through the same path (after the cause was fixed)."""
        return admission.replay(rejected_id, policy=self.app.policy, broker=self.app.broker)


class IntakeConsumer(ConsumerMixin):
    """Feeds `Intake` from ``op.intake``; acks only after the message's row committed."""

    def __init__(self, app: App, connection: Any, *, prefetch: int = 64, queue: Queue = intake_queue) -> None:
        bound_decompression()
        self.intake = Intake(app)
        self.connection = connection
        self.prefetch = prefetch
        self.queue = queue

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        """kombu could not even build the message (a bad ``compression`` header): kombu's default acks
        and drops it; we store it as rejected with its raw bytes, then ack (requeue if the store fails)."""
        routing_key, body, message_id = raw_delivery(message)
        headers = dict(message.headers or {})
        reasons = {"_message": [f"message cannot be decoded ({type(exc).__name__}): "
                                f"headers say compression {str(headers.get('compression'))[:64]!r}"]}
        self._store_then_ack(message, lambda: admission.store_rejected(routing_key, body, message_id, headers,
                                                                       reasons))

    def get_consumers(self, Consumer: Any, channel: Any) -> list:
        # on_message: kombu hands us the raw message undecoded, so no body can make it raise.
        return [Consumer(queues=[self.queue], on_message=self.on_message, prefetch_count=self.prefetch)]

    def on_message(self, message: Any) -> None:
        routing_key, body, message_id = raw_delivery(message)

        def admit() -> None:
            with intake_context(routing_key, body, message_id):
                self.intake.admit(routing_key, body, message_id, dict(message.headers or {}))
        self._store_then_ack(message, admit)

    @staticmethod
    def _store_then_ack(message: Any, store: Callable[[], object]) -> None:
        """Ack only once `store` committed; when it fails (the database is down) keep the message
        and try again shortly. The consumer is one thread: it keeps its connection between messages
        (a reconnect per message cost a fifth of the admission time) and drops it only on failure."""
        try:
            database.connect(reuse_if_open=True)
            store()
        except Exception:
            log.exception("intake could not store message %s; requeueing", (message.properties or {}).get("message_id"))
            if not database.is_closed() and not database.in_transaction():
                database.close()
            message.requeue()
            time.sleep(1.0)
            return
        message.ack()


def consume(app: App, *, should_stop: Callable[[], bool] | None = None, queue: Queue = intake_queue) -> None:
    """Run the intake consumer until interrupted (``disputes intake``; the benchmark names its own queue)."""
    with app.kombu_connection() as connection:
        consumer = IntakeConsumer(app, connection, queue=queue)
        if should_stop is not None:
            consumer.should_stop = False

            def watch() -> None:
                while not should_stop():
                    time.sleep(0.2)
                consumer.should_stop = True
            threading.Thread(target=watch, daemon=True, name="intake-stop").start()
        consumer.run()
