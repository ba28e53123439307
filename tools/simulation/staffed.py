"""The demo's simulation on a planned floor: one day of a forecast worked by the real system.

`run_day` runs the embedded system and the demo's world (`run.DemoRun`) with complaints arriving
as a Poisson process at each hour's forecast rate, and the agents a staffing plan gives each stage
in each hour on duty (`agents.Floor`), each holding a claimed ticket for a handling time drawn
from the stage's distribution before deciding. What it returns is read back from the audit trail
by the planner's own `planning.measure`: per stage, when each ticket arrived and how long it
waited for an agent.

Time runs fast, as in the demo: `Pace.hour` seconds of the run stand for an hour of the plan
(`Pace.factor` times as fast), and so do the world's own delays — the demo policy's deadlines of
seconds and the parties' answers of a second or so stand for minutes to an hour of the plan's
time. The workflow stamps its audit rows with the real clock, so after a run `stretch_trail`
moves them onto the plan's clock (each row `factor` times as far before the run's end): the run
becomes the hours that ended when it did, `planning.measure` reads them as such, and `disputes
plan` plans from them as from any recent past.
"""
from __future__ import annotations

import io
import multiprocessing
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import peewee
from rich.console import Console

from disputes.settings import Settings
from disputes.wiring import build_app
from models.audit import TicketEvent
from models.base import database, utcnow
from models.schema import init_schema
from models.ticket import Ticket
from planning.measure import Measured, measure, stage_of
from policy import Policy
from tools.simulation.agents import Floor, Handling
from tools.simulation.run import DemoRun
from tools.simulation.world import normalize_shares, rng

#: Seconds in an hour of the plan.
HOUR = 3600.0


@dataclass(frozen=True)
class Pace:
    """How fast the run's clock goes: `hour` seconds of the run stand for an hour of the plan."""

    hour: float

    @property
    def factor(self) -> float:
        """Seconds of the plan per second of the run."""
        return HOUR / self.hour

    def run_seconds(self, plan_seconds: float) -> float:
        return plan_seconds / self.factor


def poisson_arrivals(per_hour: Sequence[float], pace: Pace, seed: int) -> list[float]:
    """When complaints arrive, in seconds of the run from its start: a Poisson process whose rate in
    each hour is that hour's forecast count (so each hour brings that many on average)."""
    r = rng(seed, "arrivals")
    times: list[float] = []
    for index, count in enumerate(per_hour):
        if count <= 0:
            continue
        end, rate = (index + 1) * pace.hour, count / pace.hour
        at = index * pace.hour + r.expovariate(rate)
        while at < end:
            times.append(at)
            at += r.expovariate(rate)
    return times


def stretch(at: datetime, end: datetime, factor: float) -> datetime:
    """A moment of a run that ended at `end`, on the plan's clock: `factor` times as far before it."""
    return end - (end - at) * factor


def stretch_trail(since: datetime, end: datetime, factor: float) -> int:
    """Move the audit rows of a run (written from `since` until it ended at `end`) onto the plan's
    clock (`stretch`): the run becomes the hours before its end. Returns how many rows moved. (Only
    the audit trail, which is all `planning.measure` reads: the run's database is the record of a
    day, not a live system.)"""
    rows = list(TicketEvent.select(TicketEvent.id, TicketEvent.at).where(TicketEvent.at >= since).tuples())
    with database.atomic():
        for row_id, at in rows:
            at = TicketEvent.at.python_value(at)
            TicketEvent.update(at=stretch(at, end, factor)).where(TicketEvent.id == row_id).execute()
    return len(rows)


@dataclass
class Day:
    """One simulated day, on the plan's clock: the complaints sent, what the audit trail measures
    (`measured`: per stage the arrivals, the handling times, the waits and when each began), the
    run's length in seconds of the run, and whether it finished (every ticket final, or every
    ticket of the day claimed or known to have waited too long: see `run_day`) before its timeout,
    and per stage when each ticket still waiting at the end had arrived."""

    origin: datetime
    complaints: int
    measured: Measured
    elapsed: float
    finished: bool
    agents: dict[str, int] = field(default_factory=dict)
    unclaimed: dict[str, list[datetime]] = field(default_factory=dict)

    def waits(self, stage: str, hours: int | None = None) -> list[float]:
        """The stage's waits (arrival to claim, seconds of the plan) of the tickets that arrived at it
        in the first `hours` hours of the day (all of them when None)."""
        work = self.measured.stages[stage]
        end = self.origin + timedelta(hours=hours) if hours is not None else None
        return [wait for wait, began in zip(work.waits, work.waited_from) if end is None or began < end]

    def attainment(self, stage: str, target: float, hours: int | None = None) -> tuple[int, int]:
        """(tickets claimed within `target` seconds of reaching the stage, tickets that reached it), of
        those that arrived in the first `hours` hours (the ones never claimed count as late)."""
        waits = self.waits(stage, hours)
        end = self.origin + timedelta(hours=hours) if hours is not None else None
        late = [at for at in self.unclaimed.get(stage, []) if end is None or at < end]
        return sum(1 for w in waits if w <= target), len(waits) + len(late)


