"""`disputes init` on a database of an older schema version brings it to the current one."""
from __future__ import annotations

from disputes.wiring import App
from models.base import database
from models import ledger
from models.ledger import LedgerTransaction
from models.outbox import OutboxEvent
from models.schema import CURRENT_VERSION, SchemaVersion, init_schema
from models.ticket import Ticket
from tools.bench.fixtures import insert_tickets


def index_names(table: str) -> set[str]:
    return {index.name for index in database.get_indexes(table)}


def test_a_version_3_database_gains_the_relays_index_and_keeps_its_events(db_app: App) -> None:
    table = OutboxEvent._meta.table_name
    OutboxEvent.create(ticket_id=1, routing_key="ticket.created", body={"ticket_id": 1})
    database.execute_sql('DROP INDEX "outbox_event_unpublished"')
    SchemaVersion.update(version=3).execute()
    assert "outbox_event_unpublished" not in index_names(table)

    assert init_schema() == CURRENT_VERSION == 6

    assert "outbox_event_unpublished" in index_names(table)
    assert SchemaVersion.get().version == 6
    assert [e.routing_key for e in OutboxEvent.select()] == ["ticket.created"]


def test_a_version_4_database_numbers_new_ledger_events_and_keeps_its_books(db_app: App) -> None:
    """Movements posted before the upgrade keep no number; the first announced after it is 1."""
    table = LedgerTransaction._meta.table_name
    ledger.post("old", "refund_deducted", "CNY", [("merchant:m1", -100), ("buyer:u1", 100)], ticket_id=1)
    database.execute_sql(f'DROP INDEX "{table}_merchant_id_sequence"')
    for column in ("merchant_id", "sequence"):
        database.execute_sql(f'ALTER TABLE "{table}" DROP COLUMN "{column}"')
    SchemaVersion.update(version=4).execute()

    assert init_schema() == 6

    assert {"merchant_id", "sequence"} <= {c.name for c in database.get_columns(table)}
    assert ledger.balance("merchant:m1", "CNY") == -100
    new = ledger.post("new", "refund_deducted", "CNY", [("merchant:m1", -50), ("buyer:u1", 50)], ticket_id=2,
                      announced_to="m1")
    assert new is not None and new.sequence == 1
    assert LedgerTransaction.get(idempotency_key="old").sequence is None


def test_a_version_5_database_loses_the_indexes_a_wider_one_serves_and_keeps_its_tickets(db_app: App) -> None:
    insert_tickets("upgrade", {"stage2": 2})
    database.execute_sql('CREATE INDEX "ticket_state" ON "ticket" ("state")')
    database.execute_sql('CREATE INDEX "ticket_event_ticket_id" ON "ticket_event" ("ticket_id")')
    SchemaVersion.update(version=5).execute()

    assert init_schema() == 6

    assert "ticket_state" not in index_names("ticket") and "ticket_event_ticket_id" not in index_names("ticket_event")
    assert "ticket_state_assignee_state_entered_at" in index_names("ticket")
    assert "ticket_event_ticket_id_version" in index_names("ticket_event")
    assert Ticket.select().where(Ticket.state == "stage2").count() == 2
