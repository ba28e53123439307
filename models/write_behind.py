"""Write-behind: the rows a batch of changes inserts, written with one multi-row ``INSERT`` per table.

The intake admits complaints a batch at a time in one transaction (`models.admission.admit_batch`).
Each new ticket costs an ``INSERT`` of the ticket, its audit row, its ``op.events`` outbox row,
its deadline's timer and the message id it was admitted under: five round trips per complaint,
where the batch needs five in all. While a batch holds a `WriteBehind` open and *defers*,
`insert_later` hands it the row instead of inserting it; `flush` writes them, table by table in
the order the tables were first written (a ticket before the rows that refer to it). Without an
open batch `insert_later` inserts at once, exactly as before.

Only rows nobody reads back before the flush and whose ids nobody needs go this way. A new
ticket's id, which the rows of its change refer to, is taken from the table's sequence ahead of
its insert (`next_id`). A message the batch rejects takes back its rows (`mark` / `rollback_to`)
instead of paying for a savepoint. A flush the database refuses (a value a column cannot hold, a
message id another consumer recorded meanwhile) raises `FlushRefused`; the caller then redoes its
batch the careful way, each message in a savepoint of its own.
"""
from __future__ import annotations

import contextlib
import datetime
import io
import threading
from typing import Any, Iterator, TypeVar

import peewee

from models.base import database
from models.errors import DisputesError
from models.prepared import insert_instance

M = TypeVar("M", bound=peewee.Model)

_local = threading.local()


class FlushRefused(DisputesError):
    """The database refused a batch's held rows; nothing of the batch may commit."""


class WriteBehind:
    """The rows one batch transaction holds back (one per thread, opened with ``with``)."""

    def __init__(self) -> None:
        self.rows: list[peewee.Model] = []
        #: Rows whose conflict on their primary key means "someone else did this meanwhile".
        self.claims: list[peewee.Model] = []
        self.deferring = False
        self._ids: dict[type, list[int]] = {}
        self._reserved_up_to: dict[type, int] = {}

    def __enter__(self) -> "WriteBehind":
        if getattr(_local, "active", None) is not None:
            raise RuntimeError("a write-behind batch is already open on this thread")
        _local.active = self
        return self

    def __exit__(self, *exc: object) -> None:
        _local.active = None

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Within: `insert_later` holds rows back (outside, it inserts them at once)."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False

    def mark(self) -> tuple[int, int]:
        return len(self.rows), len(self.claims)

    def rollback_to(self, mark: tuple[int, int]) -> None:
        """Take back the rows held since `mark` (a message the batch rejected)."""
        del self.rows[mark[0]:]
        del self.claims[mark[1]:]

    def flush(self) -> None:
        """Write every held row: one ``INSERT`` per table, tables in the order first written."""
        rows, claims = self.rows, self.claims
        self.rows, self.claims = [], []
        try:
            for model, group in _by_table(rows).items():
                _insert_many(model, group)
            for model, group in _by_table(claims).items():
                written = _insert_many(model, group, ignore_conflicts=True)
                if written != len(group):
                    raise FlushRefused(f"{len(group) - written} {model._meta.table_name} rows were "
                                       "written by another process meanwhile")
        except (peewee.IntegrityError, peewee.DataError) as refused:
            raise FlushRefused(f"the database refused a batch's rows: {refused}") from refused

    def next_id(self, model: type[peewee.Model]) -> int:
        """An id for a row of `model` inserted later in this batch, reserved now."""
        ids = self._ids.get(model)
        if not ids:
            ids = self._ids[model] = _reserve_ids(model, 64, self._reserved_up_to.get(model, 0))
            self._reserved_up_to[model] = ids[-1]
        return ids.pop(0)


def active() -> WriteBehind | None:
    """The batch that defers rows on this thread now, if any."""
    batch = getattr(_local, "active", None)
    return batch if batch is not None and batch.deferring else None


def insert_later(model: type[M], **values: Any) -> M:
    """Insert a row of `model` — or, inside a deferring batch, hold it for the batch's flush (the
    instance then has no id). Only for rows whose id the caller does not use."""
    row = model(**values)
    batch = active()
    if batch is None:
        return insert_instance(row)
    batch.rows.append(row)
    return row


def hold(row: peewee.Model) -> None:
    """Hold an instance (its id set already, see `WriteBehind.next_id`) for the batch's flush."""
    _deferring().rows.append(row)


def claim_later(row: peewee.Model) -> None:
    """Hold a row whose primary key says "done once" (a processed message id): the flush inserts it
    ignoring conflicts and refuses the batch if any was there already (a race the batch lost)."""
    _deferring().claims.append(row)


def _deferring() -> WriteBehind:
    batch = active()
    if batch is None:
        raise RuntimeError("no deferring batch is open")
    return batch


def _by_table(rows: list[peewee.Model]) -> dict[type, list[peewee.Model]]:
    """`rows` grouped by model, models in the order first seen (a ticket before rows citing it)."""
    tables: dict[type, list[peewee.Model]] = {}
    for row in rows:
        tables.setdefault(type(row), []).append(row)
    return tables


