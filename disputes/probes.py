"""Asking the database and the broker whether they answer (``GET /health``, queue depths).

A load balancer or an SRE needs to know *which* dependency is down, and a
health check must never hang the API, so each probe is short, catches
everything, and reports a reason instead of raising. Broker specifics live
here only: the in-process StubBroker always answers, Redis is pinged, and
RabbitMQ gets a fresh short-lived connection (the broker's own per-thread
connection could be a stale one). Queue depths are read the same way.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Iterable

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


#: Probes run here, so a broker that accepts connections but never answers (hung, paused, a
#: black-holed address) costs the request PROBE_TIMEOUT, not the client library's own timeout
#: (redis-py's is 5 s, older ones have none) — load balancers give up on a health check after a few.
_probes = ThreadPoolExecutor(max_workers=4, thread_name_prefix="health-probe")


def check_broker(broker: dramatiq.Broker) -> str | None:
    """None when the broker answers within PROBE_TIMEOUT, else why not."""
    try:
        _probes.submit(_ping_broker, broker).result(timeout=PROBE_TIMEOUT)
        return None
    except FutureTimeout:
        log.warning("health: the broker did not answer within %ss", PROBE_TIMEOUT)
        return f"TimeoutError: no answer within {PROBE_TIMEOUT:g}s"
    except Exception as exc:
        log.warning("health: broker check failed", exc_info=True)
        return f"{type(exc).__name__}: {exc}"[:200]


def _ping_broker(broker: dramatiq.Broker) -> None:
    kind = type(broker).__name__
    if kind == "RedisBroker":
        broker.client.ping()  # type: ignore[attr-defined]
    elif kind == "RabbitmqBroker":
        _ping_rabbitmq(broker)
    # StubBroker: in process, always there


def _ping_rabbitmq(broker: dramatiq.Broker) -> None:
    import pika
    connection = pika.BlockingConnection(parameters=_probe_parameters(broker))
    connection.close()


def _probe_parameters(broker: dramatiq.Broker):  # -> pika.ConnectionParameters
    """The broker's connection parameters with short timeouts and a single attempt."""
    import copy
    parameters = broker.parameters  # type: ignore[attr-defined]
    first = parameters[0] if isinstance(parameters, list) else parameters
    probe = copy.copy(first)
    probe.socket_timeout = probe.blocked_connection_timeout = PROBE_TIMEOUT
    probe.connection_attempts, probe.retry_delay = 1, 0
    return probe


def queue_depths(broker: dramatiq.Broker, queues: Iterable[str]) -> dict[str, int | None]:
    """Messages waiting in each queue as the broker counts them (None where it cannot say):
    StubBroker's queue size, Redis ``LLEN`` of dramatiq's list, RabbitMQ's ``message_count`` of a
    passive ``queue_declare`` (on a short-lived connection of its own, one channel per queue,
    since a queue not declared yet closes the channel it is asked on)."""
    queues = list(queues)
    kind = type(broker).__name__
    try:
        if kind == "StubBroker":
            return {q: _stub_depth(broker, q) for q in queues}
        if kind == "RedisBroker":
            pipe = broker.client.pipeline(transaction=False)  # type: ignore[attr-defined]
            for q in queues:
                pipe.llen(f"{broker.namespace}:{q}")  # type: ignore[attr-defined]
            return {q: int(n) for q, n in zip(queues, pipe.execute())}
        if kind == "RabbitmqBroker":
            return _rabbitmq_depths(broker, queues)
    except Exception:
        log.debug("queue depths unavailable", exc_info=True)
    return {q: None for q in queues}


def _stub_depth(broker: dramatiq.Broker, queue: str) -> int | None:
    q = broker.queues.get(queue)  # type: ignore[attr-defined]
    return None if q is None else int(q.qsize())


def _rabbitmq_depths(broker: dramatiq.Broker, queues: list[str]) -> dict[str, int | None]:
    import pika
    connection = pika.BlockingConnection(parameters=_probe_parameters(broker))
    depths: dict[str, int | None] = {}
    try:
        for q in queues:
            channel = connection.channel()
            try:
                depths[q] = int(channel.queue_declare(queue=q, passive=True).method.message_count)
            except pika.exceptions.ChannelClosedByBroker as closed:  # 404: nobody declared it yet
                depths[q] = 0 if closed.reply_code == 404 else None
            else:
                channel.close()
    finally:
        connection.close()
    return depths
