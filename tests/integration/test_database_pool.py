"""The PostgreSQL pool hands a recently returned connection out without a ``SELECT 1`` and still
never gives the caller a connection the server has closed."""
from __future__ import annotations

import peewee
import psycopg2
import pytest

from disputes.database_pool import PostgresPool
from tests.integration.conftest import PG_DSN, fresh_pg_database

DATABASE = "disputes_pool_test"


@pytest.fixture
def pool():
    fresh_pg_database(DATABASE)
    db = PostgresPool(DATABASE, user="root", host="127.0.0.1", port=5432, max_connections=4)
    yield db
    db.close_all()


def backend_pid(db: PostgresPool) -> int:
    with db.connection_context():
        return db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]


def terminate(pid: int) -> None:
    conn = psycopg2.connect(PG_DSN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
    conn.close()


def test_a_connection_back_in_the_pool_a_moment_ago_is_reused_without_a_ping(pool, monkeypatch) -> None:
    checks: list[object] = []
    monkeypatch.setattr(pool._adapter, "is_connection_closed", lambda conn: checks.append(conn) or False)
    first = backend_pid(pool)
    assert backend_pid(pool) == first
    assert checks == [], "a connection returned under ping_after seconds ago was pinged"

    pool.ping_after = 0.0
    assert backend_pid(pool) == first
    assert len(checks) == 1, "a connection idle longer than ping_after was handed out unpinged"


def test_a_pooled_connection_killed_by_the_server_is_replaced_before_the_caller_sees_it(pool) -> None:
    old = backend_pid(pool)
    terminate(old)

    with pool.atomic():  # BEGIN is the first statement on the dead connection
        pool.execute_sql("CREATE TABLE t (x int)")
        pool.execute_sql("INSERT INTO t VALUES (1)")
    with pool.connection_context():
        assert pool.execute_sql("SELECT count(*) FROM t").fetchone()[0] == 1
    assert backend_pid(pool) != old

    terminate(backend_pid(pool))
    with pool.connection_context():  # outside a transaction: the query itself is first
        assert pool.execute_sql("SELECT count(*) FROM t").fetchone()[0] == 1


def test_a_connection_killed_mid_transaction_still_fails_the_transaction(pool) -> None:
    """Only a statement that is the first on its checkout is retried: once something ran, the
    transaction is lost with the connection and the caller must hear so (the handler retries)."""
    with pytest.raises(Exception) as raised:
        with pool.atomic():
            pid = pool.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
            terminate(pid)
            pool.execute_sql("SELECT 1")
    assert "terminat" in str(raised.value).lower() or "closed" in str(raised.value).lower()
    pool.close()  # as every message and request ends
    with pool.connection_context():
        assert pool.execute_sql("SELECT 1").fetchone()[0] == 1


def test_when_the_server_also_refuses_the_replacement_the_caller_gets_peewees_error(pool) -> None:
    """A restart kills the pooled connection and refuses new ones for a moment: the caller sees
    peewee's OperationalError (the API answers 503 for it), not the driver's (seen in the network
    soak: psycopg2's error escaped and the API answered 500, the scheduler logged a crash)."""
    from tools.bench.private_servers import free_port

    port = pool.connect_params["port"]
    terminate(backend_pid(pool))
    pool.connect_params["port"] = free_port()  # the server is gone: nothing listens there
    with pytest.raises(peewee.OperationalError), pool.atomic():
        pool.execute_sql("SELECT 1")
    pool.connect_params["port"] = port  # back: this thread's next statement works, nothing stale left
    assert pool.execute_sql("SELECT 1").fetchone() == (1,)
    pool.close()

    terminate(backend_pid(pool))
    pool.connect_params["port"] = free_port()
    with pytest.raises(peewee.OperationalError), pool.connection_context():
        pool.execute_sql("SELECT 1")
