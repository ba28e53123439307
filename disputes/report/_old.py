"""The analysis of SPEC §1 (``disputes report``, the end of ``disputes demo``), from the database.

Everything is derived from what the system already records — the tickets,
their audit trail (`TicketEvent`) and the outbox's ``ledger.*`` events — so
the report can be rebuilt at any time for any window and never disagrees with
``disputes ticket show``. `build_report` returns plain JSON-ready data (money
as integers in minor units, durations as float seconds); `render_report` turns
it into rich tables or JSON.
"""
from __future__ import annotations

import json
import math
import statistics
from collections import Counter, defaultdict
from datetime import datetime, timezone
from typing import Iterable, Union

import peewee
from rich.columns import Columns
from rich.console import Console
from rich.table import Table

from desk.sla import ticket_sla
from disputes.policy import Policy, load_policy
from disputes.settings import settings_from_env
from disputes.stage_options import money_label
from models.audit import TicketEvent
from models.base import utcnow
from models.intake import RejectedMessage
from models.outbox import OutboxEvent
from models.states import STATES, State
from models.ticket import LinkedComplaint, Ticket

#: A JSON-ready report: nested dicts of str, int, float, None.
Report = dict[str, object]
Moment = Union[datetime, str, None]

#: Floor states whose dwell time is "time per stage", in the order a ticket meets them.
VISIBLE_STATES: tuple[str, ...] = tuple(s.value for s, info in STATES.items() if info.visible)
TERMINAL: tuple[str, ...] = tuple(s.value for s, info in STATES.items() if info.terminal)
#: Liabilities that make the merchant pay (the rest: the customer side).
MERCHANT_SIDE = ("merchant", "both")
#: The negotiation-phase answer of a merchant who never answered.
NO_ANSWER = "no_answer"


def build_report(since: Moment = None, until: Moment = None, *, policy: Policy | None = None,
                 now: datetime | None = None) -> Report:
    """The analysis of tickets created in ``[since, until)`` (ISO text or aware datetimes; naive
    ones are read in the policy calendar's zone). `policy` defaults to ``OP_POLICY``'s."""
    policy = policy or load_policy(settings_from_env().policy_path)
    now = now or utcnow()
    start, end = _moment(since, policy), _moment(until, policy)
    where = Ticket.id.is_null(False)
    if start is not None:
        where &= Ticket.created_at >= start
    if end is not None:
        where &= Ticket.created_at < end
    tickets = list(Ticket.select().where(where).order_by(Ticket.id))
    ids = Ticket.select(Ticket.id).where(where)
    trails: dict[int, list[TicketEvent]] = defaultdict(list)
    for event in TicketEvent.select().where(TicketEvent.ticket.in_(ids)).order_by(TicketEvent.ticket,
                                                                                   TicketEvent.version):
        trails[event.ticket_id].append(event)
    return {
        "window": {"since": _iso(start), "until": _iso(end), "generated_at": _iso(now)},
        "tickets": ticket_counts(tickets),
        "dispute_types": dict(Counter(t.dispute_type for t in tickets).most_common()),
        "latency": state_latency(trails.values()),
        "evidence_rounds": evidence_rounds(tickets),
        "liability": liability_shares(tickets),
        "negotiation": negotiation_outcomes(tickets, trails),
        "sla": sla_compliance(tickets, trails, policy, now),
        "qc": qc_verdicts(e for trail in trails.values() for e in trail),
        "money": money_moved(OutboxEvent.select().where(OutboxEvent.routing_key.startswith("ledger.")
                                                        & OutboxEvent.ticket_id.in_(ids))),
        "events": events_published(ids),
        "intake": intake_counts(ids, start, end),
    }


# ---- the sections ------------------------------------------------------------------------------

def ticket_counts(tickets: list[Ticket]) -> dict[str, object]:
    by_state = Counter(t.state for t in tickets)
    terminal = {state: by_state.get(state, 0) for state in TERMINAL}
    return {"total": len(tickets), "terminal": terminal, "open": len(tickets) - sum(terminal.values()),
            "by_state": {s.value: by_state[s.value] for s in State if by_state.get(s.value)}}


