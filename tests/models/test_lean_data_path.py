"""The lean data path under the hot statements: statements prepared on the PostgreSQL server once
per connection, a batch's rows written with ``COPY``, lists bound as one value — each storing and
reading exactly what the plain peewee calls did, on SQLite and PostgreSQL."""
from __future__ import annotations

import math
from datetime import timedelta, timezone

import peewee
import psycopg2
import pytest

from disputes.database_pool import PostgresPool
from models.admission import _PROCESSED
from models.base import database, utcnow
from models.intake import ProcessedMessage, RejectedMessage
from models.prepared import Prepared, listed, one_of
from models.ticket import Ticket
from models.write_behind import WriteBehind, insert_later
from tests.integration.conftest import PG_DSN, fresh_pg_database
from tests.statements import Statements
from tools.bench.fixtures import insert_tickets

ODD_TEXT = ["tab\there", "new\nline", "back\\slash", "carriage\rreturn", "\\N", "", "需要证据", "end\\"]


def on_postgres() -> bool:
    return isinstance(database.obj, peewee.PostgresqlDatabase)


def test_rows_written_behind_read_back_exactly_whatever_their_text(db_app) -> None:
    at = utcnow().replace(microsecond=123456)
    with database.atomic(), WriteBehind() as batch:
        with batch.deferred():
            for n, text in enumerate(ODD_TEXT):
                insert_later(RejectedMessage, routing_key=f"k{n}", message_id=text or None,
                             headers={"h": text, "n": [1, 2.5, None, True]}, body=text.encode() + b"\x00\xff\\",
                             reasons={"field": [text]}, received_at=at + timedelta(seconds=n))
        batch.flush()
    stored = list(RejectedMessage.select().order_by(RejectedMessage.routing_key))
    assert [r.routing_key for r in stored] == [f"k{n}" for n in range(len(ODD_TEXT))]
    for n, (row, text) in enumerate(zip(stored, ODD_TEXT)):
        assert row.message_id == (text or None)
        assert row.headers == {"h": text, "n": [1, 2.5, None, True]}
        assert bytes(row.body) == text.encode() + b"\x00\xff\\"
        assert row.reasons == {"field": [text]}
        assert row.received_at == at + timedelta(seconds=n)
        assert (row.replayed_at, row.status) == (None, "rejected")


def test_times_written_behind_read_back_as_the_same_instants_whatever_their_zone(db_app) -> None:
    utc = utcnow().replace(microsecond=654321)
    beijing = utc.astimezone(timezone(timedelta(hours=8)))  # the same instant: equal to `utc`, other text
    times = [utc, beijing, beijing + timedelta(minutes=1), utc + timedelta(minutes=1), utc.replace(tzinfo=None)]
    with database.atomic(), WriteBehind() as batch:
        with batch.deferred():
            for n, at in enumerate(times):
                insert_later(RejectedMessage, routing_key=f"k{n}", body=b"", reasons={}, received_at=at)
        batch.flush()
    read = [r.received_at for r in RejectedMessage.select().order_by(RejectedMessage.routing_key)]
    assert read == [utc, utc, utc + timedelta(minutes=1), utc + timedelta(minutes=1), utc]


def test_a_float_written_behind_reads_back_as_an_insert_of_it_does(db_app) -> None:
    insert_tickets("lean", {"stage1": 1})
    values = dict(Ticket.select().first().__data__)
    values.pop("id")
    floats = [0.0, 1e-7, 12345.678, math.pi]
    for n, paused in enumerate(floats):  # the column's own precision (REAL on PostgreSQL) rounds both alike
        Ticket.create(**{**values, "external_ref": f"inserted-{n}", "sla_paused_seconds": paused})
    with database.atomic(), WriteBehind() as batch:
        with batch.deferred():
            for n, paused in enumerate(floats):
                insert_later(Ticket, **{**values, "external_ref": f"behind-{n}", "sla_paused_seconds": paused})
        batch.flush()
    read = {t.external_ref: t.sla_paused_seconds for t in Ticket.select()}
    assert [read[f"behind-{n}"] for n in range(4)] == [read[f"inserted-{n}"] for n in range(4)]
    assert read["behind-2"] == pytest.approx(12345.678, rel=1e-6)


