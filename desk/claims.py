"""``POST /me/claim``: hand an agent the next waiting ticket of their stage.

Many agents of a pool claim at once, on SQLite or PostgreSQL. A claim is an
ordinary table action — ``take_over`` for stage 1, ``claim`` for the later
stages — applied with the version the candidate was read at: of two agents
racing for one ticket exactly one wins, and the loser simply tries the next
candidate.

A claim reads once — the first waiting tickets of each of the stage's states
(index ``ticket_claim_order``), only the columns that order them, and how
many tickets the agent holds already, in one statement — and then writes once,
through the workflow, guarded by the version it read. Ordering several
candidates by the agent's affinity reads nothing more: those figures move over
days and are cached per agent for a minute (`models.routing.AFFINITY`). The
workflow's change runs inside the claim's own transaction on its expected
version, so it takes no savepoint of its own. On PostgreSQL the first
candidate of the window still waiting at the version read is picked and locked
in one statement (``FOR UPDATE SKIP LOCKED``), whole (the workflow then need
not read it again): a ticket another claim is writing at that moment is passed
over at once instead of waited for and lost — what a pool of agents starting
together would otherwise queue on, one statement per agent ahead of it. SQLite
writes one transaction at a time anyway, so there the version guard alone
decides.
"""
from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING

import peewee


from models.views.ticket import claimable_by
from models.agent import Agent
from models.base import database
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
#: Candidates tried before answering "none" (each failure means another agent won it). On PostgreSQL a
#: candidate another claim holds is skipped without trying it, so that costs no attempt.
CLAIM_ATTEMPTS = 5

#: What ordering and claiming a candidate needs (`order_for`, `claimable_by`, the version guard):
#: not the whole 47-column ticket, which the workflow reads for the one candidate it writes.
CANDIDATE_COLUMNS = (Ticket.id, Ticket.version, Ticket.state, Ticket.assignee, Ticket.judged_by, Ticket.priority,
                     Ticket.sla_due_at, Ticket.state_entered_at, Ticket.category, Ticket.dispute_type)


def open_assigned(agent: Agent) -> int:
    """How many unfinished tickets the agent holds now (capacity is checked against this)."""
    return _HELD.execute(agent=agent.id).fetchone()[0]


def _held_by(agent: peewee.Node) -> peewee.Query:
    return Ticket.select(peewee.fn.COUNT(Ticket.id)).where(
        (Ticket.assignee == agent) & Ticket.state.not_in([state.value for state in TERMINAL_STATES]))


_HELD = Prepared(lambda s: _held_by(s.agent))


def candidates(agent: Agent, app: "App", window: int = CANDIDATE_WINDOW) -> list[Ticket]:
    """Unassigned tickets of the agent's stage, in the order routing gives this agent (see
    `models.routing.order_for`): waiting past the fallback first, then priority, SLA due, affinity
    (cached: no statement beyond the pick, but once a minute per agent). None when the agent is at
    capacity already (counted by the same statement)."""
    rows = list(_waiting_for(agent.stage).rows(Ticket, agent=agent.id, window=window))
    if not rows or rows[0].held >= agent.capacity:
        return []
    if len(rows) > 1:  # one candidate needs no order (nor the affinity query)
        rows = order_for(agent, rows, app.policy, app.clock())
    skills = set(agent.skills or [])
    if skills:
        rows.sort(key=lambda t: 0 if (t.category in skills or t.dispute_type in skills) else 1)
    return [t for t in rows if claimable_by(t, agent)]


def _waiting(state: str, s: Slots, columns: tuple[peewee.Node, ...] = ()) -> peewee.Query:
    """The first unassigned tickets of `state` in claim order (one range of ``ticket_claim_order``);
    in stage 3 not those `agent` judged (an appeal goes to another judge)."""
    where = (Ticket.state == state) & Ticket.assignee.is_null()
    if state == State.STAGE3:
        where &= Ticket.judged_by.is_null() | (Ticket.judged_by != s.agent)
    return (Ticket.select(*columns).where(where).order_by(Ticket.priority.desc(), Ticket.sla_due_at.asc(nulls="LAST"),
                                                          Ticket.state_entered_at, Ticket.id).limit(s.window))


@functools.lru_cache(maxsize=None)
def _waiting_in(state: str) -> Prepared:
    """The first unassigned tickets of `state` in claim order, whole rows."""
    return Prepared(lambda s: _waiting(state, s))


