"""Integration tests on the real servers: PostgreSQL, Redis, RabbitMQ.

They skip when a server is unreachable, unless ``OP_REQUIRE_SERVERS=1`` (CI),
where an unreachable server fails the run. Each test gets its own PostgreSQL
database (created here), its own Redis db number and uniquely named queues.
"""
from __future__ import annotations

import os
import socket
import uuid
from typing import Iterator

import psycopg2
import pytest

from policy import default_policy_dict, policy_from_dict
from disputes.settings import Settings
from disputes.wiring import App, build_app

PG_DSN = "host=127.0.0.1 port=5432 user=root dbname=test"
PG_DATABASE = "disputes_integration"
REDIS_URL = "redis://127.0.0.1:6379/7"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"

pytestmark = pytest.mark.servers


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def need(port: int, name: str) -> None:
    if not reachable(port):
        if os.environ.get("OP_REQUIRE_SERVERS") == "1":
            pytest.fail(f"{name} on 127.0.0.1:{port} is unreachable and OP_REQUIRE_SERVERS=1")
        pytest.skip(f"{name} on 127.0.0.1:{port} is unreachable")


@pytest.fixture
def fast_policy():
    data = default_policy_dict()
    data["deadlines"] = {k: "1s" for k in data["deadlines"]}  # type: ignore[index]
    return policy_from_dict(data)


def fresh_pg_database(name: str) -> str:
    """Drop and create the PostgreSQL database `name` (skipping when the server is unreachable);
    returns its URL."""
    need(5432, "PostgreSQL")
    conn = psycopg2.connect(PG_DSN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    return f"postgresql://root@127.0.0.1:5432/{name}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test."""
    yield fresh_pg_database(PG_DATABASE)


@pytest.fixture
def redis_url() -> str:
    need(6379, "Redis")
    import redis
    redis.Redis.from_url(REDIS_URL).flushdb()
    return REDIS_URL


@pytest.fixture
def amqp_url() -> str:
    need(5672, "RabbitMQ")
    return AMQP_URL


def make_app(database_url: str, policy, broker_url: str = "memory://", intake_url: str = "memory://") -> App:
    from models import init_schema
    app = build_app(Settings(database_url=database_url, broker_url=broker_url, intake_url=intake_url,
                             redrive_after=2.0, unsent_grace=0.5), policy=policy)
    with app.db.connection_context():
        init_schema()
    return app


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
