"""Database connections for dramatiq worker threads: one per message, never held across messages.

peewee keeps one connection per thread; a worker thread takes a connection
(from the pool on PostgreSQL) for each message and gives it back after, so a
connection is never held across messages nor shared across a fork.
"""
from __future__ import annotations

import contextlib

import dramatiq

from models.base import DATABASE_UNAVAILABLE, database


class DatabaseConnections(dramatiq.Middleware):
    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        # A database away fails the actor's first statement instead, where the stage worker tells
        # the outage once and has dramatiq retry (a failing middleware is logged per message).
        with contextlib.suppress(*DATABASE_UNAVAILABLE):
            database.connect(reuse_if_open=True)

    def after_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message, *,
                              result: object = None, exception: BaseException | None = None) -> None:
        if not database.is_closed() and not database.in_transaction():
            database.close()

    after_skip_message = after_process_message
