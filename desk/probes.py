"""Asking the database and the broker whether they answer (``GET /health``, queue depths).

A load balancer or an SRE needs to know *which* dependency is down, and a
health check must never hang the API, so each probe is short, catches
everything, and reports a reason instead of raising. Broker specifics live
here only: the in-process StubBroker always answers, Redis is pinged, and
RabbitMQ gets a fresh short-lived connection (the broker's own per-thread
connection could be a stale one).
"""
from __future__ import annotations

import logging

import dramatiq

from models.base import database

log = logging.getLogger("disputes.api")

#: Seconds a broker probe may take before the broker counts as down.
PROBE_TIMEOUT = 2.0


def check_database() -> str | None:
    """None when ``SELECT 1`` works, else why not."""
    try:
        database.connect(reuse_if_open=True)
        database.execute_sql("SELECT 1").fetchone()
        return None
    except Exception as exc:  # any driver error means "down"
        log.warning("health: database check failed", exc_info=True)
        return f"{type(exc).__name__}: {exc}"[:200]


def check_broker(broker: dramatiq.Broker) -> str | None:
    """None when the broker answers, else why not."""
    kind = type(broker).__name__
    try:
        if kind == "RedisBroker":
            broker.client.ping()  # type: ignore[attr-defined]
        elif kind == "RabbitmqBroker":
            _ping_rabbitmq(broker)
        return None  # StubBroker: in process, always there
    except Exception as exc:
        log.warning("health: broker check failed", exc_info=True)
        return f"{type(exc).__name__}: {exc}"[:200]


def _ping_rabbitmq(broker: dramatiq.Broker) -> None:
    import copy

    import pika
    parameters = broker.parameters  # type: ignore[attr-defined]
    first = parameters[0] if isinstance(parameters, list) else parameters
    probe = copy.copy(first)
    probe.socket_timeout = probe.blocked_connection_timeout = PROBE_TIMEOUT
    probe.connection_attempts, probe.retry_delay = 1, 0
    connection = pika.BlockingConnection(parameters=probe)
    connection.close()


def queue_depth(broker: dramatiq.Broker, queue: str) -> int | None:
    """Messages waiting in `queue` on the broker, or None when the broker cannot say."""
    kind = type(broker).__name__
    try:
        if kind == "StubBroker":
            q = broker.queues.get(queue)  # type: ignore[attr-defined]
            return None if q is None else int(q.qsize())
        if kind == "RedisBroker":
            return int(broker.client.llen(f"{broker.namespace}:{queue}"))  # type: ignore[attr-defined]
        if kind == "RabbitmqBroker":
            return int(broker.get_queue_message_counts(queue)[0])  # type: ignore[attr-defined]
    except Exception:
        log.debug("queue depth of %s unavailable", queue, exc_info=True)
    return None