@functools.lru_cache(maxsize=None)
def _waiting_for(stage: int) -> Prepared:
    """`_waiting` of each of the stage's states (their `CANDIDATE_COLUMNS`), with ``held``: the
    tickets the agent holds now — one statement instead of one per state and a count."""
    def build(s: Slots) -> peewee.Query:
        def columns(alias: str) -> list[peewee.Node]:
            return [peewee.Entity(alias, c.column_name) for c in CANDIDATE_COLUMNS]
        states = waiting_states(stage)
        if len(states) == 1:
            waiting = _waiting(states[0], s, CANDIDATE_COLUMNS).alias("w")
        else:  # each state's window a subquery: SQLite allows no LIMIT in a member of a UNION
            parts = [peewee.Select([_waiting(state, s, CANDIDATE_COLUMNS).alias(f"w{n}")], columns(f"w{n}"))
                     for n, state in enumerate(states)]
            waiting = functools.reduce(lambda a, b: a.union_all(b), parts).alias("w")
        return peewee.Select([waiting], [*columns("w"), _held_by(s.agent).alias("held")]).bind(database)
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
    if agent.stage not in (1, 2, 3, 4):
        return None
    actor = Actor.agent(agent.stage, agent.id)
    window = candidates(agent, app)
    if isinstance(database.obj, peewee.PostgresqlDatabase):
        return _claim_first_free(window, actor, app)
    attempts = 0
    for ticket in window:  # SQLite writes one transaction at a time: the version guard alone decides
        attempts += 1
        try:
            outcome = apply(ticket.id, _claim_action(ticket), actor, {}, app.policy, expected_version=ticket.version,
                            now=app.clock())
        except Refused:  # VersionConflict, NotAllowed or UnknownTicket
            if attempts >= CLAIM_ATTEMPTS:
                return None
            continue  # another agent got there first: try the next one
        send_dispatches(app.broker, outcome.dispatches)
        return outcome.ticket
    return None


def _claim_first_free(window: list[Ticket], actor: Actor, app: "App") -> Ticket | None:
    """PostgreSQL: lock the first candidate of the window that is still waiting at the version read
    and that no other claim holds — one statement however many agents race for the same window
    (``FOR UPDATE SKIP LOCKED``: a row another claim is writing is passed over, not waited for) — and
    claim it in the same transaction, through the workflow."""
    attempts = 0
    while window and attempts < CLAIM_ATTEMPTS:
        attempts += 1
        try:
            with database.atomic():
                read = _FIRST_FREE.first(Ticket, ids=[t.id for t in window], versions=[t.version for t in window])
                if read is None:
                    return None  # every candidate was taken or is being taken: the agent asks again
                # The workflow writes the ticket only if still at the version read here (`read`, the
                # locked row, spares it reading the row again).
                outcome = apply(read.id, _claim_action(read), actor, {}, app.policy, expected_version=read.version,
                                now=app.clock(), read=read)
        except Refused:  # the workflow refused this one (a guard): try the rest of the window
            window = [t for t in window if t.id != read.id]
            continue
        send_dispatches(app.broker, outcome.dispatches)
        return outcome.ticket
    return None


def _claim_action(ticket: Ticket) -> str:
    return "take_over" if ticket.state == State.AWAITING_TAKEOVER else "claim"


def _first_free(s: Slots) -> peewee.Query:
    """The first of the candidates ``s.ids`` (in that order) still unassigned at its version in
    ``s.versions``, locked, skipping any another transaction holds (PostgreSQL only)."""
    ids, versions = peewee.Cast(s.ids, "integer[]"), peewee.Cast(s.versions, "integer[]")
    position = peewee.fn.array_position(ids, Ticket.id)
    version_read = peewee.NodeList((peewee.SQL("("), versions, peewee.SQL(")["), position, peewee.SQL("]")), glue="")
    # The CASE keeps ``assignee IS NULL`` from steering the plan onto the claim-order index (all
    # waiting tickets) instead of the primary key (the window's few).
    unchanged = (Ticket.version == version_read) & Ticket.assignee.is_null()
    # Literals: a bound True would be prepared as text.
    still_waiting = peewee.Case(None, [(unchanged, peewee.SQL("TRUE"))], peewee.SQL("FALSE"))
    return (Ticket.select()
            .where((Ticket.id == peewee.fn.ANY(ids)) & still_waiting)
            .order_by(position).limit(1).for_update(skip_locked=True))


_FIRST_FREE = Prepared(_first_free)
