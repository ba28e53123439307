"""Routing: scores choose the agent, capacity and presence are respected, claims are leases."""
from __future__ import annotations

from datetime import timedelta

import pytest

from models.agent import add_agent
from policy import Policy
from models.agent import Agent
from models.audit import TicketEvent
from models.base import utcnow
from models.change import Actor, Role
from models.dispatches import AgentDecision
from models.outbox import Dispatch, OutboxEvent, new_dispatch
from models.routing import choose_agent, stages_without_agents
from models.ticket import Ticket
from models.workflow import apply, open_ticket
from scheduler.claim_leases import expire_leases

STATUS = {"dispute_status": "not_reconciled", "category": "apparel"}


def agent(name: str, stage: int, capacity: int = 5) -> Agent:
    add_agent(name, stage, capacity=capacity)
    return Agent.get(Agent.name == name)


def ticket_in_stage2(policy: Policy, ref: str) -> Ticket:
    fields = dict(source="shop", external_ref=ref, channel="app", user_id="u1", merchant_id="m1", order_id=ref,
                  order_amount=10_000, currency="CNY", category="apparel", delivery="platform",
                  order_status="delivered", dispute_type="quality", claimed_amount=5_000, occurred_at=utcnow())
    ticket_id = open_ticket(fields, {"negotiation": "failed"}, policy).ticket.id  # type: ignore[union-attr]
    apply(ticket_id, "take_over", Actor.agent(1, 99), {}, policy)
    apply(ticket_id, "request_evidence", Actor.agent(1, 99), {**STATUS, "from": "user", "items": ["photo"]}, policy)
    apply(ticket_id, "evidence_deadline", Actor(Role.SCHEDULER), {}, policy)
    return Ticket.get_by_id(ticket_id)


def qc_history(about: Agent, verdict: str, times: int, on: Ticket) -> None:
    version = TicketEvent.select().where(TicketEvent.ticket == on.id).count() + 100
    for i in range(times):
        TicketEvent.create(ticket=on.id, version=version + i, from_state="stage3", to_state="stage3",
                           actor="agent:500", action="qc_sample", qc_verdict=verdict, qc_about=about.id)


def test_the_agent_with_the_better_qc_record_gets_the_ticket(app, policy) -> None:
    careful, sloppy = agent("careful", 2), agent("sloppy", 2)
    ticket = ticket_in_stage2(policy, "R1")
    qc_history(careful, "ok", 8, ticket)
    qc_history(sloppy, "flag", 8, ticket)
    choice = choose_agent(ticket, 2, policy)
    assert choice is not None and choice.agent.id == careful.id


def test_an_agent_at_capacity_or_away_gets_nothing_pushed(app, policy) -> None:
    careful, other = agent("careful", 2, capacity=1), agent("other", 2)
    ticket = ticket_in_stage2(policy, "R2")
    qc_history(careful, "ok", 8, ticket)
    held = ticket_in_stage2(policy, "R3")
    apply(held.id, "claim", Actor.agent(2, careful.id), {}, policy)  # careful is now full
    choice = choose_agent(ticket, 2, policy)
    assert choice is not None and choice.agent.id == other.id
    Agent.update(presence="away").where(Agent.id == other.id).execute()
    assert choose_agent(ticket, 2, policy) is None


def test_a_new_agent_starts_at_the_floor_not_at_zero(app, policy) -> None:
    veteran, newcomer = agent("veteran", 2), agent("newcomer", 2)
    ticket = ticket_in_stage2(policy, "R4")
    qc_history(veteran, "flag", 3, ticket)
    qc_history(veteran, "ok", 3, ticket)  # 50% ok: below the 0.6 floor a newcomer gets
    choice = choose_agent(ticket, 2, policy)
    assert choice is not None and choice.agent.id == newcomer.id


def test_a_claim_held_past_the_lease_goes_back_to_the_queue(app, policy) -> None:
    holder, next_agent = agent("holder", 2), agent("next", 2)
    ticket = ticket_in_stage2(policy, "R5")
    apply(ticket.id, "claim", Actor.agent(2, holder.id), {}, policy)
    lease = timedelta(seconds=policy.routing.lease.seconds())
    assert expire_leases(policy, utcnow() + lease - timedelta(seconds=5)) == []
    released = expire_leases(policy, utcnow() + lease + timedelta(seconds=1))
    assert len(released) == 1
    after = Ticket.get_by_id(ticket.id)
    assert (after.state, after.assignee) == ("stage2", None)
    last = TicketEvent.select().where(TicketEvent.ticket == ticket.id).order_by(TicketEvent.version.desc()).get()
    assert (last.actor, last.action) == ("scheduler", "lease_expired")
    apply(ticket.id, "claim", Actor.agent(2, next_agent.id), {}, policy)
    assert Ticket.get_by_id(ticket.id).assignee == next_agent.id


def test_a_lease_does_not_expire_under_a_decision_the_api_already_accepted(app, policy) -> None:
    """The agent decided just before the lease ran out (202, dispatch not applied yet): the decision
    keeps the lease, so it is not thrown away by a release the agent never saw coming."""
    holder = agent("holder", 2)
    ticket = ticket_in_stage2(policy, "R6")
    apply(ticket.id, "claim", Actor.agent(2, holder.id), {}, policy)
    held = Ticket.get_by_id(ticket.id)
    new_dispatch("stage2", AgentDecision(ticket.id, holder.id, "to_judgment", held.version, qc={"verdict": "ok"}))
    after_the_lease = utcnow() + timedelta(seconds=policy.routing.lease.seconds() + 1)
    assert expire_leases(policy, after_the_lease) == []
    assert (Ticket.get_by_id(ticket.id).assignee, Ticket.get_by_id(ticket.id).version) == (holder.id, held.version)
    Dispatch.update(done_at=utcnow(), outcome="refused: test").execute()  # once it is settled, the lease runs out
    assert len(expire_leases(policy, after_the_lease)) == 1


class TestPushRouting:
    @pytest.fixture
    def policy(self, make_policy) -> Policy:
        return make_policy(routing={"mode": "push"})

    def test_an_arriving_ticket_is_assigned_at_once_to_the_best_available_agent(
            self, app, worker, publish, complaint, drain) -> None:
        away, ready = agent("away", 1), agent("ready", 1)
        Agent.update(presence="away").where(Agent.id == away.id).execute()
        ticket_id = publish("complaint.submitted", complaint(negotiation="failed")).ticket_id
        drain()
        ticket = Ticket.get_by_id(ticket_id)
        assert (ticket.state, ticket.assignee) == ("stage1", ready.id)

    def test_no_available_agent_is_loud(self, app, worker, publish, complaint, drain) -> None:
        ticket_id = publish("complaint.submitted", complaint(negotiation="failed")).ticket_id
        drain()
        assert Ticket.get_by_id(ticket_id).state == "awaiting_takeover"
        alarms = [e.body for e in OutboxEvent.select().where(OutboxEvent.routing_key == "routing.no_agent")]
        assert [(a["ticket_id"], a["stage"]) for a in alarms] == [(ticket_id, "stage1")]
        assert 1 in stages_without_agents()
