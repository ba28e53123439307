"""The floor right now, in a handful of aggregate queries: what `/metrics` and `disputes top` show.

Each function is one or two indexed aggregate queries whose cost depends on
the open backlog (or a bounded slice of the audit trail), never on how many
tickets the platform ever had, so they are cheap enough to run every second.
"""
from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import reduce

import peewee

from policy.calendar import Calendar
from policy.durations import Duration
from policy import Policy
from models.audit import TicketEvent
from models.intake import HeldMessage, RejectedMessage
from models.notification import UNDELIVERED, Notification
from models.outbox import Dispatch, OutboxEvent
from models.sla import PROMISES
from models.states import OPEN_STATES, State
from models.ticket import Ticket
from models.timer import PENDING, Timer

#: Open states in the order of the contract's table.
OPEN: tuple[str, ...] = tuple(s.value for s in State if s in OPEN_STATES)
__all__ = ["PROMISES", "Backlog", "Timers", "open_backlog", "undone_dispatches", "timers", "outbox_backlog",
           "rejected_messages", "held_messages", "recent_moves", "breach_conditions", "open_breaches", "most_overdue",
           "breach_cutoff"]
#: How many of the newest audit rows a throughput count looks at, at most.
THROUGHPUT_SCAN_ROWS = 50_000


@dataclass(frozen=True)
class Backlog:
    """Tickets in one open state, and when the longest-waiting of them entered it."""

    tickets: int
    oldest: datetime | None

    def oldest_age(self, now: datetime) -> float:
        return max(0.0, (now - self.oldest).total_seconds()) if self.oldest else 0.0


def open_backlog() -> dict[str, Backlog]:
    """Every open state (zeros included) with its tickets and its longest wait."""
    rows = (Ticket.select(Ticket.state, peewee.fn.COUNT(Ticket.id), peewee.fn.MIN(Ticket.state_entered_at))
            .where(Ticket.state.in_(OPEN)).group_by(Ticket.state).tuples())
    found = {state: Backlog(n, Ticket.state_entered_at.python_value(oldest)) for state, n, oldest in rows}
    return {state: found.get(state, Backlog(0, None)) for state in OPEN}


def undone_dispatches() -> dict[str, int]:
    """Work written but not yet done, per queue: dispatches not yet applied or refused, and
    notifications not yet delivered (the notify queue's work items are the notification rows)."""
    undone = dict(Dispatch.select(Dispatch.queue, peewee.fn.COUNT(Dispatch.id))
                  .where(Dispatch.done_at.is_null()).group_by(Dispatch.queue).tuples())
    undelivered = Notification.select().where(Notification.status.in_(UNDELIVERED)).count()
    if undelivered:
        undone["notify"] = undone.get("notify", 0) + undelivered
    return undone


@dataclass(frozen=True)
class Timers:
    """Pending timers per queue, those already due but not fired, and the oldest due time."""

    pending: dict[str, int]
    due: dict[str, int]
    oldest_due: datetime | None

    def lag(self, now: datetime) -> float:
        """Seconds the oldest due timer has waited to be fired (0 when none is late)."""
        return max(0.0, (now - self.oldest_due).total_seconds()) if self.oldest_due else 0.0


def timers(now: datetime) -> Timers:
    pending = dict(Timer.select(Timer.queue, peewee.fn.COUNT(Timer.id)).where(Timer.status == PENDING)
                   .group_by(Timer.queue).tuples())
    due_rows = (Timer.select(Timer.queue, peewee.fn.COUNT(Timer.id), peewee.fn.MIN(Timer.due_at))
                .where((Timer.status == PENDING) & (Timer.due_at <= now)).group_by(Timer.queue).tuples())
    due, oldest = {}, None
    for queue, n, first in due_rows:
        due[queue] = n
        first = Timer.due_at.python_value(first)
        oldest = first if oldest is None or first < oldest else oldest
    return Timers(pending, due, oldest)


def outbox_backlog() -> tuple[int, datetime | None]:
    """op.events messages not yet published, and when the oldest of them was written."""
    count, oldest = (OutboxEvent.select(peewee.fn.COUNT(OutboxEvent.id), peewee.fn.MIN(OutboxEvent.created_at))
                     .where(OutboxEvent.published_at.is_null()).tuples().get())
    return count, OutboxEvent.created_at.python_value(oldest)


def rejected_messages() -> tuple[int, int]:
    """(every rejection ever stored, those still waiting for a replay)."""
    total = RejectedMessage.select(peewee.fn.COUNT(RejectedMessage.id)).scalar() or 0
    waiting = RejectedMessage.select().where(RejectedMessage.status == "rejected").count()
    return total, waiting


