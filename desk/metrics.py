"""``GET /metrics``: the floor's numbers in Prometheus text, read from the database and the broker
at scrape time.

Several API processes (and workers) run at once, so in-process counters would
each see a slice; the database is the one truth, and a custom collector reads
it on every scrape. Every read is an aggregate query bounded by the open
backlog (`models.views.floor`) or by the audit rows added since the last scrape
(`models.views.tallies`), so a scrape stays cheap however many tickets were ever
closed. Names follow Prometheus conventions: the ``disputes_`` prefix, base
units in the name (``_seconds``), ``_total`` on counters.

An autoscaler scales each stage's workers on ``disputes_queue_depth{queue=…}``
(messages waiting on the broker for that stage's queue); see the README.

A scrape answers within its deadline whatever the database and the broker do:
the database's families are read on a thread of their own (`disputes.probes.ask`)
waited on for `DATABASE_READ_TIMEOUT`, while the broker is asked for its queue
depths (`PROBE_TIMEOUT`). What did not answer in time is left out of the scrape
(never reported as 0), and ``disputes_dependency_up{dependency=…}`` says which.
"""
from __future__ import annotations

import threading
import weakref
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Iterator

import peewee
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from models.views.tallies import BUCKETS, VISIBLE_STATES, AppendOnlyTally, Tally, audit_tally, breach_tally
from disputes.probes import Deadline, ask, database_outages, read_queue_depths
from models.views import floor
from disputes.settings import QUEUES
from models.states import STATES, State

if TYPE_CHECKING:
    from disputes.wiring import App

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: How long a scrape waits for the database's families (the broker is asked meanwhile), well inside
#: Prometheus' 10 s (deploy/prometheus/prometheus.yml). A few indexed aggregates take milliseconds; a
#: process's first scrape of a large audit trail may take longer once: that scrape then leaves them
#: out, its read goes on and keeps what it folded, and the next scrape is quick.
DATABASE_READ_TIMEOUT = 3.0

@dataclass
class Tallies:
    """What a process keeps between scrapes of one database: the append-only tables' totals."""

    audit: AppendOnlyTally[Tally] = field(default_factory=audit_tally)
    breaches: AppendOnlyTally[Counter] = field(default_factory=breach_tally)
    dead: floor.DeadDispatches = field(default_factory=floor.DeadDispatches)


_tallies: "weakref.WeakKeyDictionary[peewee.Database, Tallies]" = weakref.WeakKeyDictionary()
_tallies_lock = threading.Lock()


def tallies_of(db: peewee.Database) -> Tallies:
    """The process's tallies of `db` (one set per database, kept between scrapes)."""
    with _tallies_lock:
        found = _tallies.get(db)
        if found is None:
            found = _tallies[db] = Tallies()
        return found


