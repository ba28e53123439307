"""The dispute ticket (纠纷单) and the complaints linked to it.

`version` rises by one with every change; writers update with
``WHERE version = <what they read>`` (optimistic concurrency), so two agents,
two workers or a redelivered message can never both apply.
"""
from __future__ import annotations

import peewee

from models.base import BaseModel, JSONField, UtcDateTimeField, database, utcnow


class Ticket(BaseModel):
    source = peewee.CharField(max_length=128)
    external_ref = peewee.CharField(max_length=128)
    channel = peewee.CharField(max_length=16)
    user_id = peewee.CharField(max_length=128, index=True)
    merchant_id = peewee.CharField(max_length=128, index=True)
    order_id = peewee.CharField(max_length=128, index=True)
    order_amount = peewee.BigIntegerField()
    currency = peewee.CharField(max_length=3)
    category = peewee.CharField(max_length=64)
    delivery = peewee.CharField(max_length=16)
    order_status = peewee.CharField(max_length=16)
    dispute_type = peewee.CharField(max_length=32)
    claimed_amount = peewee.BigIntegerField()
    description = peewee.TextField(default="")
    complexity = peewee.CharField(max_length=16, default="simple")
    contact = JSONField(null=True)
    occurred_at = UtcDateTimeField()

    #: Indexed by ``(state, assignee, state_entered_at)`` and the claim order: no index of its own (schema v6).
    state = peewee.CharField(max_length=32)
    version = peewee.IntegerField(default=1)
    #: The version at which the ticket entered its current state: timers set in
    #: a state only fire while this is unchanged.
    state_version = peewee.IntegerField(default=1)
    state_entered_at = UtcDateTimeField(default=utcnow)
    assignee = peewee.IntegerField(null=True, index=True)
    assigned_at = UtcDateTimeField(null=True)

    dispute_status = peewee.CharField(max_length=64, null=True)
    evidence_rounds = peewee.IntegerField(default=0)
    liability = peewee.CharField(max_length=16, null=True)
    remedy = peewee.CharField(max_length=32, null=True)
    #: What the buyer is owed by the judgment (or settlement) in force, minor units.
    refund_amount = peewee.BigIntegerField(null=True)
    #: What has reached the buyer so far (merchant refunds and platform advances): a new judgment
    #: pays only the difference, so no refund is ever paid twice.
    refunded_amount = peewee.BigIntegerField(default=0)
    complaint_fee = peewee.BigIntegerField(null=True)
    #: In ``awaiting_payment``: what we wait for, ``goods`` (return_and_refund) or ``voucher``.
    payment_wait = peewee.CharField(max_length=16, null=True)
    #: The merchant's offline-transfer voucher: ``pending`` (to verify), ``rejected`` or ``verified``.
    voucher_status = peewee.CharField(max_length=16, null=True)
    #: Why money could not move (shown to the agent), or what it waits for (an approval).
    payment_issue = peewee.CharField(max_length=255, null=True)
    judged_by = peewee.IntegerField(null=True)
    negotiation_option = peewee.CharField(max_length=32, null=True)
    floor_at = UtcDateTimeField(null=True)
    #: Raised by each SLA breach; work lists take higher priority first.
    priority = peewee.IntegerField(default=0)
    #: The SLA promises pinned when the ticket reached the floor (a later policy change does not
    #: move them), each pushed back by the time the clock was paused (hidden states).
    sla_accept_due = UtcDateTimeField(null=True)
    sla_feedback_due = UtcDateTimeField(null=True)
    sla_resolve_due = UtcDateTimeField(null=True)
    sla_paused_seconds = peewee.FloatField(default=0.0)
    sla_paused_since = UtcDateTimeField(null=True)
    #: The promise that falls due next for this ticket's state: work lists are ordered by it.
    sla_due_at = UtcDateTimeField(null=True, index=True)
    #: When the SLA watcher must look at this ticket again (next warning level or breach).
    sla_check_at = UtcDateTimeField(null=True, index=True)
    #: The promises kept so far (on time or late), comma-separated, so that a change needs no read
    #: of the SLA log to know which are still open. NULL on tickets from before schema version 3,
    #: whose kept promises are read from the log (`models.sla.open_promises`).
    sla_met = peewee.CharField(max_length=64, null=True, default="")
    created_at = UtcDateTimeField(default=utcnow)
    closed_at = UtcDateTimeField(null=True)

    class Meta:
        indexes = ((("source", "external_ref"), True), (("state", "assignee", "state_entered_at"), False))

    @property
    def ref(self) -> str:
        return f"{self.source}:{self.external_ref}"


# The claim order of `desk.claims.candidates`, over the unassigned tickets only: an agent's claim reads
# the first rows of its state from here instead of sorting the whole waiting backlog (bench ``scale``).
Ticket.add_index(Ticket.index(Ticket.state, Ticket.priority.desc(), Ticket.sla_due_at, Ticket.state_entered_at,
                              Ticket.id, name="ticket_claim_order", where=Ticket.assignee.is_null()))


def lock_ticket(ticket_id: int, *fields: peewee.Field) -> Ticket | None:
    """Read the ticket for the rest of the caller's transaction, so a check-then-write on it (an
    agent's decision, a lease expiry) is serialized with every other writer of the ticket:
    ``SELECT ... FOR UPDATE`` on PostgreSQL; on SQLite the transaction already holds the one
    write lock (``BEGIN IMMEDIATE``)."""
    query = Ticket.select(*fields).where(Ticket.id == ticket_id)
    if isinstance(database.obj, peewee.PostgresqlDatabase):
        query = query.for_update()
    return query.first()


class LinkedComplaint(BaseModel):
    """A second complaint about an order that already has an open ticket."""

    ticket = peewee.ForeignKeyField(Ticket, backref="linked_complaints", on_delete="CASCADE")
    source = peewee.CharField(max_length=128)
    external_ref = peewee.CharField(max_length=128)
    dispute_type = peewee.CharField(max_length=32)
    claimed_amount = peewee.BigIntegerField()
    description = peewee.TextField(default="")
    linked_at = UtcDateTimeField(default=utcnow)

    class Meta:
        indexes = ((("source", "external_ref"), True),)
