"""``disputes demo``: the embedded system end to end, with a simulated world around it.

The demo runs the real system — the dramatiq stage workers on the in-process
broker, the scheduler (timers, outbox relay, reconciler), the kombu intake
consumer and the HTTP desk — against a fresh SQLite file in a temporary
directory, with deadlines shortened to seconds so that silent parties take
the deadline paths too. Around it, `disputes.simulation` plays the upstream
systems, the merchants and buyers, a downstream consumer of ``op.events``
and the four agent pools. It stops when every ticket is final (or at a
timeout), shuts everything down, and prints the report of `disputes.report`.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from dramatiq import Worker
from peewee import fn
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from disputes.policy import Policy, default_policy_dict, policy_from_dict
from disputes.report import build_report, render_report
from disputes.settings import Settings
from disputes.simulation import AgentPool, EventTap, Mailbox, Parties, complaints, rng
from disputes.wiring import App, build_app
from models.base import utcnow
from models.intake import ProcessedMessage, RejectedMessage
from models.outbox import OutboxEvent
from models.schema import init_schema
from models.states import TERMINAL_STATES
from models.ticket import Ticket

log = logging.getLogger("disputes.demo")

#: The default policy's deadlines, shortened so a demo sees every silence path in seconds.
DEMO_DEADLINES = {"merchant_response": "3s", "customer_confirmation": "2s", "interception": "2s",
                  "evidence": "3s", "payment_voucher": "3s"}
#: dramatiq worker threads for the five queues together.
WORKER_THREADS = 8
#: The scheduler's beat in the demo (seconds).
SCHEDULER_INTERVAL = 0.05
#: Complaints arrive as a stream at this rate (a burst would queue the parties' answers behind it).
ARRIVALS_PER_SECOND = 50.0
#: How long to wait after the last ticket is final for the relay and the downstream consumer.
SETTLE_SECONDS = 5.0
TERMINAL = [s.value for s in TERMINAL_STATES]
#: Short names for the progress line.
ABBREVIATIONS = {"negotiating": "neg", "awaiting_confirmation": "conf", "intercepting": "icpt",
                 "awaiting_takeover": "take", "awaiting_evidence": "evid", "awaiting_payment": "pay"}


@dataclass
class DemoResult:
    """What a demo run did; `all_terminal` is False when some ticket was still open at the end."""

    report: dict
    all_terminal: bool
    tickets: int
    admitted: int
    elapsed: float
    timed_out: bool
    #: Messages published to ``op.intake``, by routing key (duplicates included).
    published: dict[str, int] = field(default_factory=dict)
    #: Events the downstream consumer received from ``op.events``, by routing key.
    events_received: dict[str, int] = field(default_factory=dict)
    #: Events of one ticket that arrived after a later one (must be 0), and exact repeats.
    out_of_order: int = 0
    repeated: int = 0
    agents: dict[str, int] = field(default_factory=dict)
    #: Warnings and errors logged by the system while the demo ran, by logger.
    logged: dict[str, int] = field(default_factory=dict)


def demo_policy() -> Policy:
    """The shipped default policy with deadlines of seconds."""
    data = default_policy_dict()
    data["deadlines"].update(DEMO_DEADLINES)  # type: ignore[union-attr]
    return policy_from_dict(data)


def run_demo(tickets: int = 200, seed: int = 7, console: Console | None = None, *,
             timeout: float | None = None, show_report: bool = True) -> DemoResult:
    """Run the demo with `tickets` simulated complaints; prints a progress bar and (unless
    `show_report` is False) the report on `console`. `timeout` defaults to 30 s + 0.45 s a ticket."""
    if tickets < 1:
        raise ValueError("the demo needs at least one ticket")
    console = console or Console()
    timeout = 30 + 0.45 * tickets if timeout is None else timeout
    workdir = tempfile.mkdtemp(prefix="disputes-demo-")
    counter = _LogCounter()
    logging.getLogger().addHandler(counter)
    try:
        app = build_app(Settings(database_url=f"sqlite:///{workdir}/demo.db", broker_url="memory://",
                                 intake_url="memory://"), policy=demo_policy())
        with app.db.connection_context():
            init_schema()
        run = DemoRun(app, tickets, seed)
        started = time.monotonic()
        try:
            run.start()
            timed_out = not run.wait_until_final(console, timeout)
            run.settle()
        finally:
            run.stop()
        elapsed = time.monotonic() - started
        with app.db.connection_context():
            report = build_report(policy=app.policy)
            admitted, open_count = run.counts()
        result = DemoResult(
            report=report, all_terminal=open_count == 0 and run.complaints_seen() >= run.expected_complaints,
            tickets=tickets, admitted=admitted, elapsed=round(elapsed, 2), timed_out=timed_out,
            published=dict(run.mailbox.published), events_received=dict(run.tap.counts),
            out_of_order=run.tap.out_of_order, repeated=run.tap.repeated, agents=dict(run.agents.stats),
            logged=dict(counter.counts))
        if show_report:
            render_report(report, console)
            console.print(summary_table(result))
        return result
    finally:
        logging.getLogger().removeHandler(counter)
        shutil.rmtree(workdir, ignore_errors=True)


class DemoRun:
    """The system's parts and the simulated world, started and stopped together."""

    def __init__(self, app: App, tickets: int, seed: int) -> None:
        from desk import create_api
        self.app, self.tickets, self.seed = app, tickets, seed
        self.world_stop, self.system_stop = threading.Event(), threading.Event()
        self.mailbox = Mailbox(app)
        self.parties = Parties(self.mailbox, seed)
        self.tap = EventTap(app, self.parties.on_event)
        self.worker = Worker(app.broker, worker_threads=WORKER_THREADS, worker_timeout=100)
        with app.db.connection_context():
            self.agents = AgentPool(create_api(app), seed)
        self.expected_complaints = tickets
        self._world: list[threading.Thread] = []
        self._system: list[threading.Thread] = []

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        from scheduler.loop import Scheduler
        from workers import declare_all
        from workers.intake import consume, intake_queue
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
        self._world += [_spawn(f"demo-{name}", self.agents.run_agent, stage, token, self.world_stop.is_set)
                        for stage, name, token in self.agents.agents]
        self.publish_upstream()

    def publish_upstream(self) -> None:
        """Merchant balances, the complaints, a few exact repeats and one linked complaint."""
        bodies = complaints(self.tickets, self.seed, list(self.app.policy.codes["category"]), utcnow())
        for merchant in sorted({body["merchant_id"] for _, body in bodies}):
            balance = rng(self.seed, "balance", merchant).randrange(0, 2_000_000, 100)
            self.mailbox.post("merchant.balance_changed", {"merchant_id": merchant, "balance": balance,
                                                           "currency": "CNY"}, f"balance:{merchant}")
        r = rng(self.seed, "upstream")
        linked = next((i for i, (_, body) in enumerate(bodies) if body["negotiation"] == "pending"), None)
        repeated = set(r.sample(range(len(bodies)), k=min(3, len(bodies))))
        for i, (message_id, body) in enumerate(bodies):
            at = i / ARRIVALS_PER_SECOND
            self.parties.remember(body["source"], body["external_ref"], body["user_id"], body["merchant_id"])
            self.mailbox.post("complaint.submitted", body, message_id, delay=at)
            if i == linked:  # the same order again from the other channel: joins the open ticket
                other = {**body, "source": "after-sales" if body["source"] == "order-system" else "order-system",
                         "external_ref": body["external_ref"] + "-2", "description": "the same order, again"}
                self.mailbox.post("complaint.submitted", other, f"{other['source']}:{other['external_ref']}", at)
                self.expected_complaints += 1
            if i in repeated:  # an upstream retry: the very same message again
                self.mailbox.post("complaint.submitted", body, message_id, delay=at + r.uniform(0.2, 1.0))

    def wait_until_final(self, console: Console, timeout: float) -> bool:
        """Show progress until every ticket is final; False at the timeout."""
        deadline = time.monotonic() + timeout
        columns = (TextColumn("[bold]tickets final"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[detail]}"))
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("demo", total=self.tickets, detail="")
            while True:
                with self.app.db.connection_context():
                    by_state = dict(Ticket.select(Ticket.state, fn.COUNT(Ticket.id)).group_by(Ticket.state).tuples())
                    seen = self.complaints_seen()
                final = sum(n for state, n in by_state.items() if state in TERMINAL)
                detail = " ".join(f"{ABBREVIATIONS.get(s, s)} {n}" for s, n in sorted(by_state.items())
                                  if s not in TERMINAL)
                progress.update(task, completed=final, total=max(self.tickets, sum(by_state.values())), detail=detail)
                if seen >= self.expected_complaints and final == sum(by_state.values()):
                    return True
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.2)

    def settle(self) -> None:
        """Let the relay publish the last events and the downstream consumer receive them."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < deadline:
            with self.app.db.connection_context():
                published = OutboxEvent.select().where(OutboxEvent.published_at.is_null(False)).count()
                waiting = OutboxEvent.select().where(OutboxEvent.published_at.is_null()).count()
            if waiting == 0 and self.tap.total >= published:
                return
            time.sleep(0.1)

    def stop(self) -> None:
        """Agents and parties first, then the scheduler and intake, then the workers."""
        self.world_stop.set()
        self.system_stop.set()
        for thread in self._world + self._system:
            thread.join(timeout=15)
        self.worker.stop(timeout=10_000)
        from workers.intake import intake_queue
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


def summary_table(result: DemoResult) -> Table:
    """The demo's own checks: what was sent, what came out, how the agents fared."""
    table = Table(title="Demo run", title_justify="left", title_style="bold", show_header=False)
    table.add_column("what")
    table.add_column("value")
    status = "every ticket final" if result.all_terminal else "[red]some tickets still open[/red]"
    table.add_row("outcome", f"{status}{' (timed out)' if result.timed_out else ''} in {result.elapsed:.1f} s")
    table.add_row("tickets admitted", f"{result.admitted} of {result.tickets} complaints")
    table.add_row("published to op.intake", _counts(result.published))
    received = sum(result.events_received.values())
    table.add_row("received from op.events", f"{received} events; {result.out_of_order} out of order, "
                                             f"{result.repeated} repeated")
    intake = result.report["intake"]
    table.add_row("intake", f"{intake['linked_complaints']} linked complaints; rejected (arrived too late or "
                            f"invalid): {_counts(intake['rejected']) or 'none'}")
    table.add_row("agent decisions", _counts(result.agents))
    table.add_row("warnings logged", _counts(result.logged) or "none")
    return table


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {n}" for key, n in sorted(counts.items()))


def _spawn(name: str, target: Callable[..., object], *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    return thread


class _LogCounter(logging.Handler):
    """Counts warnings and errors by logger while the demo runs (shown in the summary)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if not record.getMessage().startswith("No hostname was supplied"):  # kombu, on memory://
            self.counts[record.name] += 1
