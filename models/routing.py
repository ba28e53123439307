"""Which agent gets which ticket (千人千面): scores per stage, category and dispute type.

An agent's score for a ticket weighs (policy ``routing.weights``) their
buyers' satisfaction on tickets of that category and dispute type, the QC
verdicts later stages gave their work, and their free capacity — so the best
agent for a case gets it, a busy one yields to an idle one, and a new agent
(too few samples) starts at ``routing.new_agent_floor`` rather than at zero.
Push routing offers each arriving ticket to the best available agent; pull
routing orders an agent's candidates by the same affinity.

Pull routing runs on every claim, so an agent's affinity figures are read from
`AFFINITY`, a cache holding each agent's figures for every kind of ticket for
`AffinityCache.ttl` seconds (60): a claim costs its pick and its write, not an
aggregate over the audit trail and the surveys. Those figures move slowly —
a survey arrives days after its ticket closed and is one sample among many —
so a minute's staleness changes no ordering that matters, and the floor for a
new agent applies until their first figures are read.
"""
from __future__ import annotations

import functools
import operator
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import peewee

from models.agent import Agent
from models.audit import TicketEvent
from models.base import database
from models.party import SurveyAnswer
from models.states import TERMINAL_STATES
from models.ticket import Ticket

if TYPE_CHECKING:
    from policy import Policy

#: Below this many samples a score is blended with the new-agent floor.
MIN_SAMPLES = 5


@dataclass(frozen=True)
class Candidate:
    agent: Agent
    score: float
    load: int


def open_load(agent_ids: list[int]) -> dict[int, int]:
    """Unfinished tickets each agent holds now."""
    if not agent_ids:
        return {}
    rows = (Ticket.select(Ticket.assignee, peewee.fn.COUNT(Ticket.id))
            .where(Ticket.assignee.in_(agent_ids) & Ticket.state.not_in([str(s) for s in TERMINAL_STATES]))
            .group_by(Ticket.assignee).tuples())
    return {agent: int(n) for agent, n in rows}


def satisfaction(agent_ids: list[int], category: str, dispute_type: str) -> dict[int, tuple[float, int]]:
    """(mean survey score 0..1, samples) of buyers on tickets of this kind each agent worked."""
    rows = _satisfaction_rows(agent_ids, [(category, dispute_type)])
    return {agent: value for (agent, _, _), value in rows.items()}


#: (mean survey score 0..1, samples) per (category, dispute type): one agent's figures.
Figures = dict[tuple[str, str], tuple[float, int]]


def agent_affinity(agent_id: int, kinds: set[tuple[str, str]]) -> Figures:
    """(mean survey score 0..1, samples) of one agent per (category, dispute type) among `kinds`,
    as `AFFINITY` holds them: at most one query per agent per `AffinityCache.ttl`, whatever the kinds."""
    known = AFFINITY.figures(agent_id)
    return {kind: known[kind] for kind in kinds if kind in known}