def state_latency(trails: Iterable[list[TicketEvent]]) -> dict[str, dict[str, object]]:
    """Time spent in each state, from consecutive audit rows: entering a state (a row whose
    ``to_state`` differs from the state before) until the next row that leaves it. Rows that keep
    the state (claims, evidence welcome in stage 2) do not end a stay; stays not over are left out."""
    stays: dict[str, list[float]] = defaultdict(list)
    for trail in trails:
        state: str | None = None
        entered: datetime | None = None
        for event in trail:
            if event.to_state == state:
                continue
            if state is not None and entered is not None:
                stays[state].append((event.at - entered).total_seconds())
            state, entered = event.to_state, event.at
    order = list(VISIBLE_STATES) + [s.value for s in State if s.value not in VISIBLE_STATES]
    return {state: {"visible": state in VISIBLE_STATES, "count": len(stays[state]),
                    "median_s": _median(stays[state]), "p95_s": percentile(stays[state], 95)}
            for state in order if state in stays}


def evidence_rounds(tickets: list[Ticket]) -> dict[str, object]:
    """Rounds per ticket that reached the floor: the distribution, and per product category."""
    floor = [t for t in tickets if t.floor_at is not None]
    distribution = Counter(t.evidence_rounds for t in floor)
    per_category: dict[str, list[int]] = defaultdict(list)
    for t in floor:
        per_category[t.category].append(t.evidence_rounds)
    return {"tickets": len(floor),
            "distribution": {str(k): distribution[k] for k in sorted(distribution)},
            "by_category": {c: {"tickets": len(v), "mean": round(statistics.fmean(v), 2)}
                            for c, v in sorted(per_category.items())}}


def liability_shares(tickets: list[Ticket]) -> dict[str, object]:
    judged = [t for t in tickets if t.liability]
    counts = Counter(t.liability for t in judged)
    return {"judged": len(judged), "counts": dict(counts.most_common()),
            "shares": {k: round(v / len(judged), 4) for k, v in counts.most_common()},
            "remedies": dict(Counter(t.remedy for t in judged).most_common())}


def negotiation_outcomes(tickets: list[Ticket], trails: dict[int, list[TicketEvent]]) -> dict[str, object]:
    """Tickets that began in negotiation, by the merchant's answer: settled without an agent
    (and how), sent to the floor, withdrawn, or still negotiating."""
    by_option: dict[str, Counter[str]] = defaultdict(Counter)
    resolved_by: Counter[str] = Counter()
    started = straight = 0
    for t in tickets:
        trail = trails.get(t.id, [])
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
            resolved_by[next(e.action for e in reversed(trail) if e.to_state == State.RESOLVED)] += 1
    return {"tickets": started, "straight_to_floor": straight, "resolved_without_agent": sum(resolved_by.values()),
            "resolved_by": dict(resolved_by.most_common()),
            "by_option": {option: {k: c.get(k, 0) for k in ("tickets", "resolved", "to_floor", "withdrawn", "open")}
                          for option, c in sorted(by_option.items())}}


def sla_compliance(tickets: list[Ticket], trails: dict[int, list[TicketEvent]], policy: Policy,
                   now: datetime) -> dict[str, dict[str, object]]:
    """The published promises (accept, first feedback, resolve) for tickets that reached the floor,
    judged exactly as the desk shows them (`desk.sla.ticket_sla`, working days on the calendar).
    *Pending*: not reached yet and not late yet; a ticket that ended in time without needing a
    milestone (withdrawn before takeover) counts for none."""
    counts = {name: Counter() for name in ("accept", "first_feedback", "resolve")}
    for t in tickets:
        if t.floor_at is None:
            continue
        sla = ticket_sla(t, policy, now, _marks(trails.get(t.id, [])))
        for name, reached in (("accept", sla.accepted_at), ("first_feedback", sla.fed_back_at),
                              ("resolve", sla.resolved_at)):
            if name in sla.breaches:
                counts[name]["breached"] += 1
            elif reached is not None:
                counts[name]["met"] += 1
            elif sla.resolved_at is None:
                counts[name]["pending"] += 1
    result: dict[str, dict[str, object]] = {}
    for name, c in counts.items():
        decided = c["met"] + c["breached"]
        result[name] = {"met": c["met"], "breached": c["breached"], "pending": c["pending"],
                        "compliance": round(c["met"] / decided, 4) if decided else None}
    return result


