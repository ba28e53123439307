"""The composition root: the database, the broker and the policy, built once from settings.

Every entry point — `disputes` commands, the Procfile's ``dramatiq
workers.stageN`` (`workers.entry`), the API, the tests — starts from
`build_app`. Tests pass their own `Settings` (or broker, or policy) instead of
patching internals. The composition root sits under the workers, the
scheduler and the desk, which receive the `App` it builds.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable
from urllib.parse import urlparse

import dramatiq
import peewee
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from kombu import Connection

from disputes.database_pool import PostgresPool
from disputes.middleware import default_middleware
from disputes.settings import QUEUES, REDIS_NAMESPACE, Settings, settings_from_env
from models.base import database, utcnow
from policy import Policy, load_policy

log = logging.getLogger("disputes.wiring")

#: How every PostgreSQL connection notices a server that does not answer, so that workers, scheduler and
#: API fail over to a fresh connection (and ``/health`` reports it) instead of waiting on it for ever:
#: - connect_timeout: a server that accepts nothing (or never completes the handshake) fails the attempt
#:   in 5 s, not the kernel's two minutes of SYN retries;
#: - keepalives: an idle pooled connection whose server vanished (a failover, a dead host, a NAT that
#:   forgot it) is found dead after 30 s idle + 3 unanswered probes 10 s apart, not when the kernel's
#:   two-hour default would;
#: - tcp_user_timeout: a connection with a statement on the wire whose packets are silently dropped
#:   (keepalives only probe idle connections) fails after 60 s instead of ~15 minutes of retransmits. It
#:   counts only unacknowledged data, so a slow query on a live server is never cut short.
POSTGRES_CONNECTION = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                       "keepalives_count": 3, "tcp_user_timeout": 60_000}
#: The same for the Redis broker's connections (older redis-py releases wait for ever by default). No command we
#: send blocks on the server (dramatiq polls its queues with short scripts, never BLPOP), so a reply 5 s
#: late means the server is hung; a connection idle for 30 s is PINGed before it is used again, so one
#: the server or a firewall dropped silently is replaced rather than written into. Options in
#: ``OP_BROKER_URL``'s query string (``?socket_timeout=10``) override these.
REDIS_CONNECTION = {"socket_connect_timeout": 3, "socket_timeout": 5, "socket_keepalive": True,
                    "health_check_interval": 30}


@dataclass
class App:
    """What a process needs to run any part of the system."""

    settings: Settings
    policy: Policy
    db: peewee.Database
    broker: dramatiq.Broker
    clock: Callable[[], datetime] = utcnow
    #: Actors declared on `broker`, by queue (filled by `workers.declare`).
    actors: dict[str, dramatiq.Actor] = field(default_factory=dict)

    def kombu_connection(self) -> Connection:
        """A new kombu connection to the intake/events transport (``OP_INTAKE_URL``)."""
        url = self.settings.intake_url
        if url.rstrip("/") == "memory:":
            url = "memory://localhost/"  # the same process-local transport, without kombu's hostname warning
        # RabbitMQ: a publish returns once the broker has it. memory://: poll often (default is 1 s).
        options = ({"confirm_publish": True} if url.startswith("amqp")
                   else {"polling_interval": 0.05} if url.startswith("memory") else {})
        return Connection(url, transport_options=options)


def connect_database(url: str, *, prepared_statements: bool = True) -> peewee.Database:
    """A peewee database for ``sqlite:///path`` or ``postgresql://...``, bound to the models; on
    PostgreSQL the hot statements are prepared on the server unless `prepared_statements` is off."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = parsed.path[1:] if parsed.path.startswith("/") else parsed.path
        # BEGIN IMMEDIATE: a transaction that reads then writes takes the write lock up front, so two
        # writers queue on busy_timeout instead of failing to upgrade a read lock ("database is locked").
        db: peewee.Database = peewee.SqliteDatabase(path or ":memory:", lock_type="IMMEDIATE", pragmas={
            # WAL and a busy timeout: workers, scheduler and API write concurrently.
            "journal_mode": "wal", "busy_timeout": 15000, "foreign_keys": 1, "synchronous": "normal"})
    elif parsed.scheme in ("postgres", "postgresql"):
        db = PostgresPool(
            parsed.path.lstrip("/") or "postgres", user=parsed.username or None, password=parsed.password or None,
            host=parsed.hostname or None, port=parsed.port or None, max_connections=64, stale_timeout=300,
            timeout=30, **POSTGRES_CONNECTION)
        db.prepared_statements = prepared_statements  # read by models.prepared
    else:
        raise ValueError(f"OP_DATABASE_URL: unsupported scheme '{parsed.scheme}' (use sqlite:/// or postgresql://)")
    database.initialize(db)
    return db


def make_broker(url: str, *, adopt_log_handlers: bool = False,
                redis_namespace: str = REDIS_NAMESPACE) -> dramatiq.Broker:
    """The dramatiq broker for ``OP_BROKER_URL``, with our middleware and every queue declared. On Redis
    its keys begin with `redis_namespace` (``Settings.redis_namespace``: ``OP_NAMESPACE``), so deployments
    sharing a Redis db keep their stage queues apart; RabbitMQ keeps them apart by vhost (the queue names
    are the Procfile's ``--queues``)."""
    parsed = urlparse(url)
    middleware = default_middleware(adopt_log_handlers=adopt_log_handlers)
    if parsed.scheme in ("memory", "stub", ""):
        broker: dramatiq.Broker = StubBroker(middleware=middleware)
        broker.emit_after("process_boot")
    elif parsed.scheme in ("redis", "rediss"):
        broker = RedisBroker(middleware=middleware, namespace=redis_namespace,
                             connection_pool=redis.ConnectionPool.from_url(url, **REDIS_CONNECTION))
    elif parsed.scheme in ("amqp", "amqps"):
        broker = RabbitmqBroker(url=pika_url(url), middleware=middleware)
    else:
        raise ValueError(f"OP_BROKER_URL: unsupported scheme '{parsed.scheme}' (use redis://, amqp:// or memory://)")
    for queue in QUEUES:
        broker.declare_queue(queue)
    return broker


def pika_url(url: str) -> str:
    """kombu writes the default vhost as ``amqp://host//``; pika wants ``amqp://host/%2F``.
    Accept both, so OP_BROKER_URL and OP_INTAKE_URL can be the same string."""
    parsed = urlparse(url)
    return parsed._replace(path="/%2F").geturl() if parsed.path == "//" else url


def build_app(settings: Settings | None = None, *, policy: Policy | None = None,
              broker: dramatiq.Broker | None = None, adopt_log_handlers: bool = False) -> App:
    """Build the process's app. Raises `PolicyError` (listing every problem) for a bad policy.
    `adopt_log_handlers`: a process the ``dramatiq`` command started formats its log lines our way."""
    settings = settings or settings_from_env()
    policy = policy or load_policy(settings.policy_path)
    db = connect_database(settings.database_url, prepared_statements=settings.prepared_statements)
    broker = broker or make_broker(settings.broker_url, adopt_log_handlers=adopt_log_handlers,
                                   redis_namespace=settings.redis_namespace)
    return App(settings, policy, db, broker)
