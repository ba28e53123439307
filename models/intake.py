"""The intake's memory: message ids already applied, and messages it refused."""
from __future__ import annotations

import peewee

from models.base import BaseModel, JSONField, UtcDateTimeField, utcnow


class ProcessedMessage(BaseModel):
    """Inserted in the transaction of the message's effect: a repeat finds it and is ignored."""

    message_id = peewee.CharField(max_length=255, primary_key=True)
    routing_key = peewee.CharField(max_length=64)
    ticket_id = peewee.IntegerField(null=True)
    processed_at = UtcDateTimeField(default=utcnow)


class RejectedMessage(BaseModel):
    """A message the intake could not apply, kept whole with every reason, replayable."""

    routing_key = peewee.CharField(max_length=255)
    message_id = peewee.CharField(max_length=255, null=True)
    headers = JSONField(null=True)
    body = peewee.BlobField()
    reasons = JSONField()
    received_at = UtcDateTimeField(default=utcnow)
    replayed_at = UtcDateTimeField(null=True)
    #: ``rejected``, or ``replayed`` once a replay applied it.
    status = peewee.CharField(max_length=16, default="rejected", index=True)
