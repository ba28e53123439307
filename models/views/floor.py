"""The floor right now, in a handful of aggregate queries: what `/metrics` and `disputes top` show.

Each function is one or two indexed aggregate queries whose cost depends on
the open backlog (or a bounded slice of the audit trail), never on how many
tickets the platform ever had, so they are cheap enough to run every second.
"""
from __future__ import annotations

import logging
import operator
import threading
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
from models.base import database
from models.outbox import DEAD, Dispatch, OutboxEvent
from models.sla import PROMISES
from models.states import OPEN_STATES, State
from models.ticket import Ticket
from models.timer import PENDING, Timer
from models.views.tallies import SYNC_ROWS, WARM_CHUNK_ROWS

#: Open states in the order of the contract's table.
OPEN: tuple[str, ...] = tuple(s.value for s in State if s in OPEN_STATES)
__all__ = ["PROMISES", "Backlog", "Timers", "Undone", "DeadDispatches", "open_backlog", "undone_dispatches",
           "undone_work", "timers", "outbox_backlog", "rejected_messages", "held_messages", "recent_moves",
           "breach_conditions", "open_breaches", "most_overdue", "breach_cutoff"]
#: How many of the newest audit rows a throughput count looks at, at most.
THROUGHPUT_SCAN_ROWS = 50_000
#: A dead dispatch is counted for good (`DeadDispatches`) once it was declared dead this long before
#: the reader's clock: longer than the reconciler's beat takes to commit it.
DEAD_SETTLE_SECONDS = 180.0

log = logging.getLogger("disputes.api")


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


@dataclass(frozen=True)
class Undone:
    """Work written for one queue and not done yet: how much, and when the oldest of it was written."""

    count: int
    oldest: datetime | None

    def oldest_age(self, now: datetime) -> float:
        return max(0.0, (now - self.oldest).total_seconds()) if self.oldest else 0.0


def undone_work() -> dict[str, Undone]:
    """Work written but not yet done, per queue (only queues that have some): dispatches not yet
    applied or refused — whether waiting to be run or failing — and notifications not yet delivered
    (the notify queue's work items are the notification rows). Two aggregates over what is not done."""
    undone = {queue: Undone(n, Dispatch.created_at.python_value(oldest)) for queue, n, oldest in (
        Dispatch.select(Dispatch.queue, peewee.fn.COUNT(Dispatch.id), peewee.fn.MIN(Dispatch.created_at))
        .where(Dispatch.done_at.is_null()).group_by(Dispatch.queue).tuples())}
    undelivered, first = (Notification.select(peewee.fn.COUNT(Notification.id), peewee.fn.MIN(Notification.created_at))
                          .where(Notification.status.in_(UNDELIVERED)).tuples().get())
    if undelivered:
        first = Notification.created_at.python_value(first)
        dispatches = undone.get("notify", Undone(0, None))
        oldest = min((t for t in (dispatches.oldest, first) if t is not None), default=None)
        undone["notify"] = Undone(dispatches.count + undelivered, oldest)
    return undone


def undone_dispatches() -> dict[str, int]:
    """How much work is written but not yet done, per queue (`undone_work`)."""
    return {queue: undone.count for queue, undone in undone_work().items()}


class DeadDispatches:
    """How many dispatches ended dead (their handler failed try after try), for one process — keep
    one per database and read it per scrape.

    Dead rows are few, but they lie among every dispatch ever written and no index finds them by
    their outcome. So the table is counted once (in the background when it is large: `read` says
    None until then), and afterwards only the dispatches done in the last `settle` seconds are read
    — through the ``(done_at, sent_at)`` index — and folded into the count as they settle. A count
    never goes down; a dispatch declared dead with a ``done_at`` already `settle` behind the
    reader's clock when it committed would be missed (the reconciler commits within its beat)."""

    def __init__(self, settle: float = DEAD_SETTLE_SECONDS, *, sync_rows: int = SYNC_ROWS) -> None:
        self.settle, self.sync_rows = timedelta(seconds=settle), sync_rows
        #: Every dispatch declared dead with ``done_at`` before `cut` is in `folded`.
        self.cut: datetime | None = None
        self.folded = 0
        self.warming: threading.Thread | None = None
        self._lock = threading.Lock()  # scrapes arrive on several server threads

    def read(self, now: datetime) -> int | None:
        with self._lock:
            if self.warming is not None:
                return None
            cut = now - self.settle
            if self.cut is None:
                top = Dispatch.select(peewee.fn.MAX(Dispatch.id)).scalar() or 0
                if top > self.sync_rows:
                    self.warming = threading.Thread(target=self._warm, args=(top, cut), daemon=True,
                                                    name="metrics-dead-dispatches")
                    self.warming.start()
                    return None
                self.folded, self.cut = _dead_between(None, cut), cut
            elif cut > self.cut:
                self.folded, self.cut = self.folded + _dead_between(self.cut, cut), cut
            return self.folded + _dead_between(self.cut, None)

    def _warm(self, top: int, cut: datetime) -> None:
        """Count the dead rows done before `cut`, `WARM_CHUNK_ROWS` ids at a time, off the scrape's
        thread (a row above `top` was written after the scrape began, so it was not done before `cut`)."""
        folded, low = 0, 0
        try:
            with database.connection_context():
                while low < top:
                    high = min(top, low + WARM_CHUNK_ROWS)
                    folded += _dead_between(None, cut, ids=(low, high))
                    low = high
            with self._lock:
                self.folded, self.cut = folded, cut
        except Exception:  # the next scrape starts again
            log.warning("could not count the dead dispatches for /metrics", exc_info=True)
        finally:
            with self._lock:
                self.warming = None


def _dead_between(since: datetime | None, until: datetime | None, ids: tuple[int, int] | None = None) -> int:
    """Dispatches declared dead with ``since <= done_at < until`` (either end open), among ids
    ``low < id <= high`` when `ids` is given."""
    where = Dispatch.done_at.is_null(False) & Dispatch.outcome.startswith(DEAD + ":")
    if since is not None:
        where &= Dispatch.done_at >= since
    if until is not None:
        where &= Dispatch.done_at < until
    if ids is not None:
        where &= (Dispatch.id > ids[0]) & (Dispatch.id <= ids[1])
    return Dispatch.select(peewee.fn.COUNT(Dispatch.id)).where(where).scalar() or 0


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
