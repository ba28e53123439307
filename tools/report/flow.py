"""How tickets flow: counts per state, dispute types and their trend, time per state, stage and
phase, negotiation outcomes and service-level compliance."""
from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date, datetime, timedelta

from models.views.sla import ended_at, ticket_sla
from tools.report.history import History, is_agent, state_changes
from tools.report.stats import counted, share, summary
from models.audit import TicketEvent
from models.states import STAGES, STATES, State

#: Floor states whose dwell time is "time per stage", in the order a ticket meets them.
VISIBLE_STATES: tuple[str, ...] = tuple(s.value for s, info in STATES.items() if info.visible)
TERMINAL: tuple[str, ...] = tuple(s.value for s, info in STATES.items() if info.terminal)
#: The states of the negotiation phase, before the floor.
NEGOTIATION_STATES = frozenset({State.NEGOTIATING.value, State.AWAITING_CONFIRMATION.value,
                                State.INTERCEPTING.value})
#: The negotiation-phase answer of a merchant who never answered.
NO_ANSWER = "no_answer"
#: A trend longer than this many days is cut to its most recent days.
MAX_TREND_DAYS = 400


def ticket_counts(h: History) -> dict[str, object]:
    by_state = Counter(t.state for t in h.tickets)
    terminal = {state: by_state.get(state, 0) for state in TERMINAL}
    return {"total": len(h.tickets), "terminal": terminal, "open": len(h.tickets) - sum(terminal.values()),
            "by_state": {s.value: by_state[s.value] for s in State if by_state.get(s.value)}}


def dispute_types(h: History) -> dict[str, int]:
    return counted(Counter(t.dispute_type for t in h.tickets))


def dispute_trend(h: History) -> dict[str, object]:
    """New tickets per calendar day (in the policy calendar's zone) and dispute type; every day
    between the first and the last is listed, so the series can be drawn as they are."""
    tz = h.policy.calendar.tz
    per_day: dict[date, Counter[str]] = defaultdict(Counter)
    for t in h.tickets:
        per_day[t.created_at.astimezone(tz).date()][t.dispute_type] += 1
    if not per_day:
        return {"days": [], "by_type": {}}
    first, last = min(per_day), max(per_day)
    first = max(first, last - timedelta(days=MAX_TREND_DAYS - 1))
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    types = list(dispute_types(h))
    return {"days": [d.isoformat() for d in days],
            "by_type": {kind: [per_day[d].get(kind, 0) for d in days] for kind in types}}


def state_latency(h: History) -> dict[str, dict[str, object]]:
    """Time spent in each state, from consecutive audit rows: entering a state (a row whose
    ``to_state`` differs from the state before) until the next row that leaves it. Rows that keep
    the state (claims, evidence welcome in stage 2) do not end a stay; stays not over are left out."""
    stays: dict[str, list[float]] = defaultdict(list)
    for trail in h.trails.values():
        previous: TicketEvent | None = None
        for event in state_changes(trail):
            if previous is not None:
                stays[previous.to_state].append((event.at - previous.at).total_seconds())
            previous = event
    order = list(VISIBLE_STATES) + [s.value for s in State if s.value not in VISIBLE_STATES]
    return {state: {"visible": state in VISIBLE_STATES, **summary(stays[state])}
            for state in order if state in stays}


def stage_latency(h: History) -> dict[str, dict[str, object]]:
    """Time per visit to each stage's pool: from entering any of its states (``awaiting_takeover``
    counts for stage 1) until the ticket leaves them all. A ticket sent back to stage 2 visits it
    again; visits not over are left out."""
    visits: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for trail in h.trails.values():
        pool: str | None = None
        entered: datetime | None = None
        for event in state_changes(trail):
            next_pool = STATES[State(event.to_state)].stage
            if next_pool == pool:
                continue
            if pool is not None and entered is not None:
                visits[pool].append((event.at - entered).total_seconds())
            pool, entered = next_pool, event.at
    return {stage: summary(values) for stage, values in visits.items()}


