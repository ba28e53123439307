"""``disputes top``: the floor live in a terminal, for an SRE on a shell.

Like ``top`` for processes: per stage the backlog agents see, the oldest wait,
how many tickets left the stage in the last minute (and the last five), what
the broker holds for the stage's queue and what is written but not yet done;
below, every open state, and the scheduler's and the outbox's lag. Read with
the same bounded aggregate queries as ``/metrics`` (`models.views.floor`), once a
second, until Ctrl-C.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from dramatiq.brokers.stub import StubBroker
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from disputes.probes import queue_depths
from models.views import floor
from tools.report.stats import duration_label
from disputes.settings import QUEUES
from disputes.wiring import App
from models.states import STATES, State

#: Which states make up each queue's pool (negotiation: the states its deadlines wake).
POOLS: dict[str, frozenset[str]] = {
    queue: frozenset(s.value for s, info in STATES.items()
                     if info.stage == queue or (queue == "negotiation" and info.stage is None
                                                 and info.wake_queue == "negotiation"))
    for queue in QUEUES
}
STAGE_CAPTION = ("out/1m: tickets that left the stage in the last minute; out/5m: per minute over five; "
                 "broker: messages on the queue; undone: dispatches not applied yet")
#: A wait longer than this is shown in red.
LONG_WAIT_SECONDS = 3600.0


@dataclass(frozen=True)
class Frame:
    """One refresh: everything `render` draws."""

    at: datetime
    backlog: dict[str, floor.Backlog]
    last_minute: Counter[tuple[str, str]]
    last_five: Counter[tuple[str, str]]
    depths: dict[str, int | None]
    undone: dict[str, int]
    timers: floor.Timers
    outbox: tuple[int, datetime | None]
    breaches: dict[str, int]


def snapshot(app: App, *, read_broker: bool = True) -> Frame:
    """Read one frame (a few aggregate queries and, if `read_broker`, the broker's queue depths)."""
    now = app.clock()
    depths = queue_depths(app.broker, QUEUES) if read_broker else {q: None for q in QUEUES}
    with app.db.connection_context():
        return Frame(now, floor.open_backlog(), floor.recent_moves(now, 60), floor.recent_moves(now, 300),
                     depths, floor.undone_dispatches(), floor.timers(now), floor.outbox_backlog(),
                     floor.open_breaches(app.policy, now))


def left_pool(moves: Counter[tuple[str, str]], queue: str) -> int:
    """Tickets that left the queue's states for a state outside them."""
    pool = POOLS[queue]
    return sum(n for (f, t), n in moves.items() if f in pool and t not in pool)


def render(frame: Frame) -> Group:
    """The frame as a header, the stage table, the state table and a footer of lags."""
    now = frame.at
    stages = Table(title="Stages", title_justify="left", title_style="bold", caption=STAGE_CAPTION,
                   caption_justify="left")
    for column in ("queue", "waiting", "oldest", "out/1m", "out/5m", "broker", "undone"):
        stages.add_column(column, justify="left" if column == "queue" else "right", no_wrap=True)
    for queue in QUEUES:
        states = [frame.backlog[s] for s in POOLS[queue] if s in frame.backlog]
        waiting = sum(b.tickets for b in states)
        oldest = max((b.oldest_age(now) for b in states if b.tickets), default=None)
        depth = frame.depths.get(queue)
        stages.add_row(queue, str(waiting), _age(oldest), str(left_pool(frame.last_minute, queue)),
                       f"{left_pool(frame.last_five, queue) / 5:.1f}", "-" if depth is None else str(depth),
                       str(frame.undone.get(queue, 0)))
    states = Table(title="Open states", title_justify="left", title_style="bold")
    for column in ("state", "seen by", "waiting on", "tickets", "oldest"):
        states.add_column(column, justify="right" if column in ("tickets", "oldest") else "left")
    for state, b in frame.backlog.items():
        info = STATES[State(state)]
        states.add_row(state, info.stage or "[dim]hidden[/dim]", info.waiting_on, str(b.tickets),
                       _age(b.oldest_age(now) if b.tickets else None))
    outbox, oldest_event = frame.outbox
    footer = Text.assemble(
        ("timers ", "bold"), f"{sum(frame.timers.pending.values())} pending, {sum(frame.timers.due.values())} due, "
        f"lag {duration_label(frame.timers.lag(now))}   ",
        ("outbox ", "bold"), f"{outbox} unpublished"
        + (f", oldest {duration_label((now - oldest_event).total_seconds())}" if oldest_event else "") + "   ",
        ("SLA breaches ", "bold"), ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in frame.breaches.items()))
    header = Text.assemble(("disputes top", "bold"), f"  {now:%Y-%m-%d %H:%M:%S} UTC   Ctrl-C to quit", style="")
    return Group(header, stages, states, footer)


def _age(seconds: float | None) -> Text:
    if seconds is None:
        return Text("-")
    return Text(duration_label(seconds), style="red" if seconds >= LONG_WAIT_SECONDS else "")


def run_top(app: App, console: Console, *, once: bool = False, interval: float = 1.0) -> None:
    """Print one frame (`once`), or refresh a live view every `interval` seconds until Ctrl-C. An
    in-process broker of this command's own holds nothing, so its depths are shown as unknown."""
    read_broker = not isinstance(app.broker, StubBroker)
    if once:
        console.print(render(snapshot(app, read_broker=read_broker)))
        return
    try:
        with Live(render(snapshot(app, read_broker=read_broker)), console=console, refresh_per_second=4) as live:
            while True:
                time.sleep(interval)
                live.update(render(snapshot(app, read_broker=read_broker)))
    except KeyboardInterrupt:
        pass
