"""Statements the hot path runs for every change, compiled once instead of every time.

peewee builds the SQL text of a query anew each time it runs; for the 47-column
ticket that costs more than PostgreSQL takes to answer (README "Performance":
about 0.6 ms of Python per ``SELECT`` of a ticket, half the CPU of a change).
A `Prepared` statement is an ordinary peewee query whose varying values are
named slots; it is compiled once per kind of database and afterwards only its
parameters are bound. Rows still come back through peewee's own model code,
and values still go through each field's ``db_value``.

On PostgreSQL a `Prepared` statement is also prepared on the server
(``PREPARE``/``EXECUTE``), once per connection: the server then skips parsing
and planning it again, a third of its CPU for the claim's candidate query
(163 → 113 µs measured). SQLite needs no such step: its driver keeps a cache of
prepared statements per connection itself.
"""
from __future__ import annotations

import functools
import itertools
import json
import operator
import re
import weakref
from typing import Any, Callable, Iterator, TypeVar

import peewee

from models.base import database, plain_type

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


#: Names of the statements prepared on the server, so far, per PostgreSQL connection.
_PREPARED_ON: "weakref.WeakKeyDictionary[Any, set[str]]" = weakref.WeakKeyDictionary()
_NAMES = itertools.count(1)
#: The SQL behind each name (`sql_of`: what a log of ``EXECUTE disputes_7(…)`` stands for).
_TEXT: dict[str, str] = {}
_EXECUTE = re.compile(r"EXECUTE (disputes_\d+)\b")
_PLACEHOLDER = re.compile(r"%s|%%")
#: SQLSTATE invalid_sql_statement_name: ``EXECUTE`` of a name this connection never prepared.
UNKNOWN_STATEMENT = "26000"


def _numbered(sql: str) -> str:
    """psycopg2's ``%s`` placeholders as the server's ``$1, $2…`` (and ``%%`` as ``%``)."""
    numbers = itertools.count(1)
    return _PLACEHOLDER.sub(lambda m: f"${next(numbers)}" if m.group() == "%s" else "%", sql)


class Prepared:
    """A peewee query with named slots, compiled on first use for each kind of database it runs on."""

    def __init__(self, build: Callable[[Slots], peewee.Query], *, server_side: bool = True) -> None:
        """`server_side=False`: never prepared on the server, so planned anew for each run's values —
        for a statement whose best plan depends on them (a `one_of` list: PostgreSQL hashes a list it
        is given, but searches a generic plan's parameter array from the start for every row)."""
        self._build = build
        self._compiled: dict[type, tuple[str, list[Any], peewee.Query]] = {}
        self._name = f"disputes_{next(_NAMES)}"
        self._server_side = server_side

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
        sql, params = self.bind(**values)
        try:
            return database.execute_sql(*self._statement(sql, params))
        except peewee.DatabaseError as error:
            # The server does not know the statement: the pool replaced a dead connection at this, its
            # first statement, with a new one. Outside a transaction nothing is lost: prepare it there.
            if getattr(getattr(error, "orig", None), "pgcode", None) != UNKNOWN_STATEMENT \
                    or database.in_transaction():
                raise
            _PREPARED_ON.pop(database.connection(), None)
            return database.execute_sql(*self._statement(sql, params))

    def rows(self, model: type[M], **values: Any) -> Iterator[M]:
        """Run a ``SELECT`` of `model`'s columns and yield model instances, as peewee's ``raw`` would
        (a column that is no field of `model` becomes a plain attribute)."""
        cursor = self.execute(**values)
        decode = _decoder(model, tuple(column[0] for column in cursor.description))
        return map(decode, cursor.fetchall())

    def _statement(self, sql: str, params: list[Any]) -> tuple[str, list[Any]]:
        """What to send for `sql`: on PostgreSQL ``EXECUTE`` of the statement prepared on this
        connection (preparing it there first if need be)."""
        if not self._server_side or not isinstance(database.obj, peewee.PostgresqlDatabase) \
                or not getattr(database.obj, "prepared_statements", True):  # OP_PG_PREPARED=off
            return sql, params
        if database.is_closed():
            database.connect()
        prepared = _PREPARED_ON.setdefault(database.connection(), set())
        if self._name not in prepared:
            _TEXT[self._name] = sql
            database.execute_sql(f"PREPARE {self._name} AS {_numbered(sql)}")
            # The connection the PREPARE ran on (the pool replaces one found dead at its first statement).
            _PREPARED_ON.setdefault(database.connection(), set()).add(self._name)
        if not params:
            return f"EXECUTE {self._name}", params
        return f"EXECUTE {self._name}({', '.join(['%s'] * len(params))})", params

    def first(self, model: type[M], **values: Any) -> M | None:
        return next(self.rows(model, **values), None)