def qc_verdicts(events: Iterable[TicketEvent]) -> dict[str, object]:
    verdicts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for e in events:
        if e.qc_verdict:
            verdicts[e.qc_verdict] += 1
            if e.qc_reason:
                reasons[e.qc_reason] += 1
    return {"ok": verdicts.get("ok", 0), "flag": verdicts.get("flag", 0), "reasons": dict(reasons.most_common())}


def money_moved(rows: Iterable[OutboxEvent]) -> dict[str, dict[str, int]]:
    """Sum of ``amount`` per ledger kind and currency, each idempotency key counted once (as the
    payments system applies it), in integer minor units."""
    seen: set[str] = set()
    totals: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        body = row.body
        key = str(body.get("idempotency_key") or f"outbox:{row.id}")
        if key in seen:
            continue
        seen.add(key)
        totals[str(body.get("kind") or row.routing_key.split(".", 1)[1])][body["currency"]] += int(body["amount"])
    return {kind: dict(sorted(c.items())) for kind, c in sorted(totals.items())}


def events_published(ids: peewee.SelectQuery) -> dict[str, object]:
    query = (OutboxEvent.select(OutboxEvent.routing_key, peewee.fn.COUNT(OutboxEvent.id).alias("n"))
             .where(OutboxEvent.ticket_id.in_(ids) & OutboxEvent.published_at.is_null(False))
             .group_by(OutboxEvent.routing_key).order_by(OutboxEvent.routing_key).tuples())
    by_key = {key: n for key, n in query}
    waiting = OutboxEvent.select().where(OutboxEvent.ticket_id.in_(ids) & OutboxEvent.published_at.is_null()).count()
    return {"published": sum(by_key.values()), "unpublished": waiting, "by_routing_key": by_key}


def intake_counts(ids: peewee.SelectQuery, start: datetime | None, end: datetime | None) -> dict[str, object]:
    where = RejectedMessage.id.is_null(False)
    if start is not None:
        where &= RejectedMessage.received_at >= start
    if end is not None:
        where &= RejectedMessage.received_at < end
    rejected = Counter(r.routing_key for r in RejectedMessage.select(RejectedMessage.routing_key).where(
        where & (RejectedMessage.status == "rejected")))
    linked = LinkedComplaint.select().where(LinkedComplaint.ticket.in_(ids)).count()
    return {"linked_complaints": linked, "rejected": dict(rejected.most_common())}


# ---- helpers -----------------------------------------------------------------------------------

def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (the smallest value with at least `pct`% of values at or below it)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _marks(trail: list[TicketEvent]) -> tuple[datetime | None, datetime | None]:
    """(first takeover, first stage-1 decision) by an agent, as `desk.sla.milestones` reads them."""
    accepted = next((e.at for e in trail if e.action == "take_over" and e.actor.startswith("agent:")), None)
    fed_back = next((e.at for e in trail if e.action in ("request_evidence", "to_judgment")
                     and e.actor.startswith("agent:")), None)
    return accepted, fed_back


def _moment(value: Moment, policy: Policy) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO date or time (e.g. 2026-11-01 or 2026-11-01T09:00+08:00)")
    if value.tzinfo is None:
        value = value.replace(tzinfo=policy.calendar.tz)
    return value.astimezone(timezone.utc)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


# ---- rendering ---------------------------------------------------------------------------------

def render_report(report: Report, console: Console, format: str = "table") -> None:
    """Print the report as rich tables (``table``) or as JSON (``json``)."""
    if format == "json":
        console.print_json(json.dumps(report, ensure_ascii=False))
        return
    if format != "table":
        raise ValueError(f"unknown report format {format!r} (table or json)")
    tables = report_tables(report)
    for pair in (tables[0:2], tables[2:4], tables[4:6], tables[6:7], tables[7:9], tables[9:11]):
        console.print(Columns(pair, padding=(0, 4)))  # side by side when the terminal is wide enough


