"""Evidence requested from the parties, and the references they sent (never file bytes)."""
from __future__ import annotations

import peewee

from models.base import BaseModel, JSONField, UtcDateTimeField, utcnow
from models.ticket import Ticket


class EvidenceRequest(BaseModel):
    """One party asked for evidence in one round; fulfilled when that party submits."""

    ticket = peewee.ForeignKeyField(Ticket, backref="evidence_requests", on_delete="CASCADE")
    round = peewee.IntegerField()
    party = peewee.CharField(max_length=16)
    kinds = JSONField()
    requested_by = peewee.IntegerField(null=True)
    requested_at = UtcDateTimeField(default=utcnow)
    due_at = UtcDateTimeField()
    fulfilled_at = UtcDateTimeField(null=True)

    class Meta:
        indexes = ((("ticket", "round", "party"), True),)


class EvidenceItem(BaseModel):
    ticket = peewee.ForeignKeyField(Ticket, backref="evidence", on_delete="CASCADE")
    round = peewee.IntegerField()
    party = peewee.CharField(max_length=16)
    kind = peewee.CharField(max_length=32)
    uri = peewee.CharField(max_length=2048)
    sha256 = peewee.CharField(max_length=64, null=True)
    note = peewee.TextField(null=True)
    submitted_at = UtcDateTimeField(default=utcnow)
