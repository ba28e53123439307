"""Service-level promises of one ticket: when each falls due and whether it was broken.

The platform promises (SPEC §1) that a complaint is taken over within
``sla.accept`` of reaching the floor, the buyer hears back within
``sla.first_feedback``, and the dispute is resolved within
``sla.resolve_simple``/``resolve_complex`` (working days on the policy
calendar). A promise is *breached* when its due time passed before its
milestone happened — still open and late, or done late. Computed on read from
the ticket and its audit trail, so there is no second copy to keep in step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from models.audit import TicketEvent
from models.prepared import Prepared
from models.states import STATES, State
from models.ticket import Ticket

if TYPE_CHECKING:
    from policy import Policy

#: Agent actions that count as the buyer's first feedback (a stage-1 decision, not the mere takeover).
FEEDBACK_ACTIONS = ("request_evidence", "to_judgment")


@dataclass
class Sla:
    accept_due: datetime | None = None
    first_feedback_due: datetime | None = None
    resolve_due: datetime | None = None
    accepted_at: datetime | None = None
    fed_back_at: datetime | None = None
    resolved_at: datetime | None = None
    breaches: list[str] = field(default_factory=list)
    #: Time the clock stood still while the ticket waited on a party (so far).
    stopped_seconds: float = 0.0
    paused: bool = False
    priority: int = 0

    def as_json(self) -> dict[str, object]:
        return {"accept_due": iso(self.accept_due), "first_feedback_due": iso(self.first_feedback_due),
                "resolve_due": iso(self.resolve_due), "accepted_at": iso(self.accepted_at),
                "resolved_at": iso(self.resolved_at), "breaches": list(self.breaches),
                "stopped_seconds": round(self.stopped_seconds, 3), "paused": self.paused,
                "priority": self.priority}


def _stopped(ticket: Ticket, now: datetime) -> float:
    running = (now - ticket.sla_paused_since).total_seconds() if ticket.sla_paused_since else 0.0
    return (ticket.sla_paused_seconds or 0.0) + max(0.0, running)


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def ended_at(ticket: Ticket) -> datetime | None:
    """When the ticket reached a final state (``closed_at`` for closed, else entering the state)."""
    if not STATES[State(ticket.state)].terminal:
        return None
    return ticket.closed_at or ticket.state_entered_at


def milestones(ticket_id: int) -> tuple[datetime | None, datetime | None]:
    """(first takeover, first stage-1 decision) from the audit trail."""
    accepted = fed_back = None
    for event in _MILESTONES.rows(TicketEvent, ticket=ticket_id):
        if event.action == "take_over" and accepted is None:
            accepted = event.at
        elif event.action in FEEDBACK_ACTIONS and fed_back is None:
            fed_back = event.at
    return accepted, fed_back


#: Read for every ticket shown: compiled once (models.prepared).
_MILESTONES = Prepared(lambda s: TicketEvent.select(TicketEvent.action, TicketEvent.at).where(
    (TicketEvent.ticket == s.ticket) & TicketEvent.action.in_(("take_over",) + FEEDBACK_ACTIONS)
    & TicketEvent.actor.startswith("agent:")).order_by(TicketEvent.version))


def ticket_sla(ticket: Ticket, policy: "Policy", now: datetime,
               marks: tuple[datetime | None, datetime | None] | None = None) -> Sla:
    """The ticket's promises; `marks` (takeover, first feedback) are read from the trail unless given."""
    floor = ticket.floor_at
    if floor is None:  # settled or withdrawn before the floor: no floor promise was made
        return Sla(resolved_at=ended_at(ticket))
    sla, calendar = policy.sla, policy.calendar
    accepted, fed_back = marks if marks is not None else milestones(ticket.id)
    done = ended_at(ticket)
    # The promises pinned when the ticket reached the floor (moved back by stopped time) are the
    # truth; tickets from before pinning existed fall back to the policy in force.
    result = Sla(accept_due=ticket.sla_accept_due or sla.accept.after(floor, calendar),
                 first_feedback_due=ticket.sla_feedback_due or sla.first_feedback.after(floor, calendar),
                 resolve_due=ticket.sla_resolve_due or sla.resolve_within(ticket.complexity).after(floor, calendar),
                 accepted_at=accepted, fed_back_at=fed_back, resolved_at=done,
                 stopped_seconds=_stopped(ticket, now), paused=ticket.sla_paused_since is not None,
                 priority=ticket.priority or 0)
    # A ticket that ended without the milestone stops the clock when it ended; one waiting on a
    # party stopped it when it started waiting.
    stop = done or ticket.sla_paused_since or now
    for name, due, reached in (("accept", result.accept_due, accepted),
                               ("first_feedback", result.first_feedback_due, fed_back),
                               ("resolve", result.resolve_due, done)):
        if due is not None and (reached or stop) > due:
            result.breaches.append(name)
    return result