def test_a_list_bound_as_one_value_finds_exactly_its_members(db_app) -> None:
    insert_tickets("lean", {"stage2": 3, "closed": 2})
    ids = [t.id for t in Ticket.select(Ticket.id).order_by(Ticket.id)]
    for ticket_id, ref in zip(ids, ['"', 'a"b\\"', "x,y", "{z}", "NULL"]):  # what an array literal must quote
        Ticket.update(external_ref=ref).where(Ticket.id == ticket_id).execute()
    refs = [t.external_ref for t in Ticket.select().order_by(Ticket.id)]
    among = Prepared(lambda s: Ticket.select(Ticket.external_ref).where(one_of(Ticket.external_ref, s.refs)),
                     server_side=False)
    odd = ["nobody", "it's", "\\", '"', 'a"b\\"', "x,y", "{z}", "NULL", "", " spaced ", "需要"]
    for wanted in ([], refs[:1], refs[1:4], refs + odd, odd):
        assert sorted(r[0] for r in among.execute(refs=listed(wanted)).fetchall()) == sorted(set(wanted) & set(refs))


def test_message_ids_seen_before_are_found_in_one_statement_for_any_batch(db_app) -> None:
    ProcessedMessage.insert_many([{"message_id": f"seen-{n}", "routing_key": "complaint.submitted"}
                                  for n in range(300)]).execute()
    for size in (1, 7, 256):
        asked = [f"seen-{n}" for n in range(0, 600, 600 // size)][:size]
        with Statements() as read:
            found = {row[0] for row in _PROCESSED.execute(ids=listed(asked)).fetchall()}
        assert found == {i for i in asked if int(i.split("-")[1]) < 300}
        assert read.count == 1


@pytest.mark.servers
def test_a_statement_is_prepared_once_per_connection_then_only_executed(pg_app) -> None:
    insert_tickets("lean", {"stage3": 2})
    by_state = Prepared(lambda s: Ticket.select(Ticket.id).where(Ticket.state == s.state))
    with Statements() as first:
        assert len(list(by_state.rows(Ticket, state="stage3"))) == 2
    with Statements() as again:
        assert list(by_state.rows(Ticket, state="closed")) == []
    assert len(first.prepares) == 1 and again.prepares == []
    assert first.sql == again.sql and 'FROM "ticket"' in again.sql[0]


@pytest.fixture
def pg_app(db_app):
    if not on_postgres():
        pytest.skip("server-side statements are PostgreSQL's")
    return db_app


@pytest.mark.servers
def test_a_prepared_statement_survives_its_connection_dying_in_the_pool() -> None:
    """The pool replaces a dead connection at its first statement; when that statement is the
    ``EXECUTE`` of one prepared on the dead connection, it is prepared again on the new one."""
    name = "disputes_lean_pool_test"
    fresh_pg_database(name)
    pool = PostgresPool(name, user="root", host="127.0.0.1", port=5432, max_connections=2)
    previous = database.obj
    database.initialize(pool)
    try:
        backend = Prepared(lambda s: peewee.Select(columns=[peewee.fn.pg_backend_pid(), peewee.Cast(s.n, "int") + 1])
                           .bind(database))
        with pool.connection_context():
            old, two = backend.execute(n=1).fetchone()
        assert two == 2
        admin = psycopg2.connect(PG_DSN)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (old,))
        admin.close()
        with pool.connection_context():  # outside a transaction: the EXECUTE is the checkout's first statement
            new, three = backend.execute(n=2).fetchone()
        assert (new != old, three) == (True, 3)
    finally:
        database.initialize(previous)
        pool.close_all()


@pytest.mark.servers
def test_with_prepared_statements_off_nothing_is_prepared_on_the_server(pg_app, monkeypatch) -> None:
    """``OP_PG_PREPARED=off`` (a transaction-pooling PgBouncer): the same statements, sent whole."""
    from disputes.settings import settings_from_env
    assert settings_from_env({"OP_PG_PREPARED": "off"}).prepared_statements is False
    assert settings_from_env({}).prepared_statements is True
    monkeypatch.setattr(database.obj, "prepared_statements", False)
    insert_tickets("lean", {"stage3": 2})
    by_state = Prepared(lambda s: Ticket.select(Ticket.id).where(Ticket.state == s.state))
    with Statements() as seen:
        assert len(list(by_state.rows(Ticket, state="stage3"))) == 2
    assert seen.prepares == [] and not any(q.startswith("EXECUTE") for q in seen.sql)
