"""Claims are leases: an agent who holds a ticket past ``routing.lease`` without acting loses it.

The release is a transition of the table (``lease_expired``, by the
scheduler), so it is versioned and audited like any change, and the ticket
goes back to its stage's queue for the next claim. A decision the agent sent
before the lease ran out (accepted by the API, not applied yet) keeps the
lease: the check and the release run with the ticket locked, as the API's
acceptance does, so the agent is never told 202 for a decision then refused.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from policy import Policy
from models.change import Actor, Role
from models.states import STATES
from models.base import database
from models.errors import Refused
from models.outbox import decision_in_flight
from models.ticket import Ticket, lock_ticket
from models.workflow import Outcome, apply

VISIBLE = [str(s) for s, info in STATES.items() if info.visible]


def expire_leases(policy: Policy, now: datetime, batch: int = 200) -> list[Outcome]:
    """Release tickets held longer than the lease; returns the outcomes (dispatches to send)."""
    held_since = now - timedelta(seconds=policy.routing.lease.seconds())
    stale = list(Ticket.select(Ticket.id, Ticket.version).where(
        Ticket.assignee.is_null(False) & (Ticket.assigned_at < held_since) & Ticket.state.in_(VISIBLE))
        .order_by(Ticket.assigned_at).limit(batch))
    released = []
    for ticket in stale:
        try:
            with database.atomic():
                # With the ticket locked, an agent's decision accepted by the API on this version (its
                # dispatch not applied yet) counts as acting in time: the lease is left alone, and the
                # API, which checks under the same lock, refuses decisions once the lease expired.
                locked = lock_ticket(ticket.id, Ticket.id, Ticket.version)
                if locked is None or locked.version != ticket.version \
                        or decision_in_flight(ticket.id, ticket.version) is not None:
                    continue
                released.append(apply(ticket.id, "lease_expired", Actor(Role.SCHEDULER), {}, policy,
                                      expected_version=ticket.version, now=now))
        except Refused:  # VersionConflict or NotAllowed
            continue  # the agent acted meanwhile: the lease did its job
    return released
