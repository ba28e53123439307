"""Counters and histograms read from append-only tables, cheaply enough for every scrape.

The audit trail (`TicketEvent`) and the SLA log (`SlaEvent`) are append-only
and grow without bound, so a scrape must not re-read them. An
`AppendOnlyTally` keeps, per process, what it has folded up to a *watermark*
id, and on each scrape adds only the rows above it — with SQL doing the
counting and the bucketing, never Python per row.

Ids are handed out before commit, so on PostgreSQL a row with a lower id can
become visible after a higher one. Rows are therefore folded only once their
id was seen `SETTLE_SECONDS` ago (longer than any transaction may run) or
`SETTLE_ROWS` newer rows exist; younger rows are recounted on every scrape,
so a scrape costs what a few thousand rows cost. Counters never go down: a
row counted once stays counted. Each process starts from the whole table
(folded in the background when it is large: those families are absent from
scrapes until then, rather than wrong), so every API process reports the
same totals.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Generic, TypeVar

import peewee

from models.audit import TicketEvent
from models.base import database
from models.sla import SlaEvent
from models.states import STATES

#: Upper bounds (seconds) of the time-in-state buckets: a second to a week.
BUCKETS: tuple[float, ...] = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 8 * 3600, 86400, 3 * 86400,
                              7 * 86400)
#: Rows are folded into the kept totals once their id was seen this long ago...
SETTLE_SECONDS = 180.0
#: ... or once this many rows were added after them.
SETTLE_ROWS = 5_000
#: A first read folds up to this many rows on the scrape's thread; a larger table is folded in the
#: background (in chunks of `WARM_CHUNK_ROWS`) and its families are left out of scrapes until then.
SYNC_ROWS = 200_000
WARM_CHUNK_ROWS = 100_000
#: The states whose stays the histogram measures: those the floor's agents work.
VISIBLE_STATES: tuple[str, ...] = tuple(s.value for s, info in STATES.items() if info.visible)

log = logging.getLogger("disputes.api")

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


T = TypeVar("T", Tally, Counter)


class AppendOnlyTally(Generic[T]):
    """Totals of an append-only table for one process (keep one per database, read it per
    scrape): `count` counts the rows of an id range, and results add up with ``+``."""

    def __init__(self, model: type[peewee.Model], count: Callable[[int, int], T], empty: Callable[[], T],
                 settle: float = SETTLE_SECONDS, clock: Callable[[], float] = time.monotonic, *,
                 settle_rows: int = SETTLE_ROWS, sync_rows: int = SYNC_ROWS) -> None:
        self.model, self.count, self.empty = model, count, empty
        self.settle, self.clock, self.settle_rows, self.sync_rows = settle, clock, settle_rows, sync_rows
        self.watermark = 0
        self.folded: T = empty()
        self.seen: deque[tuple[float, int]] = deque()
        self.warming: threading.Thread | None = None
        self._lock = threading.Lock()  # scrapes arrive on several server threads

    def read(self) -> T | None:
        """Everything committed so far — the folded totals plus a fresh count above the watermark —
        or None while a large table is first being folded in the background."""
        with self._lock:
            if self.warming is not None:
                return None
            top = self.model.select(peewee.fn.MAX(self.model._meta.primary_key)).scalar() or 0
            if top < self.watermark:  # the table was emptied (a new database): start again
                self.watermark, self.folded = 0, self.empty()
                self.seen.clear()
            if self.watermark == 0 and top - self.settle_rows > self.sync_rows:
                self.warming = threading.Thread(target=self._warm, args=(top - self.settle_rows,), daemon=True,
                                                name=f"metrics-{self.model._meta.table_name}")
                self.warming.start()
                return None
            return self._read(top)

    def _read(self, top: int) -> T:
        now = self.clock()
        self.seen.append((now, top))
        settled = max(0, top - self.settle_rows)
        while self.seen and self.seen[0][0] <= now - self.settle:
            settled = max(settled, self.seen.popleft()[1])
        if settled > self.watermark:
            self.folded = self.folded + self.count(self.watermark, settled)
            self.watermark = settled
        return self.folded + self.count(self.watermark, top) if top > self.watermark else self.folded

    def _warm(self, target: int) -> None:
        """Fold ``(0, target]`` chunk by chunk, off the scrape's thread."""
        folded, low = self.empty(), 0
        try:
            with database.connection_context():
                while low < target:
                    high = min(target, low + WARM_CHUNK_ROWS)
                    folded, low = folded + self.count(low, high), high
            with self._lock:
                self.folded, self.watermark = folded, target
        except Exception:  # the next scrape starts again
            log.warning("could not fold %s for /metrics", self.model._meta.table_name, exc_info=True)
        finally:
            with self._lock:
                self.warming = None


def audit_tally(settle: float = SETTLE_SECONDS,
                clock: Callable[[], float] = time.monotonic) -> AppendOnlyTally[Tally]:
    """The tally of the audit trail: changes by state and action, and stays per visible state."""
    return AppendOnlyTally(TicketEvent, count_rows, Tally, settle, clock)


def breach_tally(settle: float = SETTLE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> AppendOnlyTally[Counter]:
    """SLA breaches logged (`SlaEvent` rows of kind ``breach``), per promise."""
    return AppendOnlyTally(SlaEvent, count_breaches, Counter, settle, clock)


def count_breaches(low: int, high: int) -> Counter[str]:
    return Counter(dict(SlaEvent.select(SlaEvent.promise, peewee.fn.COUNT(SlaEvent.id))
                        .where((SlaEvent.id > low) & (SlaEvent.id <= high) & (SlaEvent.kind == "breach"))
                        .group_by(SlaEvent.promise).tuples()))


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
    # MATERIALIZED: each stay's seconds are computed once, not once per bucket expression.
    return (f'WITH s AS MATERIALIZED (SELECT e."from_state" AS state, {seconds} AS secs'
            f' FROM "{table}" e WHERE e."id" > {p} AND e."id" <= {p}'
            f' AND e."from_state" <> e."to_state" AND e."from_state" IN ({placeholders}))'
            f" SELECT s.state, COUNT(*), SUM(s.secs), {buckets} FROM s WHERE s.secs IS NOT NULL GROUP BY s.state")


def _seconds_between(start: str, end: str) -> str:
    """SQL for the seconds from `start` to `end` (timestamps), in this database's dialect."""
    if isinstance(database.obj, peewee.PostgresqlDatabase):
        return f"EXTRACT(EPOCH FROM ({end} - {start}))"
    return f"((julianday({end}) - julianday({start})) * 86400.0)"