def _insert_many(model: type[peewee.Model], rows: list[peewee.Model], ignore_conflicts: bool = False) -> int:
    """One multi-row ``INSERT`` (``COPY`` on PostgreSQL, where no conflict is to be ignored); values
    through each field's ``db_value``, as `Model.create` does (field defaults were filled when each
    instance was built)."""
    fields = tuple(f for f in model._meta.sorted_fields
                   if not (isinstance(f, peewee.AutoField) and rows[0].__data__.get(f.name) is None))
    columns = ", ".join(f'"{f.column_name}"' for f in fields)
    encode = _encoders(fields)
    if not ignore_conflicts and isinstance(database.obj, peewee.PostgresqlDatabase):
        return _copy(f'COPY "{model._meta.table_name}" ({columns}) FROM STDIN', encode.copy_text(rows))
    one = "(" + ", ".join([database.param] * len(fields)) + ")"
    sql = f'INSERT INTO "{model._meta.table_name}" ({columns}) VALUES ' + ", ".join([one] * len(rows))
    if ignore_conflicts:
        sql += " ON CONFLICT DO NOTHING"
    return database.execute_sql(sql, encode.params(rows)).rowcount


def _copy(sql: str, text: str) -> int:
    """``COPY … FROM STDIN`` of `text` (PostgreSQL's text format): the rows' values go as they are,
    where an ``INSERT`` has psycopg2 quote each one into the statement and the server parse it back
    (50 µs of the client's CPU per ticket row of 47 values, against 20 µs for its line of text)."""
    peewee.logger.debug((sql, None))  # logged like any statement (tests count them)
    with peewee.__exception_wrapper__:  # a refused row raises peewee's IntegrityError/DataError, as an INSERT does
        cursor = database.cursor()
        cursor.copy_expert(sql, io.StringIO(text))
        return cursor.rowcount


#: Fields whose ``db_value`` hands a value of this exact type back unchanged (peewee's ``adapt`` of a
#: plain column is a conversion to it): such a value needs no call. Subclasses (``JSONField`` is a
#: ``TextField``) are not in here, so their own ``db_value`` always runs.
_PASSED_AS_IS: dict[type, type] = {peewee.CharField: str, peewee.TextField: str, peewee.IntegerField: int,
                                   peewee.BigIntegerField: int, peewee.AutoField: int, peewee.BooleanField: bool}


class _Encoder:
    """Per field of a multi-row ``INSERT``: its name and (the type it passes as is, its ``db_value``)."""

    def __init__(self, fields: tuple[peewee.Field, ...]) -> None:
        self.names = [f.name for f in fields]
        self.steps = [(_passed_as_is(f), f.db_value) for f in fields]

    def values(self, row: peewee.Model) -> list[Any]:
        data = row.__data__
        return [value if value is None or type(value) is ready else db_value(value)
                for value, (ready, db_value) in zip([data.get(name) for name in self.names], self.steps)]

    def params(self, rows: list[peewee.Model]) -> list[Any]:
        params: list[Any] = []
        for row in rows:
            params.extend(self.values(row))
        return params

    def copy_text(self, rows: list[peewee.Model]) -> str:
        """The rows in ``COPY``'s text format: a line per row, tab between values, ``\\N`` for NULL."""
        return "".join("\t".join([_COPY_TEXT.get(type(v), _copy_other)(v) for v in self.values(row)]) + "\n"
                       for row in rows)


def _copy_str(value: str) -> str:
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        value = value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


def _copy_other(value: Any) -> str:
    adapted = getattr(value, "adapted", None)  # psycopg2's Binary (a BlobField's db_value) holds the bytes
    if isinstance(adapted, (bytes, bytearray, memoryview)):
        value = adapted
    if isinstance(value, (bytes, bytearray, memoryview)):  # bytea in hex, its backslash escaped for COPY
        return "\\\\x" + bytes(value).hex()
    if isinstance(value, str):
        return _copy_str(value)
    return _copy_str(str(value))


_COPY_TEXT: dict[type, Any] = {
    type(None): lambda _: "\\N", str: _copy_str, int: str, float: repr,
    bool: lambda v: "t" if v else "f",
    datetime.datetime: datetime.datetime.isoformat, datetime.date: datetime.date.isoformat,
}


def _passed_as_is(field: peewee.Field) -> type | None:
    if isinstance(field, peewee.ForeignKeyField):  # an id held in the row: the target key's own rule
        field = field.rel_field
    return _PASSED_AS_IS.get(type(field))


_ENCODERS: dict[tuple[peewee.Field, ...], _Encoder] = {}


def _encoders(fields: tuple[peewee.Field, ...]) -> _Encoder:
    encoder = _ENCODERS.get(fields)
    if encoder is None:
        encoder = _ENCODERS[fields] = _Encoder(fields)
    return encoder


def _reserve_ids(model: type[peewee.Model], count: int, after: int) -> list[int]:
    """`count` ids for `model`: from its sequence on PostgreSQL; on SQLite, which writes one
    transaction at a time (the batch holds the write lock), the next ones after the highest
    written and `after` (the last this batch reserved, perhaps not flushed yet)."""
    table = model._meta.table_name
    pk = model._meta.primary_key.column_name
    if isinstance(database.obj, peewee.PostgresqlDatabase):
        cursor = database.execute_sql(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)", (table, pk, count))
        return [row[0] for row in cursor.fetchall()]
    highest = database.execute_sql(f'SELECT COALESCE(MAX("{pk}"), 0) FROM "{table}"').fetchone()[0]
    start = max(highest, after) + 1
    return list(range(start, start + count))


__all__ = ["FlushRefused", "WriteBehind", "active", "claim_later", "hold", "insert_later"]