def phase_latency(h: History) -> dict[str, dict[str, object]]:
    """Negotiation (creation until it leaves the negotiation states), floor (reaching the floor
    until the ticket ends, hidden waits included) and end to end (creation until it ends)."""
    negotiation: list[float] = []
    floor: list[float] = []
    end_to_end: list[float] = []
    for t in h.tickets:
        trail = h.trail(t.id)
        if trail and trail[0].to_state in NEGOTIATION_STATES:
            left = next((e for e in trail if e.to_state not in NEGOTIATION_STATES), None)
            if left is not None:
                negotiation.append((left.at - trail[0].at).total_seconds())
        done = ended_at(t)
        if done is None:
            continue
        if t.floor_at is not None:
            floor.append((done - t.floor_at).total_seconds())
        end_to_end.append((done - t.created_at).total_seconds())
    return {"negotiation": summary(negotiation), "floor": summary(floor), "end_to_end": summary(end_to_end)}


def negotiation_outcomes(h: History) -> dict[str, object]:
    """Tickets that began in negotiation, by the merchant's answer: settled without an agent
    (and how: the action that resolved them), sent to the floor, withdrawn, or still negotiating."""
    by_option: dict[str, Counter[str]] = defaultdict(Counter)
    resolved_by: Counter[str] = Counter()
    resolved_by_option: dict[str, Counter[str]] = defaultdict(Counter)
    started = straight = 0
    for t in h.tickets:
        trail = h.trail(t.id)
        if not trail or trail[0].to_state != State.NEGOTIATING:
            straight += 1 if trail and trail[0].to_state == State.AWAITING_TAKEOVER else 0
            continue
        started += 1
        option = t.negotiation_option or NO_ANSWER
        outcome = ("resolved" if t.state == State.RESOLVED else "to_floor" if t.floor_at is not None
                   else "withdrawn" if t.state == State.WITHDRAWN else "open")
        by_option[option]["tickets"] += 1
        by_option[option][outcome] += 1
        if outcome == "resolved":
            action = next(e.action for e in reversed(trail) if e.to_state == State.RESOLVED)
            resolved_by[action] += 1
            resolved_by_option[option][action] += 1
    return {"tickets": started, "straight_to_floor": straight, "resolved_without_agent": sum(resolved_by.values()),
            "resolved_by": counted(resolved_by),
            "by_option": {option: {**{k: c.get(k, 0) for k in ("tickets", "resolved", "to_floor", "withdrawn", "open")},
                                   "resolved_by": counted(resolved_by_option[option])}
                          for option, c in sorted(by_option.items())}}


def sla_compliance(h: History) -> dict[str, dict[str, object]]:
    """The published promises (accept, first feedback, resolve) for tickets that reached the floor,
    judged exactly as the desk shows them (`models.views.sla.ticket_sla`, working days on the calendar).
    *Pending*: not reached yet and not late yet; a ticket that ended in time without needing a
    milestone (withdrawn before takeover) counts for none."""
    counts = {name: Counter() for name in ("accept", "first_feedback", "resolve")}
    for t in h.tickets:
        if t.floor_at is None:
            continue
        sla = ticket_sla(t, h.policy, h.now, marks(h.trail(t.id)))
        for name, reached in (("accept", sla.accepted_at), ("first_feedback", sla.fed_back_at),
                              ("resolve", sla.resolved_at)):
            if name in sla.breaches:
                counts[name]["breached"] += 1
            elif reached is not None:
                counts[name]["met"] += 1
            elif sla.resolved_at is None:
                counts[name]["pending"] += 1
    return {name: {"met": c["met"], "breached": c["breached"], "pending": c["pending"],
                   "compliance": share(c["met"], c["met"] + c["breached"])}
            for name, c in counts.items()}


def marks(trail: list[TicketEvent]) -> tuple[datetime | None, datetime | None]:
    """(first takeover, first stage-1 decision) by an agent, as `models.views.sla.milestones` reads them."""
    accepted = next((e.at for e in trail if e.action == "take_over" and is_agent(e)), None)
    fed_back = next((e.at for e in trail if e.action in ("request_evidence", "to_judgment") and is_agent(e)), None)
    return accepted, fed_back
