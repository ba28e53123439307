"""The SLA watcher: warnings at the policy's levels, then the breach — each logged once.

Only tickets whose `sla_check_at` has come are read (an indexed range), so
the cost follows the warnings due, not the tickets open. The watcher writes
only its own fields (priority, next check, next due), never the state.
"""
from __future__ import annotations

from datetime import datetime

from policy import Policy
from models import sla
from models.base import database
from models.ticket import Ticket


def watch_slas(policy: Policy, now: datetime, batch: int = 500) -> int:
    """Log the SLA warnings and breaches due by `now`; returns how many were logged."""
    logged = 0
    due = list(Ticket.select(Ticket.id).where(Ticket.sla_check_at <= now).order_by(Ticket.sla_check_at)
               .limit(batch))
    for row in due:
        with database.atomic():
            ticket = Ticket.get_or_none(id=row.id)
            if ticket is None or ticket.sla_check_at is None or ticket.sla_check_at > now:
                continue
            logged += len(sla.watch(ticket, policy.sla.warn_at, now))
            (Ticket.update(priority=ticket.priority, sla_due_at=ticket.sla_due_at, sla_check_at=ticket.sla_check_at)
             .where(Ticket.id == ticket.id).execute())
    return logged
