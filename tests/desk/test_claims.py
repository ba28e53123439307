"""``POST /me/claim``: the next waiting ticket of my stage, one winner per ticket, 204 when none."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Iterator

import psycopg2
import pytest
from flask.testing import FlaskClient

from desk import create_api
from desk.claims import _FIRST_FREE, CLAIM_ATTEMPTS, claim_next
from disputes.wiring import App
from models.outbox import Dispatch
from models.ticket import Ticket

from tests.integration.conftest import PG_DSN, fresh_pg_database, make_app
from tests.statements import Statements

from .conftest import Caller, act, add_agent, in_stage, new_ticket


def test_a_stage1_claim_takes_the_ticket_over_and_keeps_it(client: FlaskClient, app: App,
                                                           agents: dict[str, Caller]) -> None:
    ticket = new_ticket(app)
    response = client.post("/me/claim", headers=agents["s1a"].headers)
    assert response.status_code == 200
    body = response.get_json()
    assert body["id"] == ticket.id
    assert body["state"] == "stage1"
    assert body["assignee"] == agents["s1a"].agent.id
    assert body["version"] == ticket.version + 1
    assert body["allowed_actions"] == ["request_evidence", "to_judgment"]
    assert Ticket.get_by_id(ticket.id).assignee == agents["s1a"].agent.id


def test_claim_answers_204_when_nothing_waits(client: FlaskClient, agents: dict[str, Caller]) -> None:
    response = client.post("/me/claim", headers=agents["s1a"].headers)
    assert response.status_code == 204
    assert response.get_data() == b""


def test_each_ticket_goes_to_one_agent_only(client: FlaskClient, app: App, agents: dict[str, Caller]) -> None:
    new_ticket(app)
    assert client.post("/me/claim", headers=agents["s1a"].headers).status_code == 200
    assert client.post("/me/claim", headers=agents["s1b"].headers).status_code == 204


def test_the_ticket_whose_promise_falls_due_first_is_claimed_first(app: App, agents: dict[str, Caller]) -> None:
    late, early = new_ticket(app), new_ticket(app)
    two_hours_ago = datetime.now(timezone.utc) - timedelta(hours=2)
    Ticket.update(floor_at=two_hours_ago, sla_due_at=two_hours_ago + timedelta(hours=1)).where(
        Ticket.id == early.id).execute()
    claimed = claim_next(agents["s1a"].agent, app)
    assert claimed is not None and claimed.id == early.id
    assert late.id != early.id


def test_a_stage1_agent_never_claims_negotiating_tickets(app: App, agents: dict[str, Caller]) -> None:
    new_ticket(app, negotiation="pending")
    assert claim_next(agents["s1a"].agent, app) is None


def test_later_stages_claim_unassigned_tickets_of_their_own_state(app: App, agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 3)
    assert claim_next(agents["s2a"].agent, app) is None
    claimed = claim_next(agents["s3a"].agent, app)
    assert claimed is not None and claimed.id == ticket.id
    assert (claimed.state, claimed.assignee) == ("stage3", agents["s3a"].agent.id)
    assert claim_next(agents["s3b"].agent, app) is None


def test_an_appeal_goes_to_another_judge(app: App, agents: dict[str, Caller]) -> None:
    ticket = in_stage(app, agents, 3)
    Ticket.update(judged_by=agents["s3a"].agent.id).where(Ticket.id == ticket.id).execute()
    assert claim_next(agents["s3a"].agent, app) is None
    claimed = claim_next(agents["s3b"].agent, app)
    assert claimed is not None and claimed.id == ticket.id


def test_an_agent_at_capacity_gets_nothing_more(app: App, agents: dict[str, Caller]) -> None:
    busy = add_agent("busy", 1, capacity=1)
    new_ticket(app), new_ticket(app)
    assert claim_next(busy.agent, app) is not None
    assert claim_next(busy.agent, app) is None
    assert claim_next(agents["s1a"].agent, app) is not None


def test_a_lost_race_moves_on_to_the_next_candidate(app: App, agents: dict[str, Caller], monkeypatch) -> None:
    first, second = new_ticket(app), new_ticket(app)
    import desk.claims as claims
    real = claims.candidates

    def stale_candidates(agent, app, window=claims.CANDIDATE_WINDOW):  # another agent took `first` meanwhile
        rows = real(agent, app, window)
        act(app, first, "take_over", agents["s1b"])
        return rows

    monkeypatch.setattr(claims, "candidates", stale_candidates)
    claimed = claim_next(agents["s1a"].agent, app)
    assert claimed is not None and claimed.id == second.id
    assert Ticket.get_by_id(first.id).assignee == agents["s1b"].agent.id


def test_skills_route_matching_tickets_first(app: App) -> None:
    skilled = add_agent("foodie", 1, skills=["food"])
    new_ticket(app)
    food = new_ticket(app, category="food")
    claimed = claim_next(skilled.agent, app)
    assert claimed is not None and claimed.id == food.id


def test_a_takeover_under_pull_routing_sends_nothing_to_the_stage_queue(app: App, agents: dict[str, Caller]) -> None:
    new_ticket(app)
    claimed = claim_next(agents["s1a"].agent, app)
    assert claimed is not None and claimed.state == "stage1"
    assert not Dispatch.select().where((Dispatch.ticket_id == claimed.id) & (Dispatch.kind == "arrive")).exists()
    assert app.broker.queues["stage1"].qsize() == 0


def test_agents_claiming_at_once_each_get_different_tickets(api, app: App) -> None:
    from concurrent.futures import ThreadPoolExecutor

    tickets = {new_ticket(app).id for _ in range(8)}
    callers = [add_agent(f"racer{i}", 1) for i in range(4)]

    with ThreadPoolExecutor(len(callers)) as pool:
        results = list(pool.map(lambda caller: claim_until_none(api, caller), callers))
    claimed = [t for won in results for t in won]
    assert sorted(claimed) == sorted(tickets)
    for caller, won in zip(callers, results):
        assert all(Ticket.get_by_id(t).assignee == caller.agent.id for t in won)


def claim_until_none(api, caller: Caller) -> list[int]:
    """Claim through the API until nothing waits (204); the ids of the tickets won."""
    client, won = api.test_client(), []
    while True:
        response = client.post("/me/claim", headers=caller.headers)
        if response.status_code == 204:
            return won
        assert response.status_code == 200, response.get_data(as_text=True)
        won.append(response.get_json()["id"])


@pytest.fixture
def pg_app(app: App) -> Iterator[App]:
    """A fresh PostgreSQL database with the test app's policy (where claims lock with SKIP LOCKED)."""
    pg = make_app(fresh_pg_database("disputes_test_claims"), app.policy)
    yield pg
    pg.db.close()


