"""Managing agents and their tokens (``disputes agents ...``); shared by the CLI and the demo."""
from __future__ import annotations

from models.agent import Agent, hash_token, new_token
from models.base import database, utcnow


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
