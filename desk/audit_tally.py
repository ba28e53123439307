"""Counters and histograms read from the audit trail, cheaply enough for every scrape.

The audit trail (`TicketEvent`) is append-only and grows without bound, so a
scrape must not re-read it all. An `AuditTally` keeps, per process, what it
has folded up to a *watermark* id, and on each scrape adds only the rows above
it — with SQL doing the counting and the bucketing, never Python per row.

Ids are handed out before commit, so on PostgreSQL a row with a lower id can
become visible after a higher one. Rows are therefore folded only once their
id was seen `SETTLE_SECONDS` ago (longer than any transaction may run);
younger rows are recounted on every scrape. Counters never go down: a row
counted once stays counted. Each process starts from the whole table on its
first scrape, so every API process reports the same totals.
"""
from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable

import peewee

from models.audit import TicketEvent
from models.base import database
from models.states import STATES

#: Upper bounds (seconds) of the time-in-state buckets: a second to a week.
BUCKETS: tuple[float, ...] = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 8 * 3600, 86400, 3 * 86400,
                              7 * 86400)
#: Audit rows are folded into the kept totals once their id was seen this long ago.
SETTLE_SECONDS = 180.0
#: The states whose stays the histogram measures: those the floor's agents work.
VISIBLE_STATES: tuple[str, ...] = tuple(s.value for s, info in STATES.items() if info.visible)

Move = tuple[str | None, str, str]  # (from_state, to_state, action)


@dataclass
class Stays:
    """A histogram of stays in one state: cumulative bucket counts (one per `BUCKETS` bound), the
    count and the sum of seconds."""

    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    count: int = 0
    total: float = 0.0

    def __add__(self, other: "Stays") -> "Stays":
        return Stays([a + b for a, b in zip(self.buckets, other.buckets)], self.count + other.count,
                     self.total + other.total)


@dataclass
class Tally:
    """Committed changes by (from_state, to_state, action), and stays per visible state."""

    moves: Counter[Move] = field(default_factory=Counter)
    stays: dict[str, Stays] = field(default_factory=dict)

    def __add__(self, other: "Tally") -> "Tally":
        states = set(self.stays) | set(other.stays)
        return Tally(self.moves + other.moves,
                     {s: self.stays.get(s, Stays()) + other.stays.get(s, Stays()) for s in states})

    def by_action(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for (_, _, action), n in self.moves.items():
            counts[action] += n
        return dict(counts)

    def in_state(self, state: str) -> int:
        """Tickets in `state` now: changes into it less changes out of it."""
        into = sum(n for (f, t, _), n in self.moves.items() if t == state and f != state)
        out = sum(n for (f, t, _), n in self.moves.items() if f == state and t != state)
        return into - out


class AuditTally:
    """The audit trail's totals for one process (keep one per database, read it per scrape)."""

    def __init__(self, settle: float = SETTLE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.settle, self.clock = settle, clock
        self.watermark = 0
        self.folded = Tally()
        self.seen: deque[tuple[float, int]] = deque()

    def read(self) -> Tally:
        """Everything committed so far: the folded totals plus a fresh count above the watermark."""
        now = self.clock()
        top = TicketEvent.select(peewee.fn.MAX(TicketEvent.id)).scalar() or 0
        if top < self.watermark:  # the table was emptied (a new database): start again
            self.__init__(self.settle, self.clock)  # type: ignore[misc]
        self.seen.append((now, top))
        settled = None
        while self.seen and self.seen[0][0] <= now - self.settle:
            settled = self.seen.popleft()[1]
        if settled is not None and settled > self.watermark:
            self.folded = self.folded + count_rows(self.watermark, settled)
            self.watermark = settled
        return self.folded + count_rows(self.watermark, top) if top > self.watermark else self.folded


def count_rows(low: int, high: int) -> Tally:
    """The tally of audit rows with ``low < id <= high``, counted by the database."""
    tally = Tally()
    moves = (TicketEvent.select(TicketEvent.from_state, TicketEvent.to_state, TicketEvent.action,
                                peewee.fn.COUNT(TicketEvent.id))
             .where((TicketEvent.id > low) & (TicketEvent.id <= high))
             .group_by(TicketEvent.from_state, TicketEvent.to_state, TicketEvent.action).tuples())
    for from_state, to_state, action, n in moves:
        tally.moves[(from_state, to_state, action)] += n
    for row in database.execute_sql(_stays_sql(), (low, high, *VISIBLE_STATES)).fetchall():
        state, count, total, *buckets = row
        tally.stays[state] = Stays([int(b or 0) for b in buckets], int(count), float(total or 0.0))
    return tally


def _stays_sql() -> str:
    """Per visible state: how many stays ended in the id range, their total seconds, and how many
    lasted at most each bucket bound. A stay ends at a row that leaves the state; it began at the
    ticket's previous state-changing row (found through the (ticket, version) index)."""
    p = database.param
    table = TicketEvent._meta.table_name
    entered = (f'(SELECT b."at" FROM "{table}" b WHERE b."ticket_id" = e."ticket_id" AND b."version" < e."version"'
               f' AND (b."from_state" IS NULL OR b."from_state" <> b."to_state")'
               f' ORDER BY b."version" DESC LIMIT 1)')
    buckets = ", ".join(f"SUM(CASE WHEN s.secs <= {bound} THEN 1 ELSE 0 END)" for bound in BUCKETS)
    placeholders = ", ".join(p for _ in VISIBLE_STATES)
    seconds = _seconds_between(entered, 'e."at"')
    return (f"SELECT s.state, COUNT(*), SUM(s.secs), {buckets} FROM ("
            f'SELECT e."from_state" AS state, {seconds} AS secs'
            f' FROM "{table}" e WHERE e."id" > {p} AND e."id" <= {p}'
            f' AND e."from_state" <> e."to_state" AND e."from_state" IN ({placeholders})'
            f") s WHERE s.secs IS NOT NULL GROUP BY s.state")


def _seconds_between(start: str, end: str) -> str:
    """SQL for the seconds from `start` to `end` (timestamps), in this database's dialect."""
    if isinstance(database.obj, peewee.PostgresqlDatabase):
        return f"EXTRACT(EPOCH FROM ({end} - {start}))"
    return f"((julianday({end}) - julianday({start})) * 86400.0)"