def run_day(database: Path | str, policy: Policy, *, per_hour: Sequence[float], shifts: Mapping[int, Sequence[int]],
            handling: Mapping[int, float], pace: Pace, seed: int = 1, capacity: int = 1, complete: bool = True,
            target: float | None = None, timeout: float | None = None) -> Day:
    """One day on a new SQLite database at the path `database` (or the empty database of that URL,
    e.g. ``postgresql://...``): complaints at `per_hour` (a Poisson process),
    `shifts[stage][hour]` agents of each stage on duty (after the last hour, its staffing, at least
    one agent), each holding `capacity` tickets at most and a ticket for an exponential time of
    mean `handling[stage]` seconds of the plan (stratified: `agents.Handling`). With `complete` the run goes on until every ticket is
    final (a history to plan from); without, only until the day is over and every ticket that
    reached a stage during it was claimed — or, given a `target` wait (seconds of the plan), has
    waited longer than that already (a day to check a plan on: what arrives later is beyond it,
    and a ticket's fate against the target is known by then). The audit trail is left on the
    plan's clock."""
    arrivals = poisson_arrivals(per_hour, pace, seed)
    floor = Floor(shifts, pace.hour, Handling({s: pace.run_seconds(m) for s, m in handling.items()}, seed), capacity)
    url = database if isinstance(database, str) else f"sqlite:///{database}"
    app = build_app(Settings(database_url=url, broker_url="memory://", intake_url="memory://"), policy=policy)
    try:
        with app.db.connection_context():
            init_schema()
        run = DemoRun(app, len(arrivals), seed, normalize_shares(None), arrivals=arrivals, floor=floor)
        started = time.monotonic()
        day_end = len(per_hour) * pace.hour  # seconds of the run from its start
        timeout = timeout if timeout is not None else len(per_hour) * pace.hour + 120
        try:
            run.start()
            if complete:
                final = run.wait_until_final(Console(file=io.StringIO()), timeout)
            else:
                final = _wait_until_known(run, day_end, None if target is None else pace.run_seconds(target),
                                          started + timeout)
        finally:
            run.stop()
        elapsed = time.monotonic() - started
        assert run.origin is not None
        end = utcnow()
        with app.db.connection_context():
            unclaimed: dict[str, list[datetime]] = {}
            waiting = _waiting(_real_time(run, day_end)).select(Ticket.state, Ticket.state_entered_at).tuples()
            for state, entered in waiting:
                unclaimed.setdefault(stage_of(state) or state, []).append(
                    stretch(Ticket.state_entered_at.python_value(entered), end, pace.factor))
            stretch_trail(run.origin, end, pace.factor)
            origin = stretch(run.origin, end, pace.factor)
            measured = measure(origin, end + timedelta(seconds=1))
        return Day(origin, run.expected_complaints, measured, round(elapsed, 2), final, dict(run.agents.stats),
                   unclaimed)
    finally:
        app.db.close()


def run_days(jobs: Sequence[Mapping[str, Any]]) -> list[Day]:
    """`run_day` for each job's keyword arguments, all at once, each in a process of its own (the
    embedded system is one per process: the database, the broker and the memory transports are
    the process's). Mostly the runs wait — for arrivals, for handling times — so two share a
    core without slowing each other much."""
    with ProcessPoolExecutor(max_workers=len(jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        return [future.result() for future in [pool.submit(run_day, **job) for job in jobs]]


#: The states in which a ticket waits for an agent of its stage when nobody holds it.
WAITING = ("awaiting_takeover", "stage1", "stage2", "stage3", "stage4")


def _real_time(run: DemoRun, offset: float) -> datetime:
    assert run.origin is not None
    return run.origin + timedelta(seconds=offset)


def _waiting(before: datetime) -> peewee.ModelSelect:
    """Tickets waiting for an agent of their stage since before `before`."""
    return Ticket.select().where(Ticket.state.in_(WAITING) & Ticket.assignee.is_null()
                                 & (Ticket.state_entered_at < before))


def _wait_until_known(run: DemoRun, day_end: float, target: float | None, deadline: float) -> bool:
    """Until the day (`day_end` seconds of the run) is over and every ticket that reached a stage
    in it was claimed or has waited longer than `target` (seconds of the run); False at the
    monotonic `deadline`."""
    assert run.floor is not None
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if time.monotonic() < run.floor.start + day_end:
            continue
        waiting = _waiting(_real_time(run, day_end))
        if target is not None:
            waiting = waiting.where(Ticket.state_entered_at > utcnow() - timedelta(seconds=target))
        with run.app.db.connection_context():
            if not waiting.exists():
                return True
    return False


__all__ = ["HOUR", "Day", "Pace", "poisson_arrivals", "run_day", "run_days", "stretch", "stretch_trail"]
