"""Fixtures for the desk: a SQLite file, the in-process broker, the default policy, a test client."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import count
from pathlib import Path
from typing import Iterator

import flask
import pytest
from flask.testing import FlaskClient

import models
from tests.conftest import fund_merchant
from desk import create_api
from desk.auth import CACHE_KEY, TokenCache
from disputes.settings import Settings
from disputes.wiring import App, build_app
from models.agent import Agent, hash_token
from models.change import Actor, Role
from models.ticket import Ticket
from models.workflow import apply, open_ticket

_refs = count(1)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    built = build_app(Settings(database_url=f"sqlite:///{tmp_path}/t.db"), broker=None)
    models.init_schema()
    fund_merchant("m1")  # merchant-side judgments deduct at once (stage 4 verifies)
    yield built
    if not built.db.is_closed():
        built.db.close()


@pytest.fixture
def api(app: App) -> flask.Flask:
    return create_api(app)


@pytest.fixture
def client(api: flask.Flask) -> FlaskClient:
    return api.test_client()


@dataclass
class Caller:
    """An agent and the headers that authenticate it."""

    agent: Agent
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def add_agent(name: str, stage: int, **kwargs: object) -> Caller:
    token = f"token-{name}-{stage}"
    return Caller(Agent.create(name=name, stage=stage, token_hash=hash_token(token), **kwargs), token)


@pytest.fixture
def agents(app: App) -> dict[str, Caller]:
    """Two agents per stage: s1a, s1b, s2a, ..., s4b."""
    return {f"s{stage}{x}": add_agent(f"s{stage}{x}", stage) for stage in (1, 2, 3, 4) for x in "ab"}


def new_ticket(app: App, negotiation: str = "failed", **overrides: object) -> Ticket:
    """A complaint admitted by the intake; ``negotiation="failed"`` puts it in awaiting_takeover."""
    n = next(_refs)
    fields: dict[str, object] = dict(
        source="shop", external_ref=f"c-{n}", channel="app", user_id="u1", merchant_id="m1", order_id=f"o-{n}",
        order_amount=10_000, currency="CNY", category="apparel", delivery="platform", order_status="delivered",
        dispute_type="quality", claimed_amount=5_000, description="broken on arrival",
        occurred_at=datetime.now(timezone.utc))
    fields.update(overrides)
    outcome = open_ticket(fields, {"negotiation": negotiation}, app.policy)
    assert outcome.ticket is not None
    return outcome.ticket


def act(app: App, ticket: Ticket | int, action: str, caller: Caller | None = None, params: dict | None = None,
        role: Role | None = None, qc: dict | None = None) -> Ticket:
    """Apply an action directly through the workflow (to set a scene), returning the fresh ticket."""
    ticket_id = ticket if isinstance(ticket, int) else ticket.id
    actor = Actor.agent(caller.agent.stage, caller.agent.id) if caller else Actor(role or Role.SYSTEM)
    apply(ticket_id, action, actor, params or {}, app.policy, qc=qc)
    return Ticket.get_by_id(ticket_id)


STAGE1_PARAMS = {"dispute_status": "not_reconciled", "category": "apparel"}


def in_stage(app: App, agents: dict[str, Caller], stage: int, assignee: str | None = None) -> Ticket:
    """A ticket waiting in ``stage<stage>`` (stage 1: taken over by s1a), claimed by `assignee` if named."""
    ticket = act(app, new_ticket(app), "take_over", agents["s1a"])
    if stage >= 3:
        ticket = act(app, ticket, "to_judgment", agents["s1a"], STAGE1_PARAMS)
    if stage == 2:
        ticket = act(app, ticket, "request_evidence", agents["s1a"], {**STAGE1_PARAMS, "from": "user",
                                                                      "items": ["photo"]})
        ticket = act(app, ticket, "evidence_deadline", role=Role.SCHEDULER)
    if stage == 4:
        ticket = act(app, ticket, "claim", agents["s3a"])
        ticket = act(app, ticket, "judge", agents["s3a"], {"liability": "merchant", "remedy": "full_refund"},
                     qc={"verdict": "ok"})
    if assignee is not None and stage > 1:
        ticket = act(app, ticket, "claim", agents[assignee])
    return ticket


def tokens_expire(api: flask.Flask) -> None:
    """Move the API's token cache a TTL ahead: every agent it holds is read again (`desk.auth`)."""
    cache: TokenCache = api.extensions[CACHE_KEY]
    clock, skip = cache.clock, cache.ttl
    cache.clock = lambda: clock() + skip
