"""Defaults and the environment variables of SPEC §8, read in one place."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

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
#: The durable queue the intake consumer reads, bound to ``op.intake`` with ``#``.
INTAKE_QUEUE = "disputes.intake"
#: Our dramatiq queues: one per stage, plus the negotiation phase's timers and notification delivery.
QUEUES = ("negotiation", "stage1", "stage2", "stage3", "stage4", "notify")
#: Backoff between tries of a notification delivery (dramatiq Retries, doubling with jitter). The cap stays
#: below REDRIVE_AFTER_SECONDS: each failed try refreshes the notification's last_attempt_at, so the
#: reconciler never starts a second chain of tries beside one that is backing off.
NOTIFY_MIN_BACKOFF_MS = 1_000
NOTIFY_MAX_BACKOFF_MS = 20_000
#: A dispatch sent this long ago and still not done is sent again by the reconciler.
REDRIVE_AFTER_SECONDS = 30.0
#: After this many sends a dispatch is declared dead (visible in `disputes ticket show`).
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

    @property
    def embedded(self) -> bool:
        """Everything in one process: the in-process broker and kombu's memory transport."""
        return self.broker_url.startswith("memory") or self.intake_url.startswith("memory")


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
    )
