"""The database handle every model binds to, and the field types we share.

The handle is a proxy so that wiring (``disputes.wiring``) chooses SQLite or
PostgreSQL at start-up and tests swap it without touching the models.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, TypeVar

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
        if value.__class__ is datetime:  # what PostgreSQL's driver gives: no parsing to try
            return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        value = super().python_value(value)
        if isinstance(value, str):  # SQLite may hand back text in unusual formats
            value = datetime.fromisoformat(value)
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


#: JSON text as every JSON column stores it; one encoder for all (``json.dumps`` with options builds one per call).
dump_json = json.JSONEncoder(ensure_ascii=False, sort_keys=True).encode


class JSONField(peewee.TextField):
    """JSON as text: the same column type on SQLite and PostgreSQL."""

    def db_value(self, value: Any) -> str | None:
        return None if value is None else dump_json(value)

    def python_value(self, value: Any) -> Any:
        return None if value is None else json.loads(value)


M = TypeVar("M", bound=peewee.Model)

#: Fields whose ``db_value`` and ``python_value`` both hand a value of this exact type back unchanged
#: (peewee's ``adapt`` of a plain column is a conversion to it): such a value needs no call either way.
#: Subclasses (``JSONField`` is a ``TextField``) are not in here, so their own conversions always run.
_PLAIN_TYPES: dict[type, type] = {peewee.CharField: str, peewee.TextField: str, peewee.IntegerField: int,
                                  peewee.BigIntegerField: int, peewee.AutoField: int, peewee.BooleanField: bool}


def plain_type(field: peewee.Field) -> type | None:
    """The type whose values `field` stores and reads back as they are (`_PLAIN_TYPES`), or None."""
    if isinstance(field, peewee.ForeignKeyField):  # an id held in the row: the target key's own rule
        field = field.rel_field
    return _PLAIN_TYPES.get(type(field))


def build(model: type[M], **values: Any) -> M:
    """``model(**values)``, for the rows a hot path builds by the thousand (the intake: five per
    complaint): the same instance — defaults filled, every field dirty — with the values placed at
    once instead of through peewee's descriptor one field at a time (a ticket's 47 cost 20 µs)."""
    fields = model._meta.fields
    if not values.keys() <= fields.keys() or any(
            isinstance(values.get(fk.name), peewee.Model) for fk in model._meta.refs):
        return model(**values)  # not plain field values: peewee's own rules (an instance for a key)
    row = model.__new__(model)
    row.__data__ = data = model._meta.get_default_dict()
    data.update(values)
    row._dirty = set(data)
    row.__rel__ = {}
    return row


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False
