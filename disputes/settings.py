"""Defaults and the environment variables of SPEC §8, read in one place."""
from __future__ import annotations

import hashlib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from urllib.parse import urlparse

#: The embedded default: a SQLite file in the working directory.
DEFAULT_DATABASE_URL = "sqlite:///disputes.db"
#: The embedded default broker: dramatiq's in-process broker.
DEFAULT_BROKER_URL = "memory://"
#: kombu's process-local transport: upstream and downstream share the process.
DEFAULT_INTAKE_URL = "memory://"
DEFAULT_API_HOST = "127.0.0.1"
DEFAULT_API_PORT = 8080
#: The exchanges of SPEC §4 and §5.
INTAKE_EXCHANGE = "op.intake"
EVENTS_EXCHANGE = "op.events"
#: The durable queue the intake consumer reads, bound to ``op.intake`` with ``#`` (``NS.disputes.intake``
#: under an ``OP_NAMESPACE``).
INTAKE_QUEUE = "disputes.intake"
#: No namespace: the names of SPEC §4 as they are. ``OP_NAMESPACE=staging`` prefixes every name this
#: deployment owns on a shared broker with ``staging.`` (the intake queue, the Redis keys of the stage queues).
DEFAULT_NAMESPACE = ""
#: What a namespace may be: a letter or digit, then letters, digits, ``_`` or ``-`` (no ``.``, no ``:``, so
#: the prefix stays unambiguous in RabbitMQ queue names and Redis keys).
NAMESPACE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
#: dramatiq's own prefix of the Redis keys of its queues (``dramatiq:stage2``).
REDIS_NAMESPACE = "dramatiq"
#: Our dramatiq queues: one per stage, plus the negotiation phase's timers and notification delivery.
QUEUES = ("negotiation", "stage1", "stage2", "stage3", "stage4", "notify")
#: Backoff between tries of a notification delivery (dramatiq Retries, doubling with jitter). The cap stays
#: below REDRIVE_AFTER_SECONDS: each failed try refreshes the notification's last_attempt_at, so the
#: reconciler never starts a second chain of tries beside one that is backing off.
NOTIFY_MIN_BACKOFF_MS = 1_000
NOTIFY_MAX_BACKOFF_MS = 20_000
#: A dispatch sent this long ago and still not done is sent again by the reconciler.
REDRIVE_AFTER_SECONDS = 30.0
#: After this many failed tries (a worker ran it and its handler raised) a dispatch is declared dead
#: (visible in `disputes ticket show`); waiting to be run never counts.
MAX_DISPATCH_ATTEMPTS = 10
#: A dispatch never sent (its sender died after commit) is sent by the relay after this long.
UNSENT_GRACE_SECONDS = 2.0


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str = DEFAULT_BROKER_URL
    intake_url: str = DEFAULT_INTAKE_URL
    policy_path: str | None = None
    api_host: str = DEFAULT_API_HOST
    api_port: int = DEFAULT_API_PORT
    redrive_after: float = REDRIVE_AFTER_SECONDS
    unsent_grace: float = UNSENT_GRACE_SECONDS
    namespace: str = DEFAULT_NAMESPACE
    #: Hot statements prepared on the PostgreSQL server (off behind a transaction-pooling PgBouncer).
    prepared_statements: bool = True

    def __post_init__(self) -> None:
        if self.namespace and not NAMESPACE_PATTERN.fullmatch(self.namespace):
            raise ValueError(f"OP_NAMESPACE: {self.namespace!r} is not a namespace (letters, digits, '_' and '-', "
                             f"at most 63, starting with a letter or digit)")

    @property
    def embedded(self) -> bool:
        """Everything in one process: the in-process broker and kombu's memory transport."""
        return self.broker_url.startswith("memory") or self.intake_url.startswith("memory")

    @property
    def intake_queue(self) -> str:
        """The intake's queue on ``OP_INTAKE_URL``: ``disputes.intake``, or ``NS.disputes.intake``."""
        return namespaced(INTAKE_QUEUE, self.namespace)

    @property
    def redis_namespace(self) -> str:
        """The prefix of the stage queues' Redis keys: ``dramatiq``, or ``NS.dramatiq``."""
        return namespaced(REDIS_NAMESPACE, self.namespace)


def namespaced(name: str, namespace: str) -> str:
    """`name` as a deployment in `namespace` calls it on a shared broker."""
    return f"{namespace}.{name}" if namespace else name


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    return Settings(
        database_url=env.get("OP_DATABASE_URL") or DEFAULT_DATABASE_URL,
        broker_url=env.get("OP_BROKER_URL") or DEFAULT_BROKER_URL,
        intake_url=env.get("OP_INTAKE_URL") or DEFAULT_INTAKE_URL,
        policy_path=env.get("OP_POLICY") or None,
        api_host=env.get("OP_API_HOST") or DEFAULT_API_HOST,
        api_port=int(env.get("OP_API_PORT") or DEFAULT_API_PORT),
        # Operational knobs beyond SPEC §8, for SREs (and tests that kill workers on purpose).
        redrive_after=float(env.get("OP_REDRIVE_AFTER") or REDRIVE_AFTER_SECONDS),
        unsent_grace=float(env.get("OP_UNSENT_GRACE") or UNSENT_GRACE_SECONDS),
        # Several deployments on one broker (a vhost, a Redis db) keep apart by their namespace.
        namespace=(env.get("OP_NAMESPACE") or DEFAULT_NAMESPACE).strip(),
        # PREPARE/EXECUTE lives on one server connection: a pooler that moves transactions between
        # connections (PgBouncer's transaction mode) needs it off.
        prepared_statements=(env.get("OP_PG_PREPARED") or "on").strip().lower() not in ("off", "0", "false", "no"),
    )


#: Hosts that name the machine itself: the same address on two machines is two databases.
_LOCAL_HOSTS = ("", "localhost", "127.0.0.1", "::1", "[::1]")


def database_label(url: str) -> str:
    """The database `url` names, with neither user nor password: what a person may read in a log or a
    warning (``postgresql://db-host:5432/disputes``, ``sqlite:////srv/disputes.db``). A database on
    the machine itself (a SQLite file, a loopback or socket address) is named with the machine's name."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = parsed.path.removeprefix("/")
        where = str(Path(path).resolve()) if path and path != ":memory:" else ":memory:"
        return f"sqlite:///{where} on {socket.gethostname()}"
    scheme = "postgresql" if parsed.scheme in ("postgres", "postgresql") else parsed.scheme
    host = (parsed.hostname or "").lower()
    local = host in _LOCAL_HOSTS
    port = parsed.port or (5432 if scheme == "postgresql" else None)
    label = f"{scheme}://{'localhost' if local else host}{f':{port}' if port else ''}/{parsed.path.lstrip('/')}"
    return f"{label} on {socket.gethostname()}" if local else label


def database_fingerprint(url: str) -> str:
    """A short digest of `database_label`: the same for every process of one deployment however its URL
    spells user and password, different for another database. Brokers see it, never the URL."""
    return hashlib.sha256(database_label(url).encode("utf-8")).hexdigest()[:16]
