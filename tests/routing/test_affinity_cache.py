"""Pull routing's affinity figures: read at most once per agent per cache window, never staler than it.

A claim with several candidates orders them by the agent's buyers' satisfaction per kind of ticket
(`models.routing.order_for`); that aggregate over the audit trail and the surveys is cached per agent
(`models.routing.AFFINITY`) so a claim costs its pick and its write.
"""
from __future__ import annotations

from typing import Iterator

import peewee
import pytest

from desk.claims import claim_next
from disputes.wiring import App
from models.agent import Agent, add_agent
from models.audit import TicketEvent
from models.base import utcnow
from models.party import SurveyAnswer
from models.routing import AFFINITY, AffinityCache, agent_affinity
from models.ticket import Ticket
from models.workflow import open_ticket
import tests.statements

KIND = ("apparel", "quality")


class Statements(tests.statements.Statements):
    def affinity_reads(self) -> int:
        """The satisfaction aggregates read (the query `AFFINITY` caches: surveys joined to the trail)."""
        return sum("AVG(" in s.upper() and "SURVEY" in s.upper() for s in self.sql)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def affinity_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    """`AFFINITY` on a clock the test moves; emptied before and after."""
    fake = FakeClock()
    monkeypatch.setattr(AFFINITY, "clock", fake)
    AFFINITY.clear()
    yield fake
    AFFINITY.clear()


_refs = iter(range(1, 10_000))


def waiting_ticket(app: App, category: str = "apparel") -> Ticket:
    """A ticket in awaiting_takeover (negotiation failed)."""
    n = next(_refs)
    fields = dict(source="shop", external_ref=f"aff-{n}", channel="app", user_id="u1", merchant_id="m1",
                  order_id=f"aff-o{n}", order_amount=10_000, currency="CNY", category=category,
                  delivery="platform", order_status="delivered", dispute_type="quality", claimed_amount=5_000,
                  occurred_at=utcnow())
    ticket = open_ticket(fields, {"negotiation": "failed"}, app.policy).ticket
    assert ticket is not None
    return ticket


def stage1_agent(name: str) -> Agent:
    add_agent(name, 1, capacity=100)
    return Agent.get(Agent.name == name)


def surveyed(agent: Agent, score: int, app: App) -> None:
    """A ticket of `KIND` the agent worked, whose buyer answered the survey with `score` (1..5)."""
    ticket = waiting_ticket(app)
    TicketEvent.create(ticket=ticket.id, version=ticket.version + 1, from_state=ticket.state, to_state="stage1",
                       actor=f"agent:{agent.id}", action="take_over")
    SurveyAnswer.create(ticket_id=ticket.id, user_id="u1", score=score)
    Ticket.update(state="closed").where(Ticket.id == ticket.id).execute()  # not a candidate any more


def test_claims_among_several_candidates_read_each_agents_affinity_once_per_window(
        db_app: App, affinity_clock: FakeClock) -> None:
    app = db_app
    first, second = stage1_agent("first"), stage1_agent("second")
    for category in ("apparel", "shoes", "apparel", "books", "apparel", "shoes", "books", "apparel"):
        waiting_ticket(app, category)  # several candidates of several kinds: every claim orders them

    with Statements() as claims:
        for agent in (first, first, second, first, second):
            assert claim_next(agent, app) is not None
            affinity_clock.now += 10  # all within the window
    assert claims.affinity_reads() == 2, claims.sql  # one per agent, whatever kinds each window held

    affinity_clock.now += AFFINITY.ttl  # the window has passed: the next claim reads the figures again
    with Statements() as later:
        assert claim_next(first, app) is not None
    assert later.affinity_reads() == 1


def test_a_claim_is_its_pick_and_its_write_once_the_figures_are_cached(db_app: App, affinity_clock: FakeClock) -> None:
    app = db_app
    agent = stage1_agent("picker")
    for _ in range(3):
        waiting_ticket(app)
    assert claim_next(agent, app) is not None  # reads the figures
    with Statements() as claim:
        assert claim_next(agent, app) is not None
    reads = [s for s in claim.sql if s.lstrip().upper().startswith("SELECT")]
    # the window (one statement for both stage-1 states), then the chosen candidate's whole row: on
    # PostgreSQL the first free one of the window, locked; on SQLite read by the workflow; then the
    # change's writes only
    assert len(reads) == 2, claim.sql
    assert "UNION" in reads[0].upper()
    assert ("FOR UPDATE SKIP LOCKED" in reads[1]) == isinstance(db_app.db, peewee.PostgresqlDatabase)
    assert not any(s.upper().startswith(("SAVEPOINT", "RELEASE")) for s in claim.sql), claim.sql
    assert claim.affinity_reads() == 0


def test_the_figures_are_stale_for_at_most_the_window(app: App, affinity_clock: FakeClock) -> None:
    agent = stage1_agent("judged")
    surveyed(agent, 5, app)
    assert agent_affinity(agent.id, {KIND}) == {KIND: (1.0, 1)}

    surveyed(agent, 1, app)  # a new survey arrives
    affinity_clock.now += AFFINITY.ttl - 1
    assert agent_affinity(agent.id, {KIND}) == {KIND: (1.0, 1)}  # not seen yet: still within the window
    affinity_clock.now += 1
    assert agent_affinity(agent.id, {KIND}) == {KIND: (0.5, 2)}  # seen once the window has passed


def test_kinds_not_in_the_agents_figures_are_simply_unknown(app: App, affinity_clock: FakeClock) -> None:
    agent = stage1_agent("kinds")
    surveyed(agent, 3, app)
    with Statements() as reads:
        assert agent_affinity(agent.id, {KIND, ("books", "quality")}) == {KIND: (0.5, 1)}
        assert agent_affinity(agent.id, {("books", "quality")}) == {}  # no second read for another kind
    assert reads.affinity_reads() == 1


def test_clearing_forgets_every_agents_figures(app: App) -> None:
    cache = AffinityCache(ttl=60.0, clock=lambda: 0.0)
    agent = stage1_agent("cleared")
    assert cache.figures(agent.id) == {}
    surveyed(agent, 5, app)
    assert cache.figures(agent.id) == {}  # cached
    cache.clear()
    assert cache.figures(agent.id) == {KIND: (1.0, 1)}
