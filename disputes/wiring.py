"""The composition root: the database, the broker and the policy, built once from settings.

Every entry point — `disputes` commands, the Procfile's ``dramatiq
workers.stageN``, the API, the tests — starts from `build_app`. Tests pass
their own `Settings` (or broker, or policy) instead of patching internals.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable
from urllib.parse import urlparse

import dramatiq
import peewee
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import (AgeLimit, Callbacks, Pipelines, Retries, ShutdownNotifications,
                                 TimeLimit)
from playhouse.pool import PooledPostgresqlDatabase

from disputes.policy import Policy, load_policy
from disputes.settings import QUEUES, Settings, settings_from_env
from models.base import database, utcnow

log = logging.getLogger("disputes.wiring")


@dataclass
class App:
    """What a process needs to run any part of the system."""

    settings: Settings
    policy: Policy
    db: peewee.Database
    broker: dramatiq.Broker
    clock: Callable[[], datetime] = utcnow
    #: Actors declared on `broker`, by queue (filled by `workers.declare_all` or a stage module).
    actors: dict[str, dramatiq.Actor] = field(default_factory=dict)

    def kombu_connection(self):  # -> kombu.Connection
        """A new kombu connection to the intake/events transport (``OP_INTAKE_URL``)."""
        from kombu import Connection
        url = self.settings.intake_url
        if url.rstrip("/") == "memory:":
            url = "memory://localhost/"  # the same process-local transport, without kombu's hostname warning
        # RabbitMQ: a publish returns once the broker has it. memory://: poll often (default is 1 s).
        options = ({"confirm_publish": True} if url.startswith("amqp")
                   else {"polling_interval": 0.05} if url.startswith("memory") else {})
        return Connection(url, transport_options=options)


def connect_database(url: str) -> peewee.Database:
    """A peewee database for ``sqlite:///path`` or ``postgresql://...``, bound to the models."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = parsed.path[1:] if parsed.path.startswith("/") else parsed.path
        # BEGIN IMMEDIATE: a transaction that reads then writes takes the write lock up front, so two
        # writers queue on busy_timeout instead of failing to upgrade a read lock ("database is locked").
        db: peewee.Database = peewee.SqliteDatabase(path or ":memory:", lock_type="IMMEDIATE", pragmas={
            # WAL and a busy timeout: workers, scheduler and API write concurrently.
            "journal_mode": "wal", "busy_timeout": 15000, "foreign_keys": 1, "synchronous": "normal"})
    elif parsed.scheme in ("postgres", "postgresql"):
        db = PooledPostgresqlDatabase(
            parsed.path.lstrip("/") or "postgres", user=parsed.username or None, password=parsed.password or None,
            host=parsed.hostname or None, port=parsed.port or None, max_connections=64, stale_timeout=300,
            timeout=30,
            # A server that does not answer must fail a connection attempt (and /health) in seconds, and
            # a connection whose server vanished must be noticed, not waited on forever.
            connect_timeout=5, keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3)
    else:
        raise ValueError(f"OP_DATABASE_URL: unsupported scheme '{parsed.scheme}' (use sqlite:/// or postgresql://)")
    database.initialize(db)
    return db


def middleware() -> list[dramatiq.Middleware]:
    """dramatiq's default middleware, written out, with retries bounded: a handler that keeps
    failing is re-driven by the reconciler and then shown as dead, never retried for a month."""
    from workers.connections import DatabaseConnections
    from disputes.logs import LogContext  # first: binds ticket_id/stage/message_id before the others log
    return [LogContext(), AgeLimit(), TimeLimit(time_limit=120_000), ShutdownNotifications(), Callbacks(), Pipelines(),
            Retries(max_retries=5, min_backoff=200, max_backoff=30_000), DatabaseConnections()]


def make_broker(url: str) -> dramatiq.Broker:
    parsed = urlparse(url)
    if parsed.scheme in ("memory", "stub", ""):
        broker: dramatiq.Broker = StubBroker(middleware=middleware())
        broker.emit_after("process_boot")
    elif parsed.scheme in ("redis", "rediss"):
        from dramatiq.brokers.redis import RedisBroker
        broker = RedisBroker(url=url, middleware=middleware())
    elif parsed.scheme in ("amqp", "amqps"):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker
        broker = RabbitmqBroker(url=pika_url(url), middleware=middleware())
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
              broker: dramatiq.Broker | None = None) -> App:
    """Build the process's app. Raises `PolicyError` (listing every problem) for a bad policy."""
    settings = settings or settings_from_env()
    policy = policy or load_policy(settings.policy_path)
    db = connect_database(settings.database_url)
    broker = broker or make_broker(settings.broker_url)
    dramatiq.set_broker(broker)  # the dramatiq CLI asks get_broker() after importing a stage module
    return App(settings, policy, db, broker)


_process_app: App | None = None
_lock = threading.Lock()


def process_app() -> App:
    """The app of this process, built from the environment on first use (dramatiq CLI entry)."""
    global _process_app
    with _lock:
        if _process_app is None:
            _process_app = build_app()
        return _process_app


def install(app: App) -> App:
    """Make `app` the process's app (``disputes run``, tests) before stage modules are declared."""
    global _process_app
    with _lock:
        _process_app = app
    return app