def report_tables(report: Report) -> list[Table]:
    r: dict = report  # type: ignore[assignment]
    tickets = r["tickets"]
    states = _table(f"Tickets: {tickets['total']}, {tickets['open']} open", "state", "tickets")
    for state, n in tickets["terminal"].items():
        states.add_row(f"[bold]{state}[/bold]", str(n))
    for state, n in tickets["by_state"].items():
        if state not in tickets["terminal"]:
            states.add_row(state, str(n))
    types = _table("Dispute types", "type", "tickets")
    for kind, n in r["dispute_types"].items():
        types.add_row(kind, str(n))
    latency = _table("Time per state (dim: hidden)", "state", "stays", "median", "p95")
    for state, s in r["latency"].items():
        latency.add_row(state if s["visible"] else f"[dim]{state}[/dim]", str(s["count"]),
                        _duration(s["median_s"]), _duration(s["p95_s"]))
    ev = r["evidence_rounds"]
    rounds = _table(f"Evidence rounds: {ev['tickets']} on the floor", "rounds", "tickets")
    for k, n in ev["distribution"].items():
        rounds.add_row(k, str(n))
    categories = _table("Rounds per category", "category", "tickets", "mean")
    for category, c in ev["by_category"].items():
        categories.add_row(category, str(c["tickets"]), f"{c['mean']:.2f}")
    li = r["liability"]
    liability = _table(f"Liability: {li['judged']} judged", "liability", "tickets", "share")
    for k, n in li["counts"].items():
        liability.add_row(k, str(n), f"{li['shares'][k]:.1%}")
    for k, n in li["remedies"].items():
        liability.add_row(f"[dim]remedy {k}[/dim]", f"[dim]{n}[/dim]", "")
    ne = r["negotiation"]
    nego = _table(f"Negotiation: {ne['tickets']} negotiated, {ne['straight_to_floor']} straight to the floor",
                  "merchant answer", "tickets", "resolved", "to floor", "withdrawn", "open",
                  caption=f"settled without an agent: {ne['resolved_without_agent']} ({_inline(ne['resolved_by'])})")
    for option, c in ne["by_option"].items():
        nego.add_row(option, *(str(c[k]) for k in ("tickets", "resolved", "to_floor", "withdrawn", "open")))
    sla = _table("SLA compliance (floor tickets)", "promise", "met", "breached", "pending", "compliance")
    for name, c in r["sla"].items():
        sla.add_row(name, str(c["met"]), str(c["breached"]), str(c["pending"]),
                    "-" if c["compliance"] is None else f"{c['compliance']:.1%}")
    qc = _table("Quality checks", "verdict", "decisions")
    qc.add_row("ok", str(r["qc"]["ok"]))
    qc.add_row("flag", str(r["qc"]["flag"]))
    for reason, n in r["qc"]["reasons"].items():
        qc.add_row(f"[dim]flag {reason}[/dim]", f"[dim]{n}[/dim]")
    money = _table("Money moved (ledger)", "kind", "amount")
    for kind, by_currency in r["money"].items():
        for currency, amount in by_currency.items():
            money.add_row(kind, money_label(amount, currency)["en"])
    ev_pub = r["events"]
    events = _table(f"Events published: {ev_pub['published']}", "routing key", "events",
                    caption=f"{ev_pub['unpublished']} waiting in the outbox")
    for key, n in ev_pub["by_routing_key"].items():
        events.add_row(key, str(n))
    return [states, types, latency, rounds, categories, liability, nego, sla, qc, money, events]



def _inline(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {n}" for key, n in counts.items()) or "none"


def _table(title: str, *columns: str, caption: str | None = None) -> Table:
    """A report table; its title never wraps (the table is at least as wide)."""
    table = Table(title=title, title_justify="left", title_style="bold", caption=caption, caption_justify="left",
                  min_width=len(title))
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    return table


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m {int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60):02d}m"
