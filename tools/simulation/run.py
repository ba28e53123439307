"""One demo run: the embedded system's parts and the simulated world, started and stopped together.

`DemoRun.start` starts the dramatiq workers on the in-process broker, the
scheduler, the kombu intake consumer, the downstream event consumer, the
mailbox and every agent thread, then has upstream publish the merchants'
balances and the complaints (a steady stream, or at the given `arrivals`,
with the agents on the given `floor`'s shifts from that moment);
`wait_until_final` shows progress until every ticket is final and the world
has nothing left in flight; `stop` shuts it all down in order.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from datetime import datetime
from typing import Callable, Sequence

from dramatiq import Worker
from peewee import fn
from rich.console import Console

from tools.simulation.agents import AgentPool, Floor
from tools.simulation.parties import Parties
from tools.simulation.progress import progress_display
from tools.simulation.world import EventTap, Mailbox, complaints, merchant_balances, merchants_for, plan_answers, rng
from desk import create_api
from disputes.wiring import App
from models.base import utcnow
from models.intake import ProcessedMessage, RejectedMessage
from models.outbox import OutboxEvent
from models.states import TERMINAL_STATES
from models.ticket import Ticket
from scheduler.loop import Scheduler
from workers import declare_all
from workers.intake import consume, intake_queue

log = logging.getLogger("tools.demo")

#: dramatiq worker threads for every queue together. SQLite takes one writer at a time, so more
#: threads only wait on its lock (and slow the intake's commits down with them).
WORKER_THREADS = 4
#: The scheduler's beat in the demo (seconds).
SCHEDULER_INTERVAL = 0.05
#: Complaints arrive as a stream at this rate (a burst would queue the parties' answers behind it).
ARRIVALS_PER_SECOND = 16.0
TERMINAL = [s.value for s in TERMINAL_STATES]


class DemoRun:
    """The system's parts and the simulated world, started and stopped together."""

    def __init__(self, app: App, tickets: int, seed: int, shares: dict[str, float], *,
                 arrivals: Sequence[float] | None = None, floor: Floor | None = None) -> None:
        """`arrivals`: when each of the `tickets` complaints is published, in seconds from the start
        (default: `ARRIVALS_PER_SECOND`, from 0.2 s); `floor`: the agents' shifts and handling times
        (default: `agents.POOLS`, always on duty, deciding at once)."""
        if arrivals is not None and len(arrivals) != tickets:
            raise ValueError(f"{len(arrivals)} arrival times for {tickets} complaints")
        self.app, self.tickets, self.seed = app, tickets, seed
        self.arrivals = list(arrivals) if arrivals is not None else [0.2 + i / ARRIVALS_PER_SECOND
                                                                     for i in range(tickets)]
        self.floor = floor
        #: When the complaints' clock started (the `arrivals` count from it), set by `start`.
        self.origin: datetime | None = None
        self.world_stop, self.system_stop = threading.Event(), threading.Event()
        self.bodies = complaints(tickets, seed, list(app.policy.codes["category"]), utcnow())
        self.plan = plan_answers([f"{b['source']}:{b['external_ref']}" for _, b in self.bodies
                                  if b["negotiation"] == "pending"], shares, seed)
        self.balances = merchant_balances(merchants_for(tickets), seed)
        self.mailbox = Mailbox(app)
        self.parties = Parties(self.mailbox, seed, self.balances, list(app.policy.codes.get("appeal_reason") or []))
        self.worker = Worker(app.broker, worker_threads=WORKER_THREADS, worker_timeout=100)
        with app.db.connection_context():
            self.agents = AgentPool(create_api(app), seed, floor=floor)
        self.tap = EventTap(app, self.on_event)
        self.expected_complaints = tickets
        self._world: list[threading.Thread] = []
        self._system: list[threading.Thread] = []

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        declare_all(self.app)
        self.tap.bind()  # before anything is published: the memory transport drops unrouted events
        with self.app.kombu_connection() as connection:
            bound = intake_queue(connection.channel())
            bound.declare()
            bound.purge()  # nothing left over from an earlier run in this process
        self.worker.start()
        scheduler = Scheduler(self.app, interval=SCHEDULER_INTERVAL)
        self._system += [_spawn("demo-scheduler", scheduler.run, self.system_stop.is_set),
                         _spawn("demo-intake", lambda: consume(self.app, should_stop=self.system_stop.is_set))]
        self._world += [_spawn("demo-events", self.tap.run, self.world_stop.is_set),
                        _spawn("demo-mailbox", self.mailbox.run, self.world_stop.is_set)]
        numbers: Counter[int] = Counter()
        for stage, name, token in self.agents.agents:
            numbers[stage] += 1  # the stage's n-th agent (the first n are on duty when a shift has n)
            self._world.append(_spawn(f"demo-{name}", self.agents.run_agent, stage, token, self.world_stop.is_set,
                                      numbers[stage]))
        self._world += [_spawn(f"demo-{name}", self.agents.run_supervisor, token, self.world_stop.is_set)
                        for name, token in self.agents.supervisors]
        self.publish_upstream()

    def publish_upstream(self) -> None:
        """Merchant balances, the complaints, a few exact repeats and one linked complaint."""
        for merchant, balance in sorted(self.balances.items()):
            self.mailbox.post("merchant.balance_changed", {"merchant_id": merchant, "balance": balance,
                                                           "currency": "CNY"}, f"balance:{merchant}:0")
        r = rng(self.seed, "upstream")
        bodies = self.bodies
        self.origin = utcnow()
        if self.floor is not None:
            self.floor.start = time.monotonic()  # the clock of the shifts starts with the arrivals'
        linked = next((i for i, (_, body) in enumerate(bodies) if body["negotiation"] == "pending"), None)
        repeated = set(r.sample(range(len(bodies)), k=min(3, len(bodies))))
        for i, (message_id, body) in enumerate(bodies):
            at = self.arrivals[i]
            self.parties.remember(body["source"], body["external_ref"], body["user_id"], body["merchant_id"],
                                  self.plan.get(message_id))
            self.mailbox.post("complaint.submitted", body, message_id, delay=at)
            if i == linked:  # the same order again from the other channel: joins the open ticket
                other = {**body, "source": "after-sales" if body["source"] == "order-system" else "order-system",
                         "external_ref": body["external_ref"] + "-2", "description": "the same order, again"}
                self.mailbox.post("complaint.submitted", other, f"{other['source']}:{other['external_ref']}", at)
                self.expected_complaints += 1
            if i in repeated:  # an upstream retry: the very same message again
                self.mailbox.post("complaint.submitted", body, message_id, delay=at + r.uniform(0.2, 1.0))

    def on_event(self, routing_key: str, body: dict) -> None:
        """What downstream hears: the parties answer, the agents waiting for work look again."""
        self.parties.on_event(routing_key, body)
        self.agents.on_event(routing_key, body)

    def wait_until_final(self, console: Console, timeout: float) -> bool:
        """Show progress (`tools.simulation.progress`: a bar on a terminal, a few plain lines
        elsewhere) until every ticket is final and the world is quiet; False at the timeout."""
        deadline = time.monotonic() + timeout
        with progress_display(console, self.tickets) as display:
            while True:
                with self.app.db.connection_context():
                    by_state = dict(Ticket.select(Ticket.state, fn.COUNT(Ticket.id)).group_by(Ticket.state).tuples())
                    final = sum(n for state, n in by_state.items() if state in TERMINAL)
                    done = (final == sum(by_state.values()) and self.complaints_seen() >= self.expected_complaints
                            and self.quiet())
                display.update(final, max(self.tickets, sum(by_state.values())), by_state, TERMINAL)
                if done:
                    return True
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.2)

    def quiet(self) -> bool:
        """Nothing left in flight: every message sent was stored by the intake, every event
        published and handled downstream (so no party has an answer still to send)."""
        if not self.mailbox.idle:
            return False
        if OutboxEvent.select().where(OutboxEvent.published_at.is_null()).exists():
            return False
        if self.tap.total < OutboxEvent.select().count():
            return False
        stored = {m for (m,) in ProcessedMessage.select(ProcessedMessage.message_id).tuples()}
        stored |= {m for (m,) in RejectedMessage.select(RejectedMessage.message_id).tuples()}
        return self.mailbox.message_ids <= stored and self.mailbox.idle

    def stop(self) -> None:
        """Agents and parties first, then the scheduler and intake, then the workers."""
        self.world_stop.set()
        self.system_stop.set()
        for thread in self._world + self._system:
            thread.join(timeout=15)
        self.worker.stop(timeout=10_000)
        with self.app.kombu_connection() as connection:
            intake_queue(connection.channel()).purge()
        self.tap.unbind()
        stuck = [t.name for t in self._world + self._system if t.is_alive()]
        if stuck:
            log.warning("demo threads still running after shutdown: %s", stuck)

    # -- counts --------------------------------------------------------------------------------
    def complaints_seen(self) -> int:
        """Complaints the intake has admitted, linked or rejected (repeats excluded)."""
        processed = ProcessedMessage.select().where(ProcessedMessage.routing_key == "complaint.submitted").count()
        rejected = RejectedMessage.select().where(RejectedMessage.routing_key == "complaint.submitted").count()
        return processed + rejected

    def counts(self) -> tuple[int, int]:
        """(tickets admitted, tickets not final)."""
        return Ticket.select().count(), Ticket.select().where(Ticket.state.not_in(TERMINAL)).count()


def _spawn(name: str, target: Callable[..., object], *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    return thread
