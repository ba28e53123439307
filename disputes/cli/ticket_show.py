"""``disputes ticket show``: one ticket and its history, for a person or (``--json``) a program."""
from __future__ import annotations

import json

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from disputes.wiring import App
from models.base import utcnow
from models.notification import FAILED, UNDELIVERED, Notification
from models.outbox import Dispatch
from models.ticket import LinkedComplaint, Ticket
from models.views.ticket import ticket_events, ticket_json


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


def show_ticket(ticket: Ticket, app: App, *, as_json: bool) -> None:
    document = ticket_json(ticket, None, app.policy, utcnow())
    document["history"] = ticket_events(ticket.id)
    document["dispatches"] = unfinished_dispatches(ticket)
    document["notifications"] = undelivered_notifications(ticket)
    console = Console()
    if as_json:
        console.print_json(json.dumps(document, default=str, ensure_ascii=False))
        return
    console.print(f"[bold]ticket {ticket.id}[/bold]  {ticket.ref}  state=[bold]{ticket.state}[/bold] "
                  f"v{ticket.version}  waiting on {document.get('waiting_on')}")
    console.print(f"{ticket.dispute_type} · {ticket.category} · claimed {ticket.claimed_amount} of "
                  f"{ticket.order_amount} {ticket.currency} · liability {ticket.liability or '-'} "
                  f"· remedy {ticket.remedy or '-'}")
    table = Table("v", "at", "actor", "action", "from", "to", "qc")
    for h in document["history"]:
        qc = h["qc"]
        table.add_row(str(h["version"]), h["at"][:19], h["actor"], h["action"], h["from_state"] or "(new)",
                      h["to_state"], f"{qc['verdict']} {qc['reason_code'] or ''}".strip() if qc else "")
    console.print(table)
    for d in document["dispatches"]:
        console.print(f"[yellow]dispatch {d['id']} to {d['queue']} ({d['kind']}): "
                      f"{d['outcome'] or 'not done'} after {d['attempts']} sends[/yellow]")
    for n in document["notifications"]:
        colour = "red" if n["status"] == FAILED else "yellow"
        console.print(f"[{colour}]notification {n['id']} ({n['template']} to the {n['recipient']} by "
                      f"{n['channel']}): {n['status']} after {n['attempts']} tries"
                      f"{escape(': ' + n['last_error']) if n['last_error'] else ''}[/{colour}]")
