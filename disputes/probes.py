"""Asking the database and the broker whether they answer (``GET /health``), and reading them at
scrape time (queue depths, ``/metrics``), each within a deadline.

A load balancer or an SRE needs to know *which* dependency is down, and a health
check or a scrape must never hang the API. A dependency can be hung — it
accepts connections and never answers (a paused server, a black-holed address)
or the connection is half-open (its peer vanished) — and a client library then
waits for its own timeout: seconds, minutes, or for ever. So every read here
runs on a thread of its own (`ask`) and is waited on until a deadline at most
(`PROBE_TIMEOUT` for a probe); the caller gets an `Answer`, a value or the
reason there is none, never an exception and never a hang. A read still running
from an earlier request is waited on again rather than started twice, so a hung
dependency holds one thread per kind of read however often it is asked. Each
dependency's outages are logged once (`models.outage`), not on every request.

Broker specifics live here only: the in-process StubBroker always answers,
Redis is pinged, and RabbitMQ gets a fresh short-lived connection (the broker's
own per-thread connection could be a stale one). Queue depths are read the same way.
"""
from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent import futures
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

import dramatiq
import peewee

from models.outage import Outage, Outages, describe

log = logging.getLogger("disputes.probes")

T = TypeVar("T")

#: Seconds a dependency may take to answer a probe (a ping, a ``SELECT 1``, queue depths) before it
#: counts as down. The database and the broker are asked at once, so ``GET /health`` answers within
#: this, under the readiness probe's 3 s (deploy/kubernetes) and a load balancer's few seconds.
PROBE_TIMEOUT = 2.0

database_outages = Outages("database", log)
broker_outages = Outages("broker", log)


@dataclass(frozen=True)
class Answer(Generic[T]):
    """What a dependency said: its `value`, or why there is none (`problem`, for people)."""

    value: T | None = None
    problem: str | None = None


class Deadline:
    """A moment `seconds` from now, that several reads are waited on until."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def wait(self, future: Future[T], outage: Outage) -> Answer[T]:
        """`future`'s value, or the reason it has none by the deadline (it failed, or is not done);
        `outage` hears which."""
        if not futures.wait([future], timeout=max(0.0, self.at - time.monotonic())).done:
            reason: BaseException = TimeoutError(f"no answer within {self.seconds:g}s")
        elif (error := future.exception()) is not None:
            reason = error
        else:
            outage.answered()
            return Answer(future.result())
        outage.failed(reason)
        return Answer(problem=describe(reason)[:200])


_running: dict[tuple[str, int], Future] = {}
_running_lock = threading.Lock()


def ask(what: str, thing: object, read: Callable[[], T]) -> Future[T]:
    """Start `read` of `thing` on a thread of its own and return its future at once — or, while an
    earlier `what` of the same `thing` still runs, that one's future (a hung dependency then holds
    one thread per kind of read, however often it is asked). The threads are daemons, unlike a
    pool's: one stuck on a hung dependency must not keep the process from exiting."""
    key = (what, id(thing))  # `read` refers to `thing` until it ends, so the id is not reused meanwhile
    with _running_lock:
        running = _running.get(key)
        if running is not None:
            return running
        future: Future[T] = Future()
        _running[key] = future
    try:
        threading.Thread(target=_run, args=(key, future, read), daemon=True, name=f"probe-{what}").start()
    except RuntimeError as error:  # no thread to be had (the process is at its limit): this read fails alone
        _forget(key)
        future.set_exception(error)
    return future


def _run(key: tuple[str, int], future: Future[T], read: Callable[[], T]) -> None:
    try:
        value = read()
    except BaseException as error:  # noqa: BLE001 - handed to whoever waits on the future
        _forget(key)
        future.set_exception(error)
    else:
        _forget(key)
        future.set_result(value)


def _forget(key: tuple[str, int]) -> None:
    """Before the future is settled: whoever asks after that starts a fresh read."""
    with _running_lock:
        _running.pop(key, None)


# ---- GET /health ---------------------------------------------------------------------------------

def dependency_problems(db: peewee.Database, broker: dramatiq.Broker) -> dict[str, str | None]:
    """Whether the database and the broker answer, both asked at once and waited on together for
    `PROBE_TIMEOUT` at most: each one's problem, None where it answered."""
    deadline = Deadline(PROBE_TIMEOUT)
    selected = ask("select 1", db, lambda: _select_one(db))
    pinged = ask("ping", broker, lambda: _ping_broker(broker))
    return {"database": deadline.wait(selected, database_outages.of(db)).problem,
            "broker": deadline.wait(pinged, broker_outages.of(broker)).problem}


def _select_one(db: peewee.Database) -> None:
    with db.connection_context():  # this thread's own connection, given back (or closed) after
        db.execute_sql("SELECT 1").fetchone()


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
    parameters = broker.parameters  # type: ignore[attr-defined]
    first = parameters[0] if isinstance(parameters, list) else parameters
    probe = copy.copy(first)
    probe.socket_timeout = probe.blocked_connection_timeout = PROBE_TIMEOUT
    probe.connection_attempts, probe.retry_delay = 1, 0
    return probe


# ---- queue depths ----------------------------------------------------------------------------------

def read_queue_depths(broker: dramatiq.Broker, queues: Iterable[str]) -> Answer[dict[str, int | None]]:
    """Messages waiting in each queue as the broker counts them, within `PROBE_TIMEOUT`: StubBroker's
    queue size, Redis ``LLEN`` of dramatiq's list, RabbitMQ's ``message_count`` of a passive
    ``queue_declare`` (on a short-lived connection of its own, one channel per queue, since a queue
    not declared yet closes the channel it is asked on). None for a queue the broker cannot say
    about; every queue None, and the `problem`, when it failed or did not answer in time."""
    queues = list(queues)
    unknown: dict[str, int | None] = dict.fromkeys(queues)
    read = _depth_reader(broker, queues)
    if read is None:  # a broker of another kind: it cannot say, which is no outage
        return Answer(unknown)
    answer = Deadline(PROBE_TIMEOUT).wait(ask(f"depths of {','.join(queues)}", broker, read),
                                          broker_outages.of(broker))
    return answer if answer.problem is None else Answer(unknown, answer.problem)


def queue_depths(broker: dramatiq.Broker, queues: Iterable[str]) -> dict[str, int | None]:
    """`read_queue_depths` without the reason: None for every queue the broker did not say about."""
    queues = list(queues)
    return read_queue_depths(broker, queues).value or dict.fromkeys(queues)


def _depth_reader(broker: dramatiq.Broker, queues: list[str]) -> Callable[[], dict[str, int | None]] | None:
    kind = type(broker).__name__
    if kind == "StubBroker":
        return lambda: {q: _stub_depth(broker, q) for q in queues}
    if kind == "RedisBroker":
        return lambda: _redis_depths(broker, queues)
    if kind == "RabbitmqBroker":
        return lambda: _rabbitmq_depths(broker, queues)
    return None


def _stub_depth(broker: dramatiq.Broker, queue: str) -> int | None:
    q = broker.queues.get(queue)  # type: ignore[attr-defined]
    return None if q is None else int(q.qsize())


def _redis_depths(broker: dramatiq.Broker, queues: list[str]) -> dict[str, int | None]:
    pipe = broker.client.pipeline(transaction=False)  # type: ignore[attr-defined]
    for q in queues:
        pipe.llen(f"{broker.namespace}:{q}")  # type: ignore[attr-defined]
    return {q: int(n) for q, n in zip(queues, pipe.execute())}


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
