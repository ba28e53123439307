"""dramatiq middleware of every worker process, one concern a module, as dramatiq itself arranges them.

`default_middleware` writes the list out in order: the log context first (so
that it binds before the others log and unbinds after them), dramatiq's own
defaults with retries bounded, and database connections last.
"""
from __future__ import annotations

import dramatiq
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, ShutdownNotifications, TimeLimit

from disputes.middleware.database_connections import DatabaseConnections
from disputes.middleware.log_context import LogContext

#: A handler that keeps failing is retried this often, then re-driven by the reconciler and shown as
#: dead — never retried for a month (dramatiq's defaults: 20 retries, backoff up to 7 days).
MAX_RETRIES = 5
MIN_BACKOFF_MS = 200
MAX_BACKOFF_MS = 30_000
#: No handler holds a ticket's message longer than this.
TIME_LIMIT_MS = 120_000


def default_middleware(*, adopt_log_handlers: bool = False) -> list[dramatiq.Middleware]:
    """The middleware of a broker of ours; `adopt_log_handlers` in processes the dramatiq CLI started."""
    return [LogContext(adopt_handlers=adopt_log_handlers), AgeLimit(), TimeLimit(time_limit=TIME_LIMIT_MS),
            ShutdownNotifications(), Callbacks(), Pipelines(),
            Retries(max_retries=MAX_RETRIES, min_backoff=MIN_BACKOFF_MS, max_backoff=MAX_BACKOFF_MS),
            DatabaseConnections()]


__all__ = ["DatabaseConnections", "LogContext", "default_middleware"]
