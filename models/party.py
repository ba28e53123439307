"""What the parties tell us outside a ticket's state: survey answers (balances live in `models.ledger`)."""
from __future__ import annotations

import peewee

from models.base import BaseModel, UtcDateTimeField, utcnow



class SurveyAnswer(BaseModel):
    ticket_id = peewee.IntegerField(unique=True)
    user_id = peewee.CharField(max_length=128)
    score = peewee.IntegerField()
    comment = peewee.TextField(null=True)
    answered_at = UtcDateTimeField(default=utcnow)
