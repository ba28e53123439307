"""``disputes ticket show``: one ticket and its history, for a person or (``--json``) a program."""
from __future__ import annotations

import json
from datetime import datetime

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from disputes.wiring import App
from models.base import utcnow
from models.notification import FAILED, UNDELIVERED, Notification
from models.outbox import Dispatch
from models.ticket import LinkedComplaint, Ticket
from models.views.ticket import ticket_events, ticket_json
from policy.calendar import local_time
from policy.options import money_text


def find_ticket(ref: str) -> Ticket | None:
    """REF is a ticket id or ``source:external_ref`` (a linked complaint's ref finds its ticket)."""
    if ref.isdigit():
        return Ticket.get_or_none(id=int(ref))
    source, _, external_ref = ref.partition(":")
    ticket = Ticket.get_or_none((Ticket.source == source) & (Ticket.external_ref == external_ref))
    if ticket is None:
        link = LinkedComplaint.get_or_none((LinkedComplaint.source == source)
                                           & (LinkedComplaint.external_ref == external_ref))
        ticket = Ticket.get_or_none(id=link.ticket_id) if link else None
    return ticket


def unfinished_dispatches(ticket: Ticket) -> list[dict]:
    """Messages for this ticket still in flight, or given up on: what an SRE looks for first."""
    rows = Dispatch.select().where((Dispatch.ticket_id == ticket.id)
                                   & (Dispatch.done_at.is_null() | Dispatch.outcome.startswith("dead")))
    return [{"id": d.id, "queue": d.queue, "kind": d.kind, "attempts": d.attempts, "outcome": d.outcome} for d in rows]


def undelivered_notifications(ticket: Ticket) -> list[dict]:
    """Notifications for this ticket still being tried, or failed after their last try (a
    notification is its own work item: no dispatch row stands for it)."""
    rows = (Notification.select(Notification.id, Notification.template, Notification.recipient,
                                Notification.channel, Notification.status, Notification.attempts,
                                Notification.last_error, Notification.last_attempt_at)
            .where((Notification.ticket_id == ticket.id) & Notification.status.in_([*UNDELIVERED, FAILED]))
            .order_by(Notification.id))
    return [{"id": n.id, "template": n.template, "recipient": n.recipient, "channel": n.channel,
             "status": n.status, "attempts": n.attempts, "last_error": n.last_error,
             "last_attempt_at": n.last_attempt_at} for n in rows]


def show_ticket(ticket: Ticket, app: App, *, as_json: bool, console: Console | None = None) -> None:
    """The ticket for a person (times in the policy calendar's zone, saying it; money in major
    units with its currency; nothing cut off at 80 columns) or, with `as_json`, for a program (the
    API's document: ISO 8601 times, minor units)."""
    document = ticket_json(ticket, None, app.policy, utcnow())
    document["history"] = ticket_events(ticket.id)
    document["dispatches"] = unfinished_dispatches(ticket)
    document["notifications"] = undelivered_notifications(ticket)
    console = console or Console()
    if as_json:
        console.print_json(json.dumps(document, default=str, ensure_ascii=False))
        return
    zone = app.policy.calendar.zone

    def money(amount: int | None) -> str:
        return "-" if amount is None else money_text(amount, ticket.currency)

    def at(value: str | None) -> str:
        return "-" if not value else local_time(datetime.fromisoformat(value), zone)

    head = f"[bold]ticket {ticket.id}[/bold]  {escape(ticket.ref)}  state [bold]{ticket.state}[/bold]  version {ticket.version}"
    waiting = f"waiting on {document.get('waiting_on')}"
    # One line when it fits; else "waiting on …" whole on the next line (a wrap would split it).
    fits = len(f"ticket {ticket.id}  {ticket.ref}  state {ticket.state}  version {ticket.version}  {waiting}")
    if fits <= console.width:
        console.print(f"{head}  {waiting}")
    else:
        console.print(head)
        console.print(waiting)
    console.print(f"{ticket.dispute_type} · {ticket.category} · claimed {money(ticket.claimed_amount)} "
                  f"of {money(ticket.order_amount)}")
    console.print(f"liability {ticket.liability or '-'} · remedy {ticket.remedy or '-'}"
                  + (f" · refund {money(ticket.refund_amount)}, paid {money(ticket.refunded_amount or 0)}"
                     if ticket.refund_amount is not None else ""))
    console.print(f"created {at(document.get('created_at'))} · times in {zone}")
    # Narrow enough for 80 columns: the state a change led to (the one it left is the row above),
    # the QC verdict under its action; a long word wraps, nothing is cut off.
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1), collapse_padding=True)
    table.add_column("v", justify="right", no_wrap=True)
    table.add_column("at", no_wrap=True)
    table.add_column("actor", overflow="fold")
    table.add_column("action · qc", overflow="fold")
    table.add_column("state after", overflow="fold")
    for h in document["history"]:
        qc = h["qc"]
        action = h["action"] + (f"\nqc {qc['verdict']} {qc['reason_code'] or ''}".rstrip() if qc else "")
        table.add_row(str(h["version"]), at(h["at"]), h["actor"], action, h["to_state"])
    console.print(table)
    for d in document["dispatches"]:
        console.print(f"[yellow]dispatch {d['id']} to {d['queue']} ({d['kind']}): "
                      f"{d['outcome'] or 'not done'} after {d['attempts']} sends[/yellow]")
    for n in document["notifications"]:
        colour = "red" if n["status"] == FAILED else "yellow"
        console.print(f"[{colour}]notification {n['id']} ({n['template']} to the {n['recipient']} by "
                      f"{n['channel']}): {n['status']} after {n['attempts']} tries"
                      f"{escape(': ' + n['last_error']) if n['last_error'] else ''}[/{colour}]")
