"""Durable timers: deadlines of days live here, not in a broker's delayed queue.

A timer belongs to the state it was set in (``state`` + ``state_version``):
leaving that state cancels it, and a fire that arrives late finds the ticket
moved on and does nothing.
"""
from __future__ import annotations

import peewee

from models.base import BaseModel, UtcDateTimeField, utcnow

PENDING, FIRED, CANCELLED = "pending", "fired", "cancelled"


class Timer(BaseModel):
    ticket_id = peewee.IntegerField(index=True)
    #: The machine action applied when it fires, e.g. ``evidence_deadline``.
    action = peewee.CharField(max_length=64)
    state = peewee.CharField(max_length=32)
    state_version = peewee.IntegerField()
    queue = peewee.CharField(max_length=32)
    due_at = UtcDateTimeField()
    status = peewee.CharField(max_length=16, default=PENDING)
    fired_at = UtcDateTimeField(null=True)
    created_at = UtcDateTimeField(default=utcnow)

    class Meta:
        indexes = ((("status", "due_at"), False),)
