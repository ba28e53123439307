"""What the parties tell us outside a ticket's state: merchant balances and survey answers."""
from __future__ import annotations

import peewee

from models.base import BaseModel, UtcDateTimeField, utcnow


class MerchantAccount(BaseModel):
    """The merchant's available balance as the payment system last reported it."""

    merchant_id = peewee.CharField(max_length=128, primary_key=True)
    balance = peewee.BigIntegerField()
    currency = peewee.CharField(max_length=3)
    updated_at = UtcDateTimeField(default=utcnow)


class SurveyAnswer(BaseModel):
    ticket_id = peewee.IntegerField(unique=True)
    user_id = peewee.CharField(max_length=128)
    score = peewee.IntegerField()
    comment = peewee.TextField(null=True)
    answered_at = UtcDateTimeField(default=utcnow)
