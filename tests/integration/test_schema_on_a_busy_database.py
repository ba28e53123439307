"""Found by the chaos soak (``disputes bench chaos``, seed 3): a process restarted while the system
is busy must start. Every command creates the schema if needed (`models.init_schema`); on an
up-to-date PostgreSQL schema that used to run ``CREATE INDEX IF NOT EXISTS`` for every table in one
transaction, which takes a SHARE lock on each table — so a restarted ``disputes api`` waited
behind the workers' open transactions and blocked every writer while it did (and died of
``deadlock detected`` when a worker's transaction locked two tables in the other order)."""
from __future__ import annotations

import threading
import time

import psycopg2
import pytest

from policy import load_policy
from tests.integration.conftest import fresh_pg_database, make_app

pytestmark = pytest.mark.servers


def test_starting_on_an_up_to_date_schema_takes_no_table_lock_while_writers_are_busy() -> None:
    url = fresh_pg_database("disputes_busy_schema_test")
    app = make_app(url, load_policy(None))  # creates the schema: it is up to date from here on
    app.db.close_all()
    writer = psycopg2.connect(url)  # a worker in the middle of a change: rows written, not committed
    try:
        with writer.cursor() as cur:
            cur.execute("INSERT INTO lease (name, holder, expires_at) VALUES ('busy', 'w', now())")
            cur.execute("UPDATE ticket SET version = version WHERE id = -1")
        from models import init_schema
        outcome: dict[str, object] = {}

        def start() -> None:
            started = time.monotonic()
            try:
                with app.db.connection_context():
                    app.db.execute_sql("SET lock_timeout = '3s'")
                    outcome["version"] = init_schema()
            except Exception as error:  # noqa: BLE001 - the assertion below shows it
                outcome["error"] = error
            outcome["seconds"] = time.monotonic() - started

        thread = threading.Thread(target=start)
        thread.start()
        thread.join(timeout=10)
        assert "error" not in outcome, f"a process starting beside a busy writer failed: {outcome['error']!r}"
        assert outcome["seconds"] < 2.0, outcome
    finally:
        writer.rollback()
        writer.close()
        app.db.close_all()
