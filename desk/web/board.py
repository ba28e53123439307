"""The supervisor dashboard's figures, read live from the tables that own them.

Each figure is one grouped query (the dashboard refreshes every few seconds
on a floor of thousands of tickets): the backlog from ``Ticket``, throughput
and QC from the audit trail (``TicketEvent``), satisfaction from
``SurveyAnswer`` joined to the agent whose decision closed the ticket, and the
SLA breaches from `models.views.sla` — the same code ``/metrics`` and
``GET /tickets/{id}`` use, so the three never disagree.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from peewee import JOIN, fn

from models.views.floor import most_overdue, open_breaches
from models.agent import Agent
from models.audit import TicketEvent
from models.outbox import Dispatch
from models.party import SurveyAnswer
from models.states import STAGES, STATES, State
from models.ticket import Ticket
from planning.tomorrow import Cached

if TYPE_CHECKING:
    from disputes.wiring import App

#: Hours of throughput shown.
THROUGHPUT_HOURS = 24
#: Breached tickets listed by name (the counts cover them all).
BREACH_LIST = 10
#: How far back a "no agent available" routing outcome still raises the alarm.
NO_AGENT_WINDOW = timedelta(hours=1)

_TERMINAL = [s.value for s, info in STATES.items() if info.terminal]


@dataclass
class StageRow:
    stage: str
    #: (state, open tickets, of which nobody holds) for each state the stage works.
    states: list[tuple[str, int, int]]
    oldest: Ticket | None
    #: Tickets of this stage whose routing found no agent at all in the last hour.
    no_agent: int = 0


@dataclass
class AgentRow:
    agent: Agent
    load: int
    qc_flags: int
    qc_total: int
    qc_reasons: dict[str, int]
    satisfaction: float | None
    surveys: int


@dataclass
class PlanRow:
    """One stage in tomorrow's plan beside its agents now."""

    stage: str
    present: int
    roster: int
    peak: int
    peak_hour: datetime | None


@dataclass
class PlanPanel:
    """Tomorrow's plan (`planning`), or why there is none yet."""

    day: date | None
    rows: list[PlanRow]
    #: Why no plan could be made (too little data); None when there is one or it is being made.
    refused: list[str] | None
    target_wait_s: float = 0.0
    probability: float = 0.0


@dataclass
class Board:
    now: datetime
    stages: list[StageRow]
    #: Open tickets outside the floor (waiting on a party, logistics, a payment), by state.
    hidden: list[tuple[str, int]]
    breach_counts: dict[str, int]
    #: (ticket, the promises it broke), most overdue first.
    breached: list[tuple[Ticket, list[str]]]
    #: (hour start, agent decisions, tickets reaching the floor, tickets closed), oldest first.
    throughput: list[tuple[datetime, int, int, int]]
    agents: list[AgentRow] = field(default_factory=list)
    plan: PlanPanel | None = None

    @property
    def throughput_peak(self) -> int:
        return max([max(d, f, c) for _, d, f, c in self.throughput] + [1])


def stage_states(stage: str) -> list[str]:
    """The visible states an agent pool works, in order (stage 1 also owns the takeover queue)."""
    return [s.value for s, info in STATES.items() if info.stage == stage]


def backlog(now: datetime) -> tuple[list[StageRow], list[tuple[str, int]]]:
    totals = dict(Ticket.select(Ticket.state, fn.COUNT(Ticket.id)).where(Ticket.state.not_in(_TERMINAL))
                  .group_by(Ticket.state).tuples())
    free = dict(Ticket.select(Ticket.state, fn.COUNT(Ticket.id))
                .where(Ticket.state.not_in(_TERMINAL) & Ticket.assignee.is_null())
                .group_by(Ticket.state).tuples())
    alarms = no_agent_alarms(now)
    rows = []
    for stage in STAGES:
        states = stage_states(stage)
        waiting = Ticket.state.in_(states) & Ticket.assignee.is_null()
        oldest = Ticket.select().where(waiting).order_by(Ticket.state_entered_at, Ticket.id).first()
        rows.append(StageRow(stage, [(s, totals.get(s, 0), free.get(s, 0)) for s in states], oldest,
                             alarms.get(stage, 0)))
    hidden = [(s.value, totals.get(s.value, 0)) for s, info in STATES.items()
              if info.stage is None and not info.terminal]
    return rows, hidden


def no_agent_alarms(now: datetime) -> dict[str, int]:
    """Per stage queue: tickets that arrived, found no eligible agent, and still wait unassigned."""
    rows = (Dispatch.select(Dispatch.queue, fn.COUNT(fn.DISTINCT(Dispatch.ticket_id)))
            .join(Ticket, on=(Ticket.id == Dispatch.ticket_id))
            .where((Dispatch.outcome == "no agent available") & (Dispatch.done_at >= now - NO_AGENT_WINDOW)
                   & Ticket.assignee.is_null() & Ticket.state.not_in(_TERMINAL))
            .group_by(Dispatch.queue).tuples())
    return dict(rows)