@functools.lru_cache(maxsize=1024)
def _decoder(model: type[M], columns: tuple[str, ...]) -> Callable[[tuple], M]:
    """Row → instance of `model`, resolved once per shape of result (peewee resolves the columns
    against the model for every query it runs: 70 µs for the ticket, more than decoding its rows)."""
    combined = model._meta.combined
    fields: list[tuple[int, str, type | None, Callable[[Any], Any]]] = []
    extras: list[tuple[int, str]] = []
    for index, column in enumerate(columns):
        name = column[column.rfind(".") + 1:].strip('()"`')  # as peewee cleans a column's name
        field = combined.get(name)
        if field is None:
            extras.append((index, name))
        else:
            fields.append((index, field.name, plain_type(field), field.python_value))

    def decode(row: tuple) -> M:
        instance = model(__no_default__=1)
        # A text or integer column's value comes from the driver as the type python_value would make
        # of it: taken as it is, without a call per value (a claim decodes 40 rows of 11 columns).
        instance.__data__ = {name: value if (value := row[index]) is None or value.__class__ is as_is
                             else convert(value) for index, name, as_is, convert in fields}
        for index, name in extras:
            setattr(instance, name, row[index])
        return instance
    return decode


def one_of(column: peewee.Node, values: peewee.Node) -> peewee.Expression:
    """``column`` is one of the list bound to the slot `values` (bind it with `listed`): one fixed
    statement for any number of values, where ``IN (%s, %s, …)`` is a new statement for every length,
    compiled anew each time (make its `Prepared` ``server_side=False``). PostgreSQL: ``= ANY(array)``;
    SQLite: ``IN`` the members of a JSON array."""
    if isinstance(database.obj, peewee.PostgresqlDatabase):
        return column == peewee.fn.ANY(peewee.Cast(values, "text[]"))
    return peewee.Expression(column, peewee.OP.IN, peewee.NodeList(
        [peewee.SQL("(SELECT value FROM json_each("), values, peewee.SQL("))")], glue=""))


def probe_each(query: peewee.ModelSelect, column: peewee.Field, values: peewee.Node) -> peewee.Query:
    """`query`'s rows whose indexed `column` is one of the text list bound to `values` (`listed`). On
    PostgreSQL: the list ``unnest``ed and joined ``LATERAL`` to `query`, fenced (``OFFSET 0``) so it
    stays one index probe per member whatever the planner's statistics say — ``= ANY(list)`` on a
    table filled since its last ``ANALYZE`` (a new deployment's, a benchmark's) was planned as a scan
    of the whole table, 3–10 ms a batch and growing with it. Elsewhere: `one_of`."""
    if not isinstance(database.obj, peewee.PostgresqlDatabase):
        return query.where(one_of(column, values))
    keys = peewee.NodeList((peewee.SQL("unnest(CAST("), values, peewee.SQL(' AS text[])) AS "each" ("key")')), glue="")
    found = query.where(column == peewee.SQL('"each"."key"')).offset(0).lateral().alias("found")
    return peewee.Select([keys, found], [peewee.Entity("found", c.column_name) for c in query._returning]).bind(database)


def listed(values: list[Any]) -> Any:
    """`values` (text) bound to a `one_of` slot: on PostgreSQL one array literal, written here —
    psycopg2 quotes a list element by element (1 ms for the intake's 768 keys of a batch, against
    0.1 ms for this); on SQLite a JSON array."""
    if isinstance(database.obj, peewee.PostgresqlDatabase):
        return "{" + ",".join(['"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values]) + "}"
    return json.dumps(list(values))


def sql_of(statement: str) -> str:
    """The SQL text an ``EXECUTE`` of a prepared statement runs (any other statement as it is)."""
    executed = _EXECUTE.match(statement)
    return _TEXT.get(executed.group(1), statement) if executed else statement


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


__all__ = ["Prepared", "Slots", "get_by_id", "insert_instance", "insert_row", "listed", "one_of", "sql_of",
           "update_where"]
