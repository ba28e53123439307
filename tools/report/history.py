"""What the report reads: the tickets created in a window and their audit trails, loaded once.

Every section is a pure function of a `History`, so a section can be tested
against a hand-made history and the report never queries the same rows twice.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterator, Union

import peewee

from policy import Policy
from models.audit import TicketEvent
from models.ticket import Ticket

Moment = Union[datetime, str, None]
#: A JSON-ready report: nested dicts and lists of str, int, float, None.
Report = dict[str, object]


@dataclass
class History:
    """The tickets of the window (by creation time), their trails (oldest first) and the clock."""

    tickets: list[Ticket]
    trails: dict[int, list[TicketEvent]]
    #: A sub-select of the window's ticket ids, for sections that aggregate other tables.
    ids: peewee.SelectQuery
    policy: Policy
    now: datetime
    start: datetime | None = None
    end: datetime | None = None
    by_id: dict[int, Ticket] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_id = {t.id: t for t in self.tickets}

    def events(self) -> Iterator[TicketEvent]:
        """Every audit row of the window's tickets, ticket by ticket, oldest first."""
        for trail in self.trails.values():
            yield from trail

    def trail(self, ticket_id: int) -> list[TicketEvent]:
        return self.trails.get(ticket_id, [])


def load_history(since: Moment, until: Moment, policy: Policy, now: datetime) -> History:
    """Tickets created in ``[since, until)`` with their audit trails."""
    start, end = moment(since, policy), moment(until, policy)
    where = Ticket.id.is_null(False)
    if start is not None:
        where &= Ticket.created_at >= start
    if end is not None:
        where &= Ticket.created_at < end
    tickets = list(Ticket.select().where(where).order_by(Ticket.id))
    ids = Ticket.select(Ticket.id).where(where)
    trails: dict[int, list[TicketEvent]] = defaultdict(list)
    for event in (TicketEvent.select().where(TicketEvent.ticket.in_(ids))
                  .order_by(TicketEvent.ticket, TicketEvent.version)):
        trails[event.ticket_id].append(event)
    return History(tickets, dict(trails), ids, policy, now, start, end)


def moment(value: Moment, policy: Policy) -> datetime | None:
    """ISO text or a datetime, as aware UTC; naive values are read in the policy calendar's zone."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO date or time (e.g. 2026-11-01 or 2026-11-01T09:00+08:00)")
    if value.tzinfo is None:
        value = value.replace(tzinfo=policy.calendar.tz)
    return value.astimezone(timezone.utc)


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def is_agent(event: TicketEvent) -> bool:
    return event.actor.startswith("agent:")


def agent_id(event: TicketEvent) -> int | None:
    """The agent of an ``agent:<id>`` actor, else None."""
    if not is_agent(event):
        return None
    try:
        return int(event.actor.split(":", 1)[1])
    except ValueError:
        return None


def state_changes(trail: list[TicketEvent]) -> Iterator[TicketEvent]:
    """The rows of a trail that moved the ticket to another state (its creation included): rows
    that keep the state (claims, evidence welcome in stage 2, linked complaints) are skipped."""
    state: str | None = None
    for event in trail:
        if event.to_state != state:
            yield event
            state = event.to_state
