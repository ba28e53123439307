"""The audit trail: one row per committed change of a ticket, never updated."""
from __future__ import annotations

import peewee

from models.base import BaseModel, JSONField, UtcDateTimeField, utcnow
from models.ticket import Ticket


class TicketEvent(BaseModel):
    #: Indexed by ``(ticket_id, version)``: no index of its own (schema v6).
    ticket = peewee.ForeignKeyField(Ticket, backref="events", on_delete="CASCADE", index=False)
    #: The ticket's version after this change; (ticket, version) is unique, which
    #: is what makes "no transition applied twice" checkable.
    version = peewee.IntegerField()
    from_state = peewee.CharField(max_length=32, null=True)
    to_state = peewee.CharField(max_length=32)
    actor = peewee.CharField(max_length=64)
    action = peewee.CharField(max_length=64)
    params = JSONField(null=True)
    qc_verdict = peewee.CharField(max_length=8, null=True)
    qc_reason = peewee.CharField(max_length=64, null=True)
    #: The agent whose work the QC verdict is about (the previous stage's agent).
    qc_about = peewee.IntegerField(null=True)
    data = JSONField(null=True)
    cause = peewee.CharField(max_length=160, null=True)
    at = UtcDateTimeField(default=utcnow)

    class Meta:
        indexes = ((("ticket", "version"), True),)
