"""Four eyes on the platform's own money: a complaint fee or an advance above the policy's
threshold waits for a supervisor other than the agent who asked."""
from __future__ import annotations

import peewee

from models.base import BaseModel, UtcDateTimeField, utcnow
from models.prepared import Prepared


class Approval(BaseModel):
    ticket_id = peewee.IntegerField(index=True)
    #: ``complaint_fee`` or ``platform_advance``.
    kind = peewee.CharField(max_length=32)
    amount = peewee.BigIntegerField()
    currency = peewee.CharField(max_length=3)
    #: The agent who asked (None when the scheduler asked, for an advance at a missed deadline).
    requested_by = peewee.IntegerField(null=True)
    requested_at = UtcDateTimeField(default=utcnow)
    #: ``approved`` or ``declined``; None while pending.
    decision = peewee.CharField(max_length=16, null=True)
    decided_by = peewee.IntegerField(null=True)
    decided_at = UtcDateTimeField(null=True)


def pending_approval(ticket_id: int) -> Approval | None:
    return _PENDING.first(Approval, ticket=ticket_id)


_PENDING = Prepared(lambda s: Approval.select().where((Approval.ticket_id == s.ticket) & Approval.decision.is_null())
                    .order_by(Approval.id.desc()).limit(1))
