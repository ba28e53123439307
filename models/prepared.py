"""Statements the hot path runs for every change, compiled once instead of every time.

peewee builds the SQL text of a query anew each time it runs; for the 47-column
ticket that costs more than PostgreSQL takes to answer (README "Performance":
about 0.6 ms of Python per ``SELECT`` of a ticket, half the CPU of a change).
A `Prepared` statement is an ordinary peewee query whose varying values are
named slots; it is compiled once per kind of database and afterwards only its
parameters are bound. Rows still come back through peewee's own model code,
and values still go through each field's ``db_value``.
"""
from __future__ import annotations

import functools
import operator
from typing import Any, Callable, Iterator, TypeVar

import peewee

from models.base import database

M = TypeVar("M", bound=peewee.Model)


class _Slot:
    """A named hole in a compiled statement; `Prepared.bind` puts a value there."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class Slots:
    """``s.ticket_id`` in a statement's builder stands for the value bound at run time."""

    def __getattr__(self, name: str) -> peewee.Value:
        return peewee.Value(_Slot(name), converter=False)  # converter=False: compiled as a bare parameter


class Prepared:
    """A peewee query with named slots, compiled on first use for each kind of database it runs on."""

    def __init__(self, build: Callable[[Slots], peewee.Query]) -> None:
        self._build = build
        self._compiled: dict[type, tuple[str, list[Any], peewee.Query]] = {}

    def _compile(self) -> tuple[str, list[Any], peewee.Query]:
        key = type(database.obj)  # the SQL text depends on the dialect only (quoting, placeholders, RETURNING)
        compiled = self._compiled.get(key)
        if compiled is None:
            query = self._build(Slots())
            sql, params = query.sql()
            compiled = self._compiled[key] = (sql, params, query)
        return compiled

    def bind(self, **values: Any) -> tuple[str, list[Any]]:
        """The SQL text and its parameters with `values` in the slots (already in database form)."""
        sql, params, _ = self._compile()
        return sql, [values[p.name] if isinstance(p, _Slot) else p for p in params]

    def execute(self, **values: Any) -> Any:
        """Run it; returns the driver's cursor."""
        return database.execute_sql(*self.bind(**values))

    def rows(self, model: type[M], **values: Any) -> Iterator[M]:
        """Run a ``SELECT`` of `model`'s columns and yield model instances, as peewee would."""
        sql, params = self.bind(**values)
        return iter(model.raw(sql, *params))

    def first(self, model: type[M], **values: Any) -> M | None:
        return next(self.rows(model, **values), None)


# -- the common shapes: a row by id, a row inserted, rows updated by equality -------------------------

@functools.lru_cache(maxsize=None)
def _by_id(model: type[peewee.Model]) -> Prepared:
    return Prepared(lambda s: model.select().where(model._meta.primary_key == s.id))


def get_by_id(model: type[M], row_id: int) -> M | None:
    """``model.get_or_none(id=row_id)`` without compiling the ``SELECT`` again."""
    return _by_id(model).first(model, id=row_id)


@functools.lru_cache(maxsize=None)
def _insert(model: type[peewee.Model]) -> Prepared:
    fields = [f for f in model._meta.sorted_fields if not isinstance(f, peewee.AutoField)]

    def build(s: Slots) -> peewee.Query:
        query = model.insert({f: getattr(s, f.name) for f in fields})
        if database.obj.returning_clause:
            query = query.returning(model._meta.primary_key)
        return query
    return Prepared(build)


def insert_row(model: type[M], **values: Any) -> M:
    """``model.create(**values)`` (defaults filled as peewee fills them) without compiling the
    ``INSERT`` again; returns the instance with its new id."""
    return insert_instance(model(**values))


def insert_instance(row: M) -> M:
    """``row.save(force_insert=True)`` without compiling the ``INSERT`` again; sets the new id."""
    model = type(row)
    data = {f.name: f.db_value(row.__data__.get(f.name)) for f in model._meta.sorted_fields
            if not isinstance(f, peewee.AutoField)}
    cursor = _insert(model).execute(**data)
    pk = model._meta.primary_key
    setattr(row, pk.name, cursor.fetchone()[0] if database.obj.returning_clause else cursor.lastrowid)
    row._dirty.clear()
    return row


@functools.lru_cache(maxsize=4096)
def _update(model: type[peewee.Model], columns: tuple[str, ...], keys: tuple[str, ...]) -> Prepared:
    def build(s: Slots) -> peewee.Query:
        where = functools.reduce(operator.and_, [getattr(model, k) == getattr(s, f"where_{k}") for k in keys])
        return model.update({getattr(model, c): getattr(s, c) for c in columns}).where(where)
    return Prepared(build)


def update_where(model: type[peewee.Model], values: dict[str, Any], **equal: Any) -> int:
    """``UPDATE model SET values WHERE column = value AND …``; returns the rows changed. The statement
    is compiled once per set of column names."""
    fields = model._meta.fields
    bound = {c: fields[c].db_value(v) for c, v in values.items()}
    bound.update({f"where_{k}": fields[k].db_value(v) for k, v in equal.items()})
    cursor = _update(model, tuple(sorted(values)), tuple(sorted(equal))).execute(**bound)
    return cursor.rowcount


__all__ = ["Prepared", "Slots", "get_by_id", "insert_instance", "insert_row", "update_where"]
