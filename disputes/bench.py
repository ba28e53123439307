"""``disputes bench``: what one state change costs, against the database's own floor.

The baseline is measured in the same run on the same database: one UPDATE
plus one INSERT in one transaction, the least a transition can cost. The
figure printed is the median of several rounds and the ratio to it.
"""
from __future__ import annotations

import statistics
import time
import uuid

from rich.console import Console
from rich.table import Table

from disputes.wiring import App
from models.audit import TicketEvent
from models.base import database, utcnow
from models.change import Actor, Role
from models.ticket import Ticket
from models.workflow import apply, open_ticket


def _tickets(app: App, count: int) -> list[int]:
    run = uuid.uuid4().hex[:8]
    ids = []
    for i in range(count):
        fields = dict(source="bench", external_ref=f"{run}-{i}", channel="app", user_id="u", merchant_id=f"m{i}",
                      order_id=f"{run}-{i}", order_amount=1000, currency="CNY", category="other", delivery="merchant",
                      order_status="delivered", dispute_type="other", claimed_amount=500, occurred_at=utcnow())
        ids.append(open_ticket(fields, {"negotiation": "failed"}, app.policy).ticket.id)  # type: ignore[union-attr]
    return ids


def _transitions(app: App, ids: list[int]) -> float:
    """Seconds per change: one `submit_evidence` self-transition per ticket, through the table."""
    start = time.perf_counter()
    for ticket_id in ids:
        apply(ticket_id, "submit_evidence", Actor(Role.USER), {"party": "user", "items": []}, app.policy)
    return (time.perf_counter() - start) / len(ids)


def _baseline(ids: list[int]) -> float:
    """Seconds per raw UPDATE + INSERT, one transaction each."""
    start = time.perf_counter()
    for ticket_id in ids:
        with database.atomic():
            Ticket.update(version=Ticket.version + 1).where(Ticket.id == ticket_id).execute()
            version = Ticket.get_by_id(ticket_id).version
            TicketEvent.create(ticket=ticket_id, version=version, from_state="x", to_state="x", actor="bench",
                               action="baseline")
    return (time.perf_counter() - start) / len(ids)


def run_benchmarks(app: App, *, quick: bool = False, rounds: int = 5) -> dict[str, float]:
    size = 50 if quick else 500
    with app.db.connection_context():
        ids = _tickets(app, size)
        ours, base = [], []
        for _ in range(3 if quick else rounds):
            base.append(_baseline(ids))
            ours.append(_transitions(app, ids))
    result = {"transition_per_s": 1 / statistics.median(ours), "baseline_per_s": 1 / statistics.median(base)}
    result["ratio"] = result["transition_per_s"] / result["baseline_per_s"]
    table = Table("benchmark", "median/s", "baseline/s", "ratio", title=f"disputes bench on {app.settings.database_url}")
    table.add_row("state change", f"{result['transition_per_s']:.0f}", f"{result['baseline_per_s']:.0f}",
                  f"{result['ratio']:.2f}")
    Console().print(table)
    return result