def breaches(app: App, now: datetime) -> tuple[dict[str, int], list[tuple[Ticket, list[str]]]]:
    """How many open tickets break each promise, and the most overdue of them by name (`models.views.floor`)."""
    return open_breaches(app.policy, now), most_overdue(app.policy, now, BREACH_LIST)


def throughput(now: datetime, hours: int = THROUGHPUT_HOURS) -> list[tuple[datetime, int, int, int]]:
    """Per hour: decisions agents took, tickets that reached the floor, tickets closed."""
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    buckets = {start + timedelta(hours=i): [0, 0, 0] for i in range(hours)}
    rows = (TicketEvent.select(TicketEvent.at, TicketEvent.actor, TicketEvent.to_state, TicketEvent.from_state)
            .where(TicketEvent.at >= start).tuples())
    for at, actor, to_state, from_state in rows:
        bucket = buckets.get(at.replace(minute=0, second=0, microsecond=0))
        if bucket is None:
            continue
        if actor.startswith("agent:"):
            bucket[0] += 1
        if to_state == State.AWAITING_TAKEOVER and from_state != to_state:
            bucket[1] += 1
        if to_state == State.CLOSED and from_state != to_state:
            bucket[2] += 1
    return [(hour, *counts) for hour, counts in sorted(buckets.items())]  # type: ignore[misc]


def agent_rows() -> list[AgentRow]:
    agents = list(Agent.select().where(Agent.revoked_at.is_null()).order_by(Agent.stage, Agent.name))
    load = dict(Ticket.select(Ticket.assignee, fn.COUNT(Ticket.id))
                .where(Ticket.assignee.is_null(False) & Ticket.state.not_in(_TERMINAL))
                .group_by(Ticket.assignee).tuples())
    verdicts: dict[int, dict[str, int]] = {}
    reasons: dict[int, dict[str, int]] = {}
    for about, verdict, reason, count in (
            TicketEvent.select(TicketEvent.qc_about, TicketEvent.qc_verdict, TicketEvent.qc_reason,
                               fn.COUNT(TicketEvent.id))
            .where(TicketEvent.qc_verdict.is_null(False) & TicketEvent.qc_about.is_null(False))
            .group_by(TicketEvent.qc_about, TicketEvent.qc_verdict, TicketEvent.qc_reason).tuples()):
        mine = verdicts.setdefault(about, {})
        mine[verdict] = mine.get(verdict, 0) + count
        if verdict == "flag":
            reasons.setdefault(about, {})[reason or "other"] = count
    closer = TicketEvent.alias()
    satisfaction = {
        actor: (float(avg), int(n)) for actor, avg, n in
        SurveyAnswer.select(closer.actor, fn.AVG(SurveyAnswer.score), fn.COUNT(SurveyAnswer.id))
        .join(closer, JOIN.INNER, on=(closer.ticket == SurveyAnswer.ticket_id))
        .where((closer.to_state == State.CLOSED) & (closer.from_state != State.CLOSED)
               & closer.actor.startswith("agent:"))
        .group_by(closer.actor).tuples()}
    rows = []
    for agent in agents:
        mine = verdicts.get(agent.id, {})
        score, surveys = satisfaction.get(agent.actor, (None, 0))
        rows.append(AgentRow(agent, load.get(agent.id, 0), mine.get("flag", 0), sum(mine.values()),
                             reasons.get(agent.id, {}), score, surveys))
    return rows


def plan_panel(cached: Cached | None, agents: list[AgentRow]) -> PlanPanel:
    """Tomorrow's peak need per stage beside the agents on the roster and present now."""
    roster = {stage: [a.agent for a in agents if f"stage{a.agent.stage}" == stage] for stage in STAGES}
    present = {stage: sum(1 for a in members if a.presence == "available") for stage, members in roster.items()}
    if cached is None:
        return PlanPanel(None, [PlanRow(s, present[s], len(roster[s]), 0, None) for s in STAGES], None)
    if cached.plan is None:
        return PlanPanel(cached.day, [PlanRow(s, present[s], len(roster[s]), 0, None) for s in STAGES],
                         cached.refused)
    rows = []
    for stage in STAGES:
        hours = [r for r in cached.plan.rows if r.stage == stage]
        top = max(hours, key=lambda r: r.agents, default=None)
        rows.append(PlanRow(stage, present[stage], len(roster[stage]), top.agents if top else 0,
                            top.hour if top and top.agents else None))
    return PlanPanel(cached.day, rows, None, cached.plan.target_wait_s, cached.plan.probability)


def build_board(app: "App", now: datetime, plan: Cached | None = None) -> Board:
    stages, hidden = backlog(now)
    counts, breached = breaches(app, now)
    agents = agent_rows()
    return Board(now=now, stages=stages, hidden=hidden, breach_counts=counts, breached=breached,
                 throughput=throughput(now), agents=agents, plan=plan_panel(plan, agents))
