"""``GET /metrics``: the floor's numbers in Prometheus text, read from the database at scrape time.

Several API processes (and workers) run at once, so in-process counters would
each see a slice; the database is the one truth, and a custom collector reads
it on every scrape: tickets per state, the audit trail's transitions, how long
the oldest ticket has waited in each state, open SLA breaches, the outbox and
dispatch backlogs, and the broker's queue depths (falling back to undone
dispatches when the broker cannot say).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import peewee
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from desk.probes import queue_depth
from desk.sla import open_breaches
from disputes.settings import QUEUES
from models.audit import TicketEvent
from models.intake import RejectedMessage
from models.outbox import Dispatch, OutboxEvent
from models.states import STATES, State
from models.ticket import Ticket

if TYPE_CHECKING:
    from disputes.wiring import App

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class FloorCollector(Collector):
    """Reads every metric from the database (and the broker) when scraped."""

    def __init__(self, app: "App") -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        yield self._tickets()
        yield from self._queues()
        yield self._transitions()
        yield self._oldest_wait()
        yield self._breaches()
        yield from self._backlogs()

    def _tickets(self) -> Metric:
        counts = dict(Ticket.select(Ticket.state, peewee.fn.COUNT(Ticket.id)).group_by(Ticket.state).tuples())
        family = GaugeMetricFamily("disputes_tickets", "Tickets per state.", labels=["state"])
        for state in State:
            family.add_metric([state.value], counts.get(state.value, 0))
        return family

    def _queues(self) -> Iterator[Metric]:
        undone = dict(Dispatch.select(Dispatch.queue, peewee.fn.COUNT(Dispatch.id))
                      .where(Dispatch.done_at.is_null()).group_by(Dispatch.queue).tuples())
        depth = GaugeMetricFamily("disputes_queue_depth",
                                  "Messages waiting in each stage queue (undone dispatches when the broker "
                                  "cannot say).", labels=["queue"])
        backlog = GaugeMetricFamily("disputes_dispatch_backlog_by_queue",
                                    "Dispatches not yet applied or refused, per queue.", labels=["queue"])
        for queue in QUEUES:
            on_broker = queue_depth(self.app.broker, queue)
            depth.add_metric([queue], undone.get(queue, 0) if on_broker is None else on_broker)
            backlog.add_metric([queue], undone.get(queue, 0))
        yield depth
        yield backlog

    def _transitions(self) -> Metric:
        counts = (TicketEvent.select(TicketEvent.action, peewee.fn.COUNT(TicketEvent.id))
                  .group_by(TicketEvent.action).order_by(TicketEvent.action).tuples())
        family = CounterMetricFamily("disputes_transitions", "Committed ticket changes, by action.",
                                     labels=["action"])
        for action, count in counts:
            family.add_metric([action], count)
        return family

    def _oldest_wait(self) -> Metric:
        """Latency as an operator watches it: how long the longest-waiting ticket of each open
        state has been there (a stuck stage shows as a rising line)."""
        now = self.app.clock()
        open_states = [s.value for s, info in STATES.items() if not info.terminal]
        oldest = dict(Ticket.select(Ticket.state, peewee.fn.MIN(Ticket.state_entered_at))
                      .where(Ticket.state.in_(open_states)).group_by(Ticket.state).tuples())
        family = GaugeMetricFamily("disputes_state_wait_seconds_max",
                                   "Seconds the longest-waiting ticket has been in each open state.",
                                   labels=["state"])
        for state in open_states:
            entered = oldest.get(state)
            if entered is not None:
                entered = Ticket.state_entered_at.python_value(entered)
            family.add_metric([state], max(0.0, (now - entered).total_seconds()) if entered else 0.0)
        return family

    def _breaches(self) -> Metric:
        family = GaugeMetricFamily("disputes_sla_breaches_open",
                                   "Open tickets past a service-level promise.", labels=["sla"])
        for name, count in open_breaches(self.app.policy, self.app.clock()).items():
            family.add_metric([name], count)
        return family

    def _backlogs(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("disputes_dispatch_backlog", "Dispatches not yet applied or refused.",
                                value=Dispatch.select().where(Dispatch.done_at.is_null()).count())
        yield GaugeMetricFamily("disputes_outbox_backlog", "op.events messages not yet published.",
                                value=OutboxEvent.select().where(OutboxEvent.published_at.is_null()).count())
        yield GaugeMetricFamily("disputes_rejected_messages", "Intake messages rejected and not replayed.",
                                value=RejectedMessage.select().where(RejectedMessage.status == "rejected").count())


def render_metrics(app: "App") -> bytes:
    """The Prometheus exposition text; a registry per scrape, so nothing is process-global."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FloorCollector(app))
    return generate_latest(registry)
