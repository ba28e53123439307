"""What the database says about the work of each stage, read from the audit trail.

Per stage: how many tickets arrive per complaint (negotiation settles some; evidence rounds,
cannot-judge loops and appeals bring tickets back), how long after its complaint was admitted
each of them arrived (the negotiation, the earlier stages, evidence rounds and other hidden
states, appeals: the delays that move a stage's busy hours later than the complaints'), how long
an agent holds a ticket (its claim to the decision that moves it on: ``take_over`` or ``claim``,
then the agent's change that leaves the stage), how long tickets waited for a claim, and the
agents on the stage's roster (their capacity of tickets at once, and who is present now).
"""
from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime

import peewee

from models.agent import Agent
from models.audit import TicketEvent
from models.states import STATES, State

#: The four floor stages, in order.
STAGES = ("stage1", "stage2", "stage3", "stage4")
#: The actions by which an agent takes a ticket of its stage.
CLAIMS = ("take_over", "claim")


@dataclass
class StageWork:
    """One stage's measured work."""

    stage: str
    arrivals: int = 0
    #: Seconds from the complaint's admission to each arrival (of tickets admitted in the window).
    delays: list[float] = field(default_factory=list)
    handling: list[float] = field(default_factory=list)  # seconds, claim to decision
    waits: list[float] = field(default_factory=list)  # seconds, arrival to claim
    waited_from: list[datetime] = field(default_factory=list)  # when each of `waits` began (the arrival)
    agents: int = 0
    present: int = 0
    capacity: float = 1.0

    @property
    def mean_handling(self) -> float:
        return statistics.fmean(self.handling) if self.handling else 0.0

    def quantile_handling(self, q: float) -> float:
        return _quantile(self.handling, q)


def _quantile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return statistics.fmean(values) if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


@dataclass
class Measured:
    """The window the measurements cover, the complaints in it (per hour) and each stage's work."""

    since: datetime
    until: datetime
    complaints: int
    complaints_by_hour: Counter[datetime]  # UTC hour start -> complaints admitted in it
    stages: dict[str, StageWork]

    def visits(self, stage: str) -> float:
        """Tickets arriving at `stage` per complaint admitted (loops counted)."""
        return self.stages[stage].arrivals / self.complaints if self.complaints else 0.0


def stage_of(state: str | None) -> str | None:
    if state is None:
        return None
    try:
        return STATES[State(state)].stage
    except ValueError:
        return None


def measure(since: datetime, until: datetime) -> Measured:
    """Read the audit trail of [since, until) once, in ticket and version order."""
    stages = {stage: StageWork(stage) for stage in STAGES}
    by_hour: Counter[datetime] = Counter()
    complaints = 0
    arrived: dict[str, datetime] = {}
    claimed: dict[str, datetime] = {}
    admitted: datetime | None = None
    current = None
    rows = (TicketEvent.select(TicketEvent.ticket, TicketEvent.from_state, TicketEvent.to_state, TicketEvent.actor,
                               TicketEvent.action, TicketEvent.at)
            .where((TicketEvent.at >= since) & (TicketEvent.at < until))
            .order_by(TicketEvent.ticket, TicketEvent.version).tuples())
    for ticket, from_state, to_state, actor, action, at in rows.iterator():
        at = TicketEvent.at.python_value(at)
        if ticket != current:
            current, arrived, claimed, admitted = ticket, {}, {}, None
        if from_state is None:
            admitted = at
            complaints += 1
            by_hour[at.replace(minute=0, second=0, microsecond=0)] += 1
        if action == "link_complaint":  # a second complaint about the order: work that arrived too
            complaints += 1
            by_hour[at.replace(minute=0, second=0, microsecond=0)] += 1
        before, after = stage_of(from_state), stage_of(to_state)
        if after is not None and after != before:
            stages[after].arrivals += 1
            if admitted is not None:
                stages[after].delays.append((at - admitted).total_seconds())
            arrived[after] = at
            claimed.pop(after, None)
        if action in CLAIMS and after is not None:
            claimed[after] = at
            if after in arrived:
                since_arrival = arrived.pop(after)
                stages[after].waits.append((at - since_arrival).total_seconds())
                stages[after].waited_from.append(since_arrival)
        if before is not None and after != before and actor.startswith("agent:") and before in claimed:
            stages[before].handling.append((at - claimed.pop(before)).total_seconds())
    _roster(stages)
    return Measured(since, until, complaints, by_hour, stages)


def _roster(stages: dict[str, StageWork]) -> None:
    """Agents of each stage not revoked: how many, how many present now, their mean capacity."""
    rows = (Agent.select(Agent.stage, peewee.fn.COUNT(Agent.id), peewee.fn.AVG(Agent.capacity),
                         peewee.fn.SUM(peewee.Case(None, [(Agent.presence == "available", 1)], 0)))
            .where(Agent.revoked_at.is_null()).group_by(Agent.stage).tuples())
    for stage_number, count, capacity, present in rows:
        work = stages.get(f"stage{stage_number}")
        if work is not None:
            work.agents, work.capacity, work.present = int(count), float(capacity or 1.0), int(present or 0)


def by_stage(measured: Measured) -> dict[str, dict[str, float]]:
    """A summary per stage, for the plan's statement of its inputs."""
    summary: dict[str, dict[str, float]] = defaultdict(dict)
    for stage, work in measured.stages.items():
        summary[stage] = {"arrivals": work.arrivals, "visits_per_complaint": round(measured.visits(stage), 4),
                          "delay_samples": len(work.delays),
                          "delay_mean_s": round(statistics.fmean(work.delays), 1) if work.delays else 0.0,
                          "delay_p90_s": round(_quantile(work.delays, 0.9), 1),
                          "handling_samples": len(work.handling),
                          "handling_mean_s": round(work.mean_handling, 1),
                          "handling_p90_s": round(work.quantile_handling(0.9), 1),
                          "wait_samples": len(work.waits),
                          "wait_mean_s": round(statistics.fmean(work.waits), 1) if work.waits else 0.0,
                          "agents": work.agents, "present": work.present, "capacity": round(work.capacity, 2)}
    return dict(summary)
