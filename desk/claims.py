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
version, so it takes no savepoint of its own. On PostgreSQL the
candidate's whole row (which the workflow then need not read again) is read
together with a claim lock on it — a transaction-scoped advisory lock that
only claims take, so no other writer ever waits on it and the row locks keep
their usual order: a ticket another claim is writing at that moment is passed
over at once instead of written, waited for and lost — what a pool of agents
starting together would otherwise queue on. SQLite writes one transaction at
a time anyway, so there the version guard alone decides.
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
    claim_locks = isinstance(database.obj, peewee.PostgresqlDatabase)
    attempts = 0
    for ticket in candidates(agent, app):
        action = "take_over" if ticket.state == State.AWAITING_TAKEOVER else "claim"
        try:
            with database.atomic() if claim_locks else contextlib.nullcontext():
                read = None
                if claim_locks:
                    # PostgreSQL: take the candidate's claim lock, or skip it at once (one cheap
                    # statement, not an attempt) when another claim holds it or took the ticket
                    # already — instead of running the change only to wait on that claim's row lock
                    # and lose.
                    read = _TAKE.first(Ticket, id=ticket.id, version=ticket.version, lock_class=CLAIM_LOCK_CLASS)
                    if read is None:
                        continue
                attempts += 1
                # The workflow writes the ticket only if still at the version read here (`read`, the
                # locked row, spares it reading the row again).
                outcome = apply(ticket.id, action, actor, {}, app.policy, expected_version=ticket.version,
                                now=app.clock(), read=read)
        except Refused:  # VersionConflict, NotAllowed or UnknownTicket
            if attempts >= CLAIM_ATTEMPTS:
                return None
            continue  # another agent got there first: try the next one
        send_dispatches(app.broker, outcome.dispatches)
        return outcome.ticket
    return None


#: The first key of the claim locks (``pg_try_advisory_xact_lock(CLAIM_LOCK_CLASS, ticket_id)``).
CLAIM_LOCK_CLASS = 0x636C6169  # "clai"

#: The whole candidate if still waiting at the version read, with its claim lock for the rest of the
#: transaction; no row when another claim holds that lock (PostgreSQL only). The CASE makes the
#: lock the last thing tried: PostgreSQL orders plain ANDed conditions as it likes, and took locks
#: on stale candidates (held to the end of the claim, they made other agents skip live ones); it
#: also keeps ``assignee IS NULL`` from steering the plan onto the claim-order index instead of
#: the primary key.
_TAKE = Prepared(lambda s: Ticket.select().where(
    (Ticket.id == s.id) & peewee.Case(None, [(
        (Ticket.version == s.version) & Ticket.assignee.is_null(),
        peewee.fn.pg_try_advisory_xact_lock(s.lock_class, Ticket.id))], False)))
