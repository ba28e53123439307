"""``POST /me/claim``: hand an agent the next waiting ticket of their stage.

Many agents of a pool claim at once, on SQLite or PostgreSQL. Rather than
lock rows (``SKIP LOCKED`` is PostgreSQL-only), a claim is an ordinary table
action — ``take_over`` for stage 1, ``claim`` for the later stages — applied
with the version the candidate was read at: of two agents racing for one
ticket exactly one wins, and the loser simply tries the next candidate.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import peewee


from models.views.ticket import claimable_by
from models.agent import Agent
from models.change import Actor
from models.errors import Refused
from models.prepared import Prepared, Slots
from models.routing import order_for
from models.states import TERMINAL_STATES, State
from models.ticket import Ticket
from models.workflow import apply
from models.sending import send_dispatches

if TYPE_CHECKING:
    from disputes.wiring import App

#: Candidates read per claim; the agent's skills reorder within this window.
CANDIDATE_WINDOW = 20
#: Candidates tried before answering "none" (each failure means another agent won it).
CLAIM_ATTEMPTS = 5


def open_assigned(agent: Agent) -> int:
    """How many unfinished tickets the agent holds now (capacity is checked against this)."""
    return _HELD.execute(agent=agent.id).fetchone()[0]


_HELD = Prepared(lambda s: Ticket.select(peewee.fn.COUNT(Ticket.id)).where(
    (Ticket.assignee == s.agent) & Ticket.state.not_in([state.value for state in TERMINAL_STATES])))


def candidates(agent: Agent, app: "App", window: int = CANDIDATE_WINDOW) -> list[Ticket]:
    """Unassigned tickets of the agent's stage, in the order routing gives this agent (see
    `models.routing.order_for`): waiting past the fallback first, then priority, SLA due, affinity."""
    rows: list[Ticket] = []
    for state in waiting_states(agent.stage):  # one index range each (``ticket_claim_order``)
        rows.extend(_waiting_in(state).rows(Ticket, agent=agent.id, window=window))
    skills = set(agent.skills or [])
    rows = order_for(agent, rows, app.policy, app.clock())
    if skills:
        rows.sort(key=lambda t: 0 if (t.category in skills or t.dispute_type in skills) else 1)
    return [t for t in rows if claimable_by(t, agent)]


@functools.lru_cache(maxsize=None)
def _waiting_in(state: str) -> Prepared:
    """The first unassigned tickets of `state` in claim order; in stage 3 not those `agent` judged
    (an appeal goes to another judge)."""
    def build(s: Slots) -> peewee.Query:
        where = (Ticket.state == state) & Ticket.assignee.is_null()
        if state == State.STAGE3:
            where &= Ticket.judged_by.is_null() | (Ticket.judged_by != s.agent)
        return (Ticket.select().where(where).order_by(Ticket.priority.desc(), Ticket.sla_due_at.asc(nulls="LAST"),
                                                      Ticket.state_entered_at, Ticket.id).limit(s.window))
    return Prepared(build)


def waiting_states(stage: int) -> tuple[str, ...]:
    """Where unassigned tickets wait for a stage's agents: stage 1 takes over from
    ``awaiting_takeover`` and also picks up ``stage1`` tickets an expired lease released."""
    if stage == 1:
        return (State.AWAITING_TAKEOVER.value, State.STAGE1.value)
    return (f"stage{stage}",)


def claim_next(agent: Agent, app: "App") -> Ticket | None:
    """Assign the agent the next waiting ticket of their stage and return it (its new version);
    None when the agent is at capacity or nothing is waiting."""
    if agent.stage not in (1, 2, 3, 4) or open_assigned(agent) >= agent.capacity:
        return None
    actor = Actor.agent(agent.stage, agent.id)
    for ticket in candidates(agent, app)[:CLAIM_ATTEMPTS]:
        action = "take_over" if ticket.state == State.AWAITING_TAKEOVER else "claim"
        try:
            outcome = apply(ticket.id, action, actor, {}, app.policy, expected_version=ticket.version,
                            now=app.clock(), read=ticket)
        except Refused:  # VersionConflict, NotAllowed or UnknownTicket
            continue  # another agent got there first: try the next one
        send_dispatches(app.broker, outcome.dispatches)
        return outcome.ticket
    return None
