"""Agents of the four pools; their bearer tokens are stored only as hashes."""
from __future__ import annotations

import hashlib
import secrets

import peewee

from models.base import BaseModel, JSONField, UtcDateTimeField, database, utcnow


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


# -- managing agents (``disputes agents ...``, the demo, the benchmarks) -----------------------

class AgentExists(Exception):
    """An agent with this name already exists."""


def add_agent(name: str, stage: int, *, skills: list[str] | None = None, capacity: int = 10,
              supervisor: bool = False) -> str:
    """Create an agent and return its bearer token — shown once, stored only as a hash."""
    if stage not in (1, 2, 3, 4):
        raise ValueError("stage must be 1, 2, 3 or 4")
    if capacity < 1:
        raise ValueError("capacity must be at least 1")
    token = new_token()
    with database.atomic():
        if Agent.select().where(Agent.name == name).exists():
            raise AgentExists(f"an agent named '{name}' already exists")
        Agent.create(name=name, stage=stage, skills=skills or [], capacity=capacity, supervisor=supervisor,
                     token_hash=hash_token(token))
    return token


def revoke_agent(name: str) -> bool:
    """Withdraw the agent's token; False when no active agent has that name."""
    with database.atomic():
        return bool(Agent.update(revoked_at=utcnow())
                    .where((Agent.name == name) & Agent.revoked_at.is_null()).execute())


def list_agents() -> list[Agent]:
    return list(Agent.select().order_by(Agent.stage, Agent.name))