class AffinityCache:
    """Each agent's figures for every kind of ticket, read in one query and kept `ttl` seconds.

    Stale by at most `ttl`: an entry older than that is read again on its next use. Entries are
    kept per database (a process, or a test run, may serve several), and `clear` forgets them all
    (tests that add surveys and then claim call it, as `tests/routing` does)."""

    def __init__(self, ttl: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._entries: weakref.WeakKeyDictionary[peewee.Database, dict[int, tuple[float, Figures]]] = \
            weakref.WeakKeyDictionary()

    def figures(self, agent_id: int) -> Figures:
        entries = self._entries.setdefault(database.obj, {})
        now = self.clock()
        entry = entries.get(agent_id)
        if entry is None or now - entry[0] >= self.ttl:
            rows = _satisfaction_rows([agent_id], None)
            entry = entries[agent_id] = (now, {(c, d): value for (_, c, d), value in rows.items()})
        return entry[1]

    def clear(self) -> None:
        self._entries.clear()


#: The process's affinity cache (pull routing reads it on every claim).
AFFINITY = AffinityCache()


def _satisfaction_rows(agent_ids: list[int], kinds: list[tuple[str, str]] | None
                       ) -> dict[tuple[int, str, str], tuple[float, int]]:
    """Per (agent, category, dispute type): the mean survey score and samples; `kinds` None: all."""
    if not agent_ids or kinds == []:
        return {}
    actors = [f"agent:{a}" for a in agent_ids]
    where = TicketEvent.actor.in_(actors)
    if kinds is not None:
        where &= functools.reduce(operator.or_, [(Ticket.category == c) & (Ticket.dispute_type == d)
                                                 for c, d in kinds])
    rows = (TicketEvent.select(TicketEvent.actor, Ticket.category, Ticket.dispute_type,
                               peewee.fn.AVG(SurveyAnswer.score),
                               peewee.fn.COUNT(peewee.fn.DISTINCT(TicketEvent.ticket)))
            .join(SurveyAnswer, on=(SurveyAnswer.ticket_id == TicketEvent.ticket))
            .join(Ticket, on=(Ticket.id == TicketEvent.ticket))
            .where(where)
            .group_by(TicketEvent.actor, Ticket.category, Ticket.dispute_type).tuples())
    return {(int(actor.split(":")[1]), category, dispute_type): ((float(avg) - 1) / 4, int(n))
            for actor, category, dispute_type, avg, n in rows}


def quality(agent_ids: list[int]) -> dict[int, tuple[float, int]]:
    """(share of QC verdicts ``ok`` about the agent's work, samples)."""
    if not agent_ids:
        return {}
    ok = peewee.fn.SUM(peewee.Case(None, [(TicketEvent.qc_verdict == "ok", 1)], 0))
    rows = (TicketEvent.select(TicketEvent.qc_about, ok, peewee.fn.COUNT(TicketEvent.id))
            .where(TicketEvent.qc_about.in_(agent_ids) & TicketEvent.qc_verdict.is_null(False))
            .group_by(TicketEvent.qc_about).tuples())
    return {int(agent): (int(good or 0) / int(n), int(n)) for agent, good, n in rows if n}


def _blend(value: tuple[float, int] | None, floor: float) -> float:
    if value is None:
        return floor
    score, samples = value
    if samples >= MIN_SAMPLES:
        return score
    return (score * samples + floor * (MIN_SAMPLES - samples)) / MIN_SAMPLES


def rank(agents: list[Agent], ticket: Ticket, policy: "Policy") -> list[Candidate]:
    """Agents with free capacity, best score first (ties: the least loaded)."""
    ids = [a.id for a in agents]
    loads, sat, qc = open_load(ids), satisfaction(ids, ticket.category, ticket.dispute_type), quality(ids)
    w, floor = policy.routing.weights, policy.routing.new_agent_floor
    ranked = []
    for agent in agents:
        load = loads.get(agent.id, 0)
        if load >= agent.capacity:
            continue
        score = (w.get("satisfaction", 0) * _blend(sat.get(agent.id), floor)
                 + w.get("qc", 0) * _blend(qc.get(agent.id), floor)
                 + w.get("load", 0) * (1 - load / agent.capacity))
        ranked.append(Candidate(agent, score, load))
    return sorted(ranked, key=lambda c: (-c.score, c.load, c.agent.id))


def eligible_agents(stage: int, ticket: Ticket | None = None) -> list[Agent]:
    """Available (not away, not offline, not revoked) agents of the stage; an appeal skips its judge."""
    query = Agent.select().where((Agent.stage == stage) & Agent.revoked_at.is_null()
                                 & (Agent.presence == "available"))
    agents = list(query)
    if ticket is not None and stage == 3 and ticket.judged_by is not None:
        agents = [a for a in agents if a.id != ticket.judged_by]
    return agents


def choose_agent(ticket: Ticket, stage: int, policy: "Policy") -> Candidate | None:
    """Push routing: the best available agent with free capacity, or None (a loud condition)."""
    ranked = rank(eligible_agents(stage, ticket), ticket, policy)
    return ranked[0] if ranked else None


def order_for(agent: Agent, tickets: list[Ticket], policy: "Policy", now: datetime) -> list[Ticket]:
    """Pull routing: tickets past ``routing.unassigned_fallback`` first (any free agent takes them),
    then higher priority, then the promise due soonest, then the agent's affinity (as of at most
    `AffinityCache.ttl` ago, blended with this policy's new-agent floor)."""
    fallback = now - timedelta(seconds=policy.routing.unassigned_fallback.seconds())
    kinds = {(t.category, t.dispute_type) for t in tickets}
    known = agent_affinity(agent.id, kinds)
    scores = {key: _blend(known.get(key), policy.routing.new_agent_floor) for key in kinds}
    far = datetime.max.replace(tzinfo=now.tzinfo)
    return sorted(tickets, key=lambda t: (t.state_entered_at > fallback, -(t.priority or 0), t.sla_due_at or far,
                                          -scores[(t.category, t.dispute_type)], t.id))


def stages_without_agents() -> list[int]:
    """Stages where no agent is available at all: tickets there wait for nobody (alarm)."""
    staffed = {s for (s,) in Agent.select(Agent.stage).where(Agent.revoked_at.is_null()
                                                              & (Agent.presence == "available")).tuples()}
    return [s for s in (1, 2, 3, 4) if s not in staffed]