@pytest.mark.servers
def test_on_postgresql_a_candidate_another_claim_is_writing_is_passed_over_not_waited_for(pg_app: App) -> None:
    first, second = new_ticket(pg_app), new_ticket(pg_app)
    agent = add_agent("quick", 1).agent
    pg_app.db.close()
    locked, release = threading.Event(), threading.Event()

    def hold_first() -> None:  # another claim in the middle of writing `first`
        with pg_app.db.connection_context(), pg_app.db.atomic():
            Ticket.update(priority=Ticket.priority).where(Ticket.id == first.id).execute()  # its row lock
            locked.set()
            release.wait(10)

    holder = threading.Thread(target=hold_first)
    holder.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        with pg_app.db.connection_context():
            claimed = claim_next(agent, pg_app)
        assert time.monotonic() - started < 2.0, "the claim waited on the other claim's lock"
        assert claimed is not None and claimed.id == second.id
    finally:
        release.set()
        holder.join()
    with pg_app.db.connection_context():
        assert Ticket.get_by_id(first.id).assignee is None
        assert Ticket.get_by_id(second.id).assignee == agent.id


@pytest.mark.servers
def test_on_postgresql_agents_claiming_at_once_each_get_different_tickets(pg_app: App) -> None:
    tickets = {new_ticket(pg_app).id for _ in range(3 * CLAIM_ATTEMPTS)}
    callers = [add_agent(f"racer{i}", 1, capacity=100) for i in range(6)]
    pg_app.db.close()
    api = create_api(pg_app)

    with ThreadPoolExecutor(len(callers)) as pool:
        results = list(pool.map(lambda caller: claim_until_none(api, caller), callers))
    assert sorted(t for won in results for t in won) == sorted(tickets)
    with pg_app.db.connection_context():
        for caller, won in zip(callers, results):
            assert all(Ticket.get_by_id(t).assignee == caller.agent.id for t in won)


@pytest.mark.servers
def test_on_postgresql_a_stale_candidate_is_not_locked_so_another_agent_can_take_what_it_became(
        pg_app: App) -> None:
    """A claim that read a candidate at an old version passes over it without locking it: the lock
    would be held to the end of that claim, and turn away every other agent from the ticket."""
    ticket, other = new_ticket(pg_app), new_ticket(pg_app)
    with pg_app.db.connection_context(), pg_app.db.atomic():
        read = _FIRST_FREE.first(Ticket, ids=[ticket.id, other.id], versions=[ticket.version + 1, other.version])
        assert read is not None and read.id == other.id  # the stale one passed over, the next one taken
        probe = psycopg2.connect(PG_DSN.replace("dbname=test", "dbname=disputes_test_claims"))
        try:
            with probe.cursor() as cur:  # another session can still lock the stale candidate at once
                cur.execute('SELECT id FROM ticket WHERE id = %s FOR UPDATE NOWAIT', (ticket.id,))
                assert cur.fetchone() == (ticket.id,)
                with pytest.raises(psycopg2.errors.LockNotAvailable):
                    cur.execute('SELECT id FROM ticket WHERE id = %s FOR UPDATE NOWAIT', (other.id,))
        finally:
            probe.close()
        pg_app.db.execute_sql("SET LOCAL enable_seqscan = off")  # a table this small would be scanned
        sql, params = _FIRST_FREE.bind(ids=[ticket.id], versions=[ticket.version])
        plan = "\n".join(row[0] for row in pg_app.db.execute_sql("EXPLAIN " + sql, params))
        assert "ticket_pkey" in plan, plan  # a pick by id, not a walk of the claim-order index


@pytest.mark.servers
def test_on_postgresql_a_claim_is_one_pick_and_one_write(pg_app: App) -> None:
    for _ in range(3):
        new_ticket(pg_app)
    agent = add_agent("lean", 1).agent
    with pg_app.db.connection_context(), Statements() as seen:
        claimed = claim_next(agent, pg_app)
    assert claimed is not None
    picks = [q for q in seen.sql if "FOR UPDATE SKIP LOCKED" in q]
    writes = [q for q in seen.sql if q.startswith('UPDATE "ticket"')]
    assert len(picks) == 1 and len(writes) == 1, seen.sql
