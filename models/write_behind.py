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
from typing import Any, Callable, Iterator, TypeVar

import peewee

from models.base import JSONField, UtcDateTimeField, build, database, dump_json, plain_type
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
        self._expected: dict[type, int] = {}

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
                # A row there already refuses the batch. PostgreSQL's COPY raises on it (an INSERT of 256
                # rows with ON CONFLICT cost 5.6 ms, its COPY 1); elsewhere the INSERT skips it, the count tells.
                copies = isinstance(database.obj, peewee.PostgresqlDatabase)
                written = _insert_many(model, group, ignore_conflicts=not copies)
                if written != len(group):
                    raise FlushRefused(f"{len(group) - written} {model._meta.table_name} rows were "
                                       "written by another process meanwhile")
        except (peewee.IntegrityError, peewee.DataError) as refused:
            raise FlushRefused(f"the database refused a batch's rows: {refused}") from refused

    def expect(self, model: type[peewee.Model], rows: int) -> None:
        """At most `rows` rows of `model` will want an id (`next_id`): reserve that many at once — one
        round trip for the batch, where 64 at a time took four for a batch of 256 new tickets — and no
        more, so no id is skipped for a batch of duplicates."""
        self._expected[model] = rows

    def next_id(self, model: type[peewee.Model]) -> int:
        """An id for a row of `model` inserted later in this batch, reserved now."""
        ids = self._ids.get(model)
        if not ids:
            count = max(1, self._expected.pop(model, 64))
            ids = self._ids[model] = _reserve_ids(model, count, self._reserved_up_to.get(model, 0))
            self._reserved_up_to[model] = ids[-1]
            ids.reverse()  # handed out from the end: lowest first
        return ids.pop()


def active() -> WriteBehind | None:
    """The batch that defers rows on this thread now, if any."""
    batch = getattr(_local, "active", None)
    return batch if batch is not None and batch.deferring else None


def insert_later(model: type[M], **values: Any) -> M:
    """Insert a row of `model` — or, inside a deferring batch, hold it for the batch's flush (the
    instance then has no id). Only for rows whose id the caller does not use."""
    row = build(model, **values)
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


class _Encoder:
    """Per field of a multi-row ``INSERT``: its name, (the type it passes as is, its ``db_value``), and
    for ``COPY`` the function that writes its value as text, chosen once per field."""

    def __init__(self, fields: tuple[peewee.Field, ...]) -> None:
        self.names = [f.name for f in fields]
        self.fields = fields
        self.steps = [(plain_type(f), f.db_value) for f in fields]
        self._line: Callable[[dict, dict], str] | None = None  # generated at the first COPY

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
        if self._line is None:
            self._line = _line_encoder(self.fields)
        line = self._line
        times: dict[datetime.datetime, str] = {}  # a change's rows share its few instants: each written once
        lines = [line(row.__data__, times) for row in rows]
        lines.append("")
        return "\n".join(lines)


def _line_encoder(fields: tuple[peewee.Field, ...]) -> Callable[[dict, dict], str]:
    """One function writing a row's ``COPY`` line, generated for these fields: each value's common case
    (text with nothing to escape, an int, a UTC time already written) inline, anything else through
    `_copy_text_of`'s function for its field. A call per value cost more than the value's own work:
    a ticket's line of 47 values took 23 µs as 47 calls, 17 µs as this one."""
    env: dict[str, Any] = {"N": _NULL, "str": str}
    parts = []
    for n, field in enumerate(fields):
        name, other = repr(field.name), f"other{n}"
        env[other] = _copy_text_of(field)
        as_is = plain_type(field)
        if as_is is str:
            parts.append(f"(N if (v := get({name})) is None else v if v.__class__ is str and not "
                         f"('\\\\' in v or '\\t' in v or '\\n' in v or '\\r' in v) else {other}(v, times))")
        elif as_is is int:
            parts.append(f"(N if (v := get({name})) is None else str(v) if v.__class__ is int else {other}(v, times))")
        elif type(field) is UtcDateTimeField:
            parts.append(f"(N if (v := get({name})) is None else times.get(v) or {other}(v, times))")
        else:
            parts.append(f"{other}(get({name}), times)")
    source = "def line(data, times):\n    get = data.get\n    return '\\t'.join((\n        " + \
        ",\n        ".join(parts) + ",\n    ))\n"
    exec(compile(source, f"<COPY line of {len(fields)} fields>", "exec"), env)  # noqa: S102 - our own text
    return env["line"]  # type: ignore[no-any-return]


def _copy_text_of(field: peewee.Field) -> Callable[[Any, dict[datetime.datetime, str]], str]:
    """How `field`'s value is written in ``COPY`` text, whatever it is: what ``db_value`` then
    ``_COPY_TEXT`` give, the common types of our columns directly; a time's text is kept in the
    line's `times` (formatting one costs 2 µs here, a ticket row has nine of them)."""
    as_is = plain_type(field)
    db_value = field.db_value
    if as_is is str:
        # isinstance: a state is a ``str`` enum, which db_value passes on as it is
        return lambda v, times: _NULL if v is None else _copy_str(v) if isinstance(v, str) else _copy_any(db_value(v))
    if as_is is int:
        return lambda v, times: _NULL if v is None else str(v) if type(v) is int else _copy_any(db_value(v))
    if type(field) is UtcDateTimeField:
        def utc_text(v: Any, times: dict[datetime.datetime, str]) -> str:
            if v is None:
                return _NULL
            text = times.get(v)
            if text is None:
                if type(v) is datetime.datetime and (v.tzinfo is datetime.timezone.utc or v.tzinfo is None):
                    # A UTC offset in the text is ignored by a ``timestamp`` column: this is db_value's naive UTC.
                    text = v.isoformat()
                else:
                    text = _copy_any(db_value(v))
                times[v] = text
            return text
        return utc_text
    if type(field) is JSONField:
        return lambda v, times: _NULL if v is None else _copy_str(dump_json(v))
    return lambda v, times: _NULL if v is None else _copy_any(db_value(v))


def _copy_any(value: Any) -> str:
    return _COPY_TEXT.get(type(value), _copy_other)(value)


_NULL = "\\N"


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
    type(None): lambda _: _NULL, str: _copy_str, int: str, float: repr,
    bool: lambda v: "t" if v else "f",
    datetime.datetime: datetime.datetime.isoformat, datetime.date: datetime.date.isoformat,
}


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
