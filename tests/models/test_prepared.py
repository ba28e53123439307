"""Statements compiled once (models.prepared) behave like the peewee calls they replace, on SQLite
and PostgreSQL; the claim-order index is created on new databases and by the version-2 upgrade."""
from __future__ import annotations

from datetime import timedelta

import peewee
import pytest

from tools.bench.fixtures import insert_tickets
from models.audit import TicketEvent
from models.base import database, utcnow
from models import init_schema
from models.outbox import Dispatch
from models.schema import CURRENT_VERSION, SchemaVersion
from models.sla import PROMISES, SlaEvent, open_promises
from models.prepared import Prepared, get_by_id, insert_row, update_where
from models.ticket import Ticket



def test_a_ticket_read_by_id_is_the_ticket_peewee_reads(db_app) -> None:
    insert_tickets("prep", {"awaiting_takeover": 3, "closed": 2})
    for expected in Ticket.select():
        assert get_by_id(Ticket, expected.id).__data__ == expected.__data__
    assert get_by_id(Ticket, 10**9) is None


def test_an_inserted_row_reads_back_with_its_defaults_and_converted_values(db_app) -> None:
    insert_tickets("prep", {"stage1": 1})
    ticket_id = Ticket.select().first().id
    at = utcnow().replace(microsecond=0)
    event = insert_row(TicketEvent, ticket=ticket_id, version=2, from_state="stage1", to_state="stage2", actor="agent:1",
                       action="escalate", params={"code": "需要证据"}, at=at)
    stored = TicketEvent.get_by_id(event.id)
    assert (stored.params, stored.at, stored.qc_verdict) == ({"code": "需要证据"}, at, None)
    dispatch = insert_row(Dispatch, queue="stage2", kind="arrive", ticket_id=ticket_id, payload={"ticket_id": ticket_id})
    assert Dispatch.get_by_id(dispatch.id).attempts == 0 and dispatch.created_at is not None
    assert insert_row(Dispatch, queue="stage2", kind="arrive", ticket_id=ticket_id, payload={}).id == dispatch.id + 1


def test_an_update_changes_only_the_rows_that_match_every_condition(db_app) -> None:
    insert_tickets("prep", {"stage2": 2})
    first, second = Ticket.select().order_by(Ticket.id)
    later = utcnow() + timedelta(hours=1)
    assert update_where(Ticket, {"priority": 5, "sla_due_at": later}, id=first.id, version=first.version + 1) == 0
    assert update_where(Ticket, {"sla_due_at": later, "priority": 5}, id=first.id, version=first.version) == 1
    assert (Ticket.get_by_id(first.id).priority, Ticket.get_by_id(first.id).sla_due_at) == (5, later)
    assert Ticket.get_by_id(second.id).priority == second.priority


def test_a_prepared_query_binds_new_values_on_every_run(db_app) -> None:
    insert_tickets("prep", {"stage3": 4})
    in_state = Prepared(lambda s: Ticket.select(Ticket.id).where(Ticket.state == s.state).limit(s.n))
    assert len(list(in_state.rows(Ticket, state="stage3", n=3))) == 3
    assert list(in_state.rows(Ticket, state="closed", n=3)) == []


def test_the_claim_order_index_exists_on_a_new_database_and_after_the_upgrade(db_app) -> None:
    from models import init_schema
    from models.schema import SchemaVersion

    assert "ticket_claim_order" in {i.name for i in database.get_indexes("ticket")}
    database.execute_sql('DROP INDEX "ticket_claim_order"')
    SchemaVersion.update(version=1).execute()  # a database made before the index
    assert init_schema() == CURRENT_VERSION
    assert "ticket_claim_order" in {i.name for i in database.get_indexes("ticket")}


@pytest.mark.parametrize("db_app", ["sqlite", "postgresql"], indirect=True)
def test_an_upgrade_to_version_3_keeps_reading_kept_promises_of_older_tickets_from_the_sla_log(db_app) -> None:
    # Given a version-2 database (no sla_met column) with a ticket whose accept promise was kept
    insert_tickets("v2", {"stage1": 1})
    ticket_id = Ticket.select(Ticket.id).where(Ticket.source == "v2").scalar()
    SlaEvent.create(ticket_id=ticket_id, promise="accept", kind="hit", due_at=utcnow())
    database.execute_sql('ALTER TABLE "ticket" DROP COLUMN "sla_met"')
    SchemaVersion.update(version=2).execute()
    # When it is upgraded
    assert init_schema() == CURRENT_VERSION
    # Then the column is there, the old ticket's kept promise is still known, a new ticket starts empty
    assert "sla_met" in {c.name for c in database.get_columns("ticket")}
    old = Ticket.get_by_id(ticket_id)
    assert old.sla_met is None and open_promises(old) == ["first_feedback", "resolve"]
    assert Ticket(sla_met="").sla_met == "" and open_promises(Ticket(id=0, sla_met="")) == list(PROMISES)


@pytest.mark.servers
@pytest.mark.parametrize("db_app", ["postgresql"], indirect=True)
def test_a_claim_reads_its_candidates_from_the_index_however_long_the_backlog(db_app) -> None:
    assert isinstance(database.obj, peewee.PostgresqlDatabase)
    from desk.claims import _waiting_in
    insert_tickets("prep", {"awaiting_takeover": 5000, "closed": 5000})
    database.execute_sql("ANALYZE ticket")
    sql, params = _waiting_in("awaiting_takeover").bind(agent=1, window=20)
    plan = "\n".join(row[0] for row in database.execute_sql("EXPLAIN " + sql, params).fetchall())
    assert "ticket_claim_order" in plan and "Sort" not in plan, plan
