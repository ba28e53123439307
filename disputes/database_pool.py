"""PostgreSQL connection pool: peewee's, minus a round trip per checkout.

peewee pings (``SELECT 1``) every pooled connection it hands out. A worker
takes one per message, so the ping was a third of a state change's
statements. Here a connection given back less than `PostgresPool.ping_after`
seconds ago is handed out unpinged; one idle longer is pinged as before.

An unpinged connection may have died meanwhile (a failover, a restart,
``pg_terminate_backend``). Its first statement then fails before anything ran
on it in this checkout, so that statement — ``BEGIN`` or a query — is retried
once on a fresh connection, and every other pooled connection is pinged at its
next checkout: the caller never sees the dead connection, as with the ping.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, TypeVar

import peewee
from playhouse.pool import PooledPostgresqlDatabase

T = TypeVar("T")


class PostgresPool(PooledPostgresqlDatabase):
    ping_after = 1.0
    #: `models.prepared` prepares its statements on the server (``OP_PG_PREPARED``; off behind a pooler
    #: that moves transactions between server connections).
    prepared_statements = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._returned: dict[int, float] = {}
        self._unpinged = threading.local()  # .conn: the connection this thread got without a ping

    def _is_closed(self, conn: Any) -> bool:
        if conn.closed:
            return True
        returned = self._returned.get(self.conn_key(conn))
        if returned is not None and time.monotonic() - returned < self.ping_after:
            self._unpinged.conn = conn
            return False
        return bool(super()._is_closed(conn))

    def _close(self, conn: Any, close_conn: bool = False) -> None:
        key = self.conn_key(conn)
        super()._close(conn, close_conn)
        if close_conn or conn.closed:
            self._returned.pop(key, None)
        else:
            self._returned[key] = time.monotonic()

    def begin(self, *args: Any, **kwargs: Any) -> None:
        self._first_statement(lambda: super(PostgresPool, self).begin(*args, **kwargs))

    def _execute_cursor(self, sql: str, params: Any, **cursor_options: Any) -> Any:
        return self._first_statement(lambda: super(PostgresPool, self)._execute_cursor(sql, params, **cursor_options))

    def _first_statement(self, run: Callable[[], T]) -> T:
        if self.is_closed() and self.autoconnect:
            self.connect()  # as the statement itself would, so that the checkout can be told apart
        conn = self._state.conn
        if conn is None or getattr(self._unpinged, "conn", None) is not conn:
            return run()
        self._unpinged.conn = None
        try:
            return run()
        except (peewee.OperationalError, peewee.InterfaceError):
            if not conn.closed:
                raise  # a live connection refused the statement: the caller's error, not the pool's
        self._replace_dead(conn)
        return run()

    def _replace_dead(self, conn: Any) -> None:
        # Whatever killed this connection likely killed its siblings: ping them all again.
        self._returned.clear()
        self._close(conn, close_conn=True)
        # Keep the thread's transaction stack: nothing ran on the dead connection in this checkout.
        # A server that refuses the new one (restarting, unreachable) is peewee's OperationalError,
        # as any other connect: the caller's outage handling (the API's 503) must recognise it.
        try:
            with peewee.__exception_wrapper__:
                self._state.conn = self._connect()
        except peewee.DatabaseError:
            # No connection now rather than the dead one: the thread's next statement connects afresh.
            self._state.conn, self._state.closed = None, True
            raise
