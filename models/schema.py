"""Creating and upgrading the schema (`disputes init`).

A one-row `SchemaVersion` table records the applied version; each upgrade
step is a function in `MIGRATIONS` run in order inside a transaction, using
``playhouse.migrate`` for column changes. Creating missing tables is always safe.
"""
from __future__ import annotations

from typing import Callable

import peewee
from playhouse.migrate import SchemaMigrator, migrate

from models.agent import Agent
from models.audit import TicketEvent
from models.base import BaseModel, database
from models.evidence import EvidenceItem, EvidenceRequest
from models.intake import HeldMessage, ProcessedMessage, RejectedMessage
from models.outbox import Dispatch, Lease, OutboxEvent
from models.approval import Approval
from models.ledger import Account, BalanceReport, LedgerEntry, LedgerTransaction, MerchantSequence
from models.notification import Notification
from models.party import SurveyAnswer
from models.sla import SlaEvent
from models.ticket import LinkedComplaint, Ticket
from models.timer import Timer


class SchemaVersion(BaseModel):
    version = peewee.IntegerField()


ALL_MODELS: list[type[peewee.Model]] = [
    SchemaVersion, Ticket, LinkedComplaint, TicketEvent, EvidenceRequest, EvidenceItem,
    Timer, Agent, OutboxEvent, Dispatch, Lease, ProcessedMessage, RejectedMessage, SurveyAnswer,
    Account, LedgerTransaction, LedgerEntry, Approval, SlaEvent, Notification, MerchantSequence, BalanceReport,
    HeldMessage,
]


def _add_claim_order_index() -> None:
    """Version 2: the partial index serving an agent's claim (``ticket_claim_order``)."""
    Ticket._schema.create_indexes(safe=True)


def _add_sla_met() -> None:
    """Version 3: `Ticket.sla_met`, the promises kept, so a change reads no SLA log. Existing rows
    keep NULL (no rewrite of a large table): their kept promises are read from the log as before."""
    table = Ticket._meta.table_name
    if "sla_met" in {column.name for column in database.get_columns(table)}:
        return  # an upgrade interrupted after the column was added
    migrator = SchemaMigrator.from_database(database.obj)
    migrate(migrator.add_column(table, "sla_met", peewee.CharField(max_length=64, null=True)))


def _add_unpublished_events_index() -> None:
    """Version 4: the partial index serving the outbox relay (``outbox_event_unpublished``)."""
    OutboxEvent._schema.create_indexes(safe=True)


def _add_ledger_sequence() -> None:
    """Version 5: `LedgerTransaction.merchant_id` and ``sequence``, the per-merchant numbers of our
    ``ledger.*`` events (SPEC §5) that a balance report's ``applied_through`` refers to. Movements
    announced before keep NULL: a report's ``applied_through`` counts only numbered ones. (Its new
    tables — held follow-ups, balance reports, the merchants' counters — `init_schema` creates.)"""
    table = LedgerTransaction._meta.table_name
    present = {column.name for column in database.get_columns(table)}
    migrator = SchemaMigrator.from_database(database.obj)
    steps = [migrator.add_column(table, name, field) for name, field in (
        ("merchant_id", peewee.CharField(max_length=128, null=True)),
        ("sequence", peewee.BigIntegerField(null=True))) if name not in present]
    if steps:
        migrate(*steps)
    LedgerTransaction._schema.create_indexes(safe=True)


#: Indexes that a wider one with the same leading column serves: each insert, and each update of a
#: ticket's state, paid for them (a ticket row had eleven index entries, an audit row three).
REDUNDANT_INDEXES = ("ticket_state", "ticket_event_ticket_id")


def _drop_redundant_indexes() -> None:
    """Version 6: drop `REDUNDANT_INDEXES` (``(state, assignee, state_entered_at)`` and
    ``(ticket_id, version)`` serve their lookups)."""
    for name in REDUNDANT_INDEXES:
        database.execute_sql(f'DROP INDEX IF EXISTS "{name}"')


#: Upgrade steps after version 1 (the first schema): version -> step.
MIGRATIONS: dict[int, Callable[[], None]] = {2: _add_claim_order_index, 3: _add_sla_met,
                                             4: _add_unpublished_events_index, 5: _add_ledger_sequence,
                                             6: _drop_redundant_indexes}
CURRENT_VERSION = 1 + len(MIGRATIONS)


def init_schema() -> int:
    """Create missing tables and run pending upgrades; returns the schema version now in force."""
    if _up_to_date():
        return CURRENT_VERSION  # no DDL: CREATE INDEX IF NOT EXISTS would lock every table of a busy system
    with database.atomic():
        # Only missing tables: an existing one's new indexes may name columns its upgrade adds below.
        existing = set(database.get_tables())
        database.create_tables([m for m in ALL_MODELS if m._meta.table_name not in existing], safe=True)
        row = SchemaVersion.select().first()
        if row is None:
            SchemaVersion.create(version=CURRENT_VERSION)
            return CURRENT_VERSION
        for version in range(row.version + 1, CURRENT_VERSION + 1):
            MIGRATIONS[version]()
        SchemaVersion.update(version=CURRENT_VERSION).execute()
    return CURRENT_VERSION


def _up_to_date() -> bool:
    """Every table there and the recorded version current (read only: no lock a writer waits on)."""
    if not {m._meta.table_name for m in ALL_MODELS} <= set(database.get_tables()):
        return False
    row = SchemaVersion.select().first()
    return row is not None and row.version == CURRENT_VERSION