def held_messages(now: datetime) -> tuple[int, float]:
    """Follow-ups held for a complaint not admitted yet, and how long the oldest has waited (s)."""
    count, oldest = (HeldMessage.select(peewee.fn.COUNT(HeldMessage.id), peewee.fn.MIN(HeldMessage.received_at))
                     .tuples().get())
    oldest = HeldMessage.received_at.python_value(oldest)
    return count, max(0.0, (now - oldest).total_seconds()) if oldest else 0.0


def recent_moves(now: datetime, seconds: float, scan_rows: int = THROUGHPUT_SCAN_ROWS) -> Counter[tuple[str, str]]:
    """State changes (from_state, to_state) committed in the last `seconds`, counted among the
    newest `scan_rows` audit rows only (so the cost is bounded whatever the rate)."""
    top = TicketEvent.select(peewee.fn.MAX(TicketEvent.id)).scalar() or 0
    rows = (TicketEvent.select(TicketEvent.from_state, TicketEvent.to_state, peewee.fn.COUNT(TicketEvent.id))
            .where((TicketEvent.id > top - scan_rows) & (TicketEvent.at >= now - timedelta(seconds=seconds))
                   & (TicketEvent.from_state != TicketEvent.to_state))
            .group_by(TicketEvent.from_state, TicketEvent.to_state).tuples())
    return Counter({(f, t): n for f, t, n in rows})


def breach_conditions(policy: Policy, now: datetime) -> dict[str, peewee.Expression]:
    """Per promise, the rule an open floor ticket breaks now: *accept* (still waiting for takeover),
    *first_feedback* (no stage-1 decision yet) and *resolve*. The due times pinned on the ticket
    (`models.sla`) decide; a paused clock (a hidden state) has moved a due time back by the pause
    so far, so a paused ticket is late when it was already late when the pause began. Tickets
    from before due times were pinned fall back to the policy's promise from their floor time.
    The one definition of a breach the dashboard, `/metrics` and `disputes top` all count."""
    sla, calendar = policy.sla, policy.calendar
    waiting_takeover = Ticket.state == State.AWAITING_TAKEOVER
    before_feedback = Ticket.state.in_((State.AWAITING_TAKEOVER, State.STAGE1))
    resolve_cutoffs = ((Ticket.complexity == "complex")
                       & (Ticket.floor_at <= breach_cutoff(sla.resolve_complex, calendar, now))
                       | (Ticket.complexity != "complex")
                       & (Ticket.floor_at <= breach_cutoff(sla.resolve_simple, calendar, now)))
    on_floor = Ticket.floor_at.is_null(False) & Ticket.state.in_(OPEN)
    return {
        "accept": on_floor & waiting_takeover & _late(
            Ticket.sla_accept_due, now, Ticket.floor_at <= breach_cutoff(sla.accept, calendar, now)),
        "first_feedback": on_floor & before_feedback & _late(
            Ticket.sla_feedback_due, now, Ticket.floor_at <= breach_cutoff(sla.first_feedback, calendar, now)),
        "resolve": on_floor & _late(Ticket.sla_resolve_due, now, resolve_cutoffs),
    }


def open_breaches(policy: Policy, now: datetime) -> dict[str, int]:
    """How many open floor tickets break each promise now (`breach_conditions`): one indexed count each."""
    return {name: Ticket.select().where(late).count() for name, late in breach_conditions(policy, now).items()}


def most_overdue(policy: Policy, now: datetime, limit: int) -> list[tuple[Ticket, list[str]]]:
    """Up to `limit` of the tickets `open_breaches` counts, the most overdue first, each with the
    promises it breaks."""
    conditions = breach_conditions(policy, now)
    flags = [peewee.Case(None, [(late, 1)], 0).alias(f"late_{name}") for name, late in conditions.items()]
    rows = (Ticket.select(Ticket, *flags).where(reduce(operator.or_, conditions.values()))
            .order_by(Ticket.sla_resolve_due, Ticket.id).limit(limit))
    return [(ticket, [name for name in conditions if getattr(ticket, f"late_{name}")]) for ticket in rows]


def _late(due: peewee.Field, now: datetime, unpinned: peewee.Expression) -> peewee.Expression:
    running = Ticket.sla_paused_since.is_null() & (due < now)
    paused = Ticket.sla_paused_since.is_null(False) & (due < Ticket.sla_paused_since)
    return (due.is_null(False) & (running | paused)) | (due.is_null() & unpinned)


def breach_cutoff(promise: Duration, calendar: Calendar, now: datetime) -> datetime:
    """The latest floor time (to the second) whose `promise` fell due before `now`."""
    low = now - timedelta(seconds=promise.seconds() * 3 + 60 * 86400)  # past any holiday season
    high = now
    if promise.after(low, calendar) >= now:
        return low - timedelta(seconds=1)
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if promise.after(middle, calendar) < now:
            low = middle
        else:
            high = middle
    return low