class FloorCollector(Collector):
    """Reads every metric from the database (and the broker) when scraped."""

    def __init__(self, app: "App", tallies: Tallies | None = None) -> None:
        self.app = app
        self.tallies = tallies or tallies_of(app.db)

    def collect(self) -> Iterator[Metric]:
        """The database's families read on a thread of their own while the broker is asked; what did
        not answer within its deadline is left out."""
        deadline = Deadline(DATABASE_READ_TIMEOUT)
        reading = ask("metrics", self.app.db, lambda: self._read_database(self.app.clock()))
        on_broker = read_queue_depths(self.app.broker, QUEUES)
        read = deadline.wait(reading, database_outages.of(self.app.db))
        undone, families = read.value if read.value is not None else (None, [])
        yield from self._queue_depths(on_broker.value or dict.fromkeys(QUEUES), undone)
        yield from families
        yield self._dependencies(database=read.problem is None, broker=on_broker.problem is None)

    def _read_database(self, now: datetime) -> tuple[dict[str, int], list[Metric]]:
        """The undone dispatches per queue (what a queue's depth is estimated from when the broker
        cannot say), and every family read from the database."""
        with self.app.db.connection_context():  # this thread's own connection, given back after
            tally = self.tallies.audit.read()
            backlog = floor.open_backlog()
            work = floor.undone_work()
            families = [*self._dispatches(work, now), self._tickets(backlog, tally), self._oldest_wait(backlog, now)]
            if tally is not None:  # None: a large audit trail still being folded in the background
                families += [self._transitions(tally), self._stays(tally)]
            families += [*self._timers(now), *self._breaches(now), *self._intake(), *self._outbox(now)]
        return {queue: w.count for queue, w in work.items()}, families

    def _queue_depths(self, on_broker: dict[str, int | None], undone: dict[str, int] | None) -> Iterator[Metric]:
        """Each queue's depth as the broker says, else estimated from its undone dispatches; a queue
        neither the broker nor the database answered for has no sample (not a misleading 0)."""
        depth = GaugeMetricFamily("disputes_queue_depth", "Messages waiting in each stage queue on the broker "
                                  "(undone dispatches when the broker cannot say): scale a stage's workers on it.",
                                  labels=["queue"])
        known = GaugeMetricFamily("disputes_queue_depth_from_broker",
                                  "1 when disputes_queue_depth was read from the broker, 0 when estimated.",
                                  labels=["queue"])
        for queue in QUEUES:
            counted = on_broker[queue]
            estimated = None if undone is None else undone.get(queue, 0)
            if counted is None and estimated is None:
                continue
            depth.add_metric([queue], estimated if counted is None else counted)
            known.add_metric([queue], 0 if counted is None else 1)
        yield depth
        yield known

    def _dependencies(self, *, database: bool, broker: bool) -> Metric:
        family = GaugeMetricFamily("disputes_dependency_up",
                                   "1 when the dependency answered this scrape within its deadline, 0 when it "
                                   "failed or did not (the families read from it are then left out).",
                                   labels=["dependency"])
        family.add_metric(["database"], int(database))
        family.add_metric(["broker"], int(broker))
        return family

    def _dispatches(self, work: dict[str, floor.Undone], now: datetime) -> Iterator[Metric]:
        backlog = GaugeMetricFamily("disputes_dispatch_backlog_by_queue",
                                    "Dispatches not yet applied or refused, per queue.", labels=["queue"])
        oldest = GaugeMetricFamily("disputes_dispatch_oldest_age_seconds",
                                   "Age of the oldest dispatch not yet applied or refused, per queue (for "
                                   "notify, or notification not delivered); 0: none.", labels=["queue"])
        for queue in QUEUES:
            backlog.add_metric([queue], work[queue].count if queue in work else 0)
            oldest.add_metric([queue], work[queue].oldest_age(now) if queue in work else 0.0)
        yield backlog
        yield GaugeMetricFamily("disputes_dispatch_backlog", "Dispatches not yet applied or refused.",
                                value=sum(w.count for w in work.values()))
        yield oldest
        dead = self.tallies.dead.read(now)
        if dead is not None:  # None: a large dispatch table still being counted in the background
            yield CounterMetricFamily("disputes_dispatches_dead",
                                      "Dispatches declared dead: their handler failed try after try "
                                      "(waiting for workers never makes one dead).", value=dead)

    def _tickets(self, backlog: dict[str, floor.Backlog], tally: Tally | None) -> Metric:
        """Open states counted in the tickets table; final states from the audit trail (into less
        out of), which costs nothing however many tickets were ever closed."""
        family = GaugeMetricFamily("disputes_tickets", "Tickets per state.", labels=["state"])
        for state in State:
            if state.value in backlog:
                family.add_metric([state.value], backlog[state.value].tickets)
            elif tally is not None:
                family.add_metric([state.value], max(0, tally.in_state(state.value)))
        return family

    def _oldest_wait(self, backlog: dict[str, floor.Backlog], now: datetime) -> Metric:
        """How long the longest-waiting ticket of each open state has been there (a stuck stage
        shows as a rising line)."""
        family = GaugeMetricFamily("disputes_state_wait_seconds_max",
                                   "Seconds the longest-waiting ticket has been in each open state.",
                                   labels=["state"])
        for state, b in backlog.items():
            family.add_metric([state], b.oldest_age(now))
        return family

    def _transitions(self, tally: Tally) -> Metric:
        family = CounterMetricFamily("disputes_transitions", "Committed ticket changes (audit rows), by action.",
                                     labels=["action"])
        for action, count in sorted(tally.by_action().items()):
            family.add_metric([action], count)
        return family

    def _stays(self, tally: Tally) -> Metric:
        family = HistogramMetricFamily(
            "disputes_stage_latency_seconds",
            "Time tickets spent in each state agents work before leaving it, from the audit trail.",
            labels=["stage", "state"])
        for state in VISIBLE_STATES:
            stays = tally.stays.get(state)
            buckets = [(_bound(b), n) for b, n in zip(BUCKETS, stays.buckets if stays else [0] * len(BUCKETS))]
            count = stays.count if stays else 0
            family.add_metric([STATES[State(state)].stage or state, state], buckets + [("+Inf", count)],
                              sum_value=stays.total if stays else 0.0)
        return family

    def _timers(self, now: datetime) -> Iterator[Metric]:
        t = floor.timers(now)
        pending = GaugeMetricFamily("disputes_timers_pending", "Durable timers not fired yet, per queue they wake.",
                                    labels=["queue"])
        due = GaugeMetricFamily("disputes_timers_due", "Pending timers already due (the scheduler is behind).",
                                labels=["queue"])
        for queue in QUEUES:
            pending.add_metric([queue], t.pending.get(queue, 0))
            due.add_metric([queue], t.due.get(queue, 0))
        yield pending
        yield due
        yield GaugeMetricFamily("disputes_timer_lag_seconds", "Age of the oldest due timer not fired yet (0: none).",
                                value=t.lag(now))

    def _breaches(self, now: datetime) -> Iterator[Metric]:
        open_now = GaugeMetricFamily("disputes_sla_breaches_open",
                                     "Open floor tickets past a service-level promise now.", labels=["sla"])
        for name, count in floor.open_breaches(self.app.policy, now).items():
            open_now.add_metric([name], count)
        yield open_now
        logged = self.tallies.breaches.read()
        if logged is not None:
            total = CounterMetricFamily("disputes_sla_breaches", "Service-level breaches logged, per promise.",
                                        labels=["sla"])
            for name in floor.PROMISES:
                total.add_metric([name], logged.get(name, 0))
            yield total

    def _intake(self) -> Iterator[Metric]:
        total, waiting = floor.rejected_messages()
        yield CounterMetricFamily("disputes_intake_rejected", "Intake messages rejected (stored for replay).",
                                  value=total)
        yield GaugeMetricFamily("disputes_intake_rejected_waiting", "Rejected intake messages not replayed yet.",
                                value=waiting)
        held, oldest = floor.held_messages(self.app.clock())
        yield GaugeMetricFamily("disputes_intake_held", "Follow-ups held until their complaint is admitted.",
                                value=held)
        yield GaugeMetricFamily("disputes_intake_held_oldest_age_seconds",
                                "How long the oldest held follow-up has waited (0: none).", value=oldest)

    def _outbox(self, now: datetime) -> Iterator[Metric]:
        count, oldest = floor.outbox_backlog()
        yield GaugeMetricFamily("disputes_outbox_backlog", "op.events messages not yet published.", value=count)
        yield GaugeMetricFamily("disputes_outbox_oldest_age_seconds",
                                "Age of the oldest op.events message not yet published (0: none).",
                                value=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)


def _bound(seconds: float) -> str:
    return str(float(seconds))


def render_metrics(app: "App") -> bytes:
    """The Prometheus exposition text; a registry per scrape, so nothing is process-global but the
    audit tally."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FloorCollector(app))
    return generate_latest(registry)
