"""`disputes init` on a database of an older schema version brings it to the current one."""
from __future__ import annotations

from disputes.wiring import App
from models.base import database
from models.outbox import OutboxEvent
from models.schema import CURRENT_VERSION, SchemaVersion, init_schema


def index_names(table: str) -> set[str]:
    return {index.name for index in database.get_indexes(table)}


def test_a_version_3_database_gains_the_relays_index_and_keeps_its_events(db_app: App) -> None:
    table = OutboxEvent._meta.table_name
    OutboxEvent.create(ticket_id=1, routing_key="ticket.created", body={"ticket_id": 1})
    database.execute_sql('DROP INDEX "outbox_event_unpublished"')
    SchemaVersion.update(version=3).execute()
    assert "outbox_event_unpublished" not in index_names(table)

    assert init_schema() == CURRENT_VERSION == 4

    assert "outbox_event_unpublished" in index_names(table)
    assert SchemaVersion.get().version == 4
    assert [e.routing_key for e in OutboxEvent.select()] == ["ticket.created"]
