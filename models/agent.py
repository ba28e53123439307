"""Agents of the four pools; their bearer tokens are stored only as hashes."""
from __future__ import annotations

import hashlib
import secrets

import peewee

from models.base import BaseModel, JSONField, UtcDateTimeField, utcnow


class Agent(BaseModel):
    name = peewee.CharField(max_length=64, unique=True)
    stage = peewee.IntegerField()
    skills = JSONField(default=list)
    capacity = peewee.IntegerField(default=10)
    supervisor = peewee.BooleanField(default=False)
    token_hash = peewee.CharField(max_length=64, unique=True)
    created_at = UtcDateTimeField(default=utcnow)
    revoked_at = UtcDateTimeField(null=True)
    #: ``available``, ``away`` or ``offline``: push routing offers tickets to available agents only.
    presence = peewee.CharField(max_length=16, default="available")
    presence_at = UtcDateTimeField(null=True)

    @property
    def stage_name(self) -> str:
        return f"stage{self.stage}"

    @property
    def actor(self) -> str:
        return f"agent:{self.id}"


PRESENCES = ("available", "away", "offline")


def hash_token(token: str) -> str:
    """Tokens are 256 random bits, so one SHA-256 is enough (no password stretching needed)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)
