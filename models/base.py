"""The database handle every model binds to, and the field types we share.

The handle is a proxy so that wiring (``disputes.wiring``) chooses SQLite or
PostgreSQL at start-up and tests swap it without touching the models.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import peewee

#: Bound by ``disputes.wiring.connect_database``; every model uses it.
database = peewee.DatabaseProxy()
#: What peewee raises when the database cannot be reached or dropped the connection (as opposed to
#: a statement it refused): a process waits for such a database and retries, and says so once.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (peewee.OperationalError, peewee.InterfaceError)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (every stored time is UTC)."""
    return datetime.now(timezone.utc)


class UtcDateTimeField(peewee.DateTimeField):
    """Stores UTC as naive (portable across SQLite and PostgreSQL), reads back aware UTC."""

    def db_value(self, value: datetime | None) -> Any:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return super().db_value(value)

    def python_value(self, value: Any) -> datetime | None:
        value = super().python_value(value)
        if isinstance(value, str):  # SQLite may hand back text in unusual formats
            value = datetime.fromisoformat(value)
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class JSONField(peewee.TextField):
    """JSON as text: the same column type on SQLite and PostgreSQL."""

    def db_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)

    def python_value(self, value: Any) -> Any:
        return None if value is None else json.loads(value)


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False
