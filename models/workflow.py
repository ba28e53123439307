"""Applying the transition table to tickets: the only code that writes `Ticket.state`.

Every change runs in one transaction that (1) claims its cause so a repeat is
a no-op, (2) matches a table row, (3) runs the row's effects, (4) writes the
ticket with ``WHERE version = <read version>``, and (5) writes the audit row,
the ``op.events`` outbox row and the dispatch to the next stage's queue.
Nothing is sent from inside the transaction: callers send the returned
dispatches after commit, and the relay catches whatever a crash left behind.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Callable

from messages.events import event_body, ledger_body, ledger_routing_key
from models import sla
from models.audit import TicketEvent
from models.base import build, database, utcnow
from models.change import Actor, Change, Role
from models.dispatches import Arrival
from models.errors import NotAllowed, UnknownTicket, VersionConflict
from models.machine import SAME, Transition, match
from models.notification import notify_parties
from models.outbox import OutboxEvent, new_dispatch
from models import write_behind
from models.prepared import Prepared, get_by_id, insert_instance, update_where
from models.write_behind import insert_later
from models.rules import assign_to_actor
from models.states import STATES, State
from models.ticket import Ticket
from models.timer import CANCELLED, PENDING, Timer

if TYPE_CHECKING:
    from policy import Policy

#: Runs first inside the transaction; returns False when the cause was already applied.
ClaimCause = Callable[[], bool]


@dataclass
class Outcome:
    ticket: Ticket | None
    event: TicketEvent | None = None
    dispatches: list[int] = field(default_factory=list)
    duplicate: bool = False


def apply(ticket_id: int, action: str, actor: Actor, params: dict, policy: "Policy", *,
          expected_version: int | None = None, qc: dict | None = None,
          claim_cause: ClaimCause | None = None, cause: str | None = None, now: datetime | None = None,
          retries: int = 5, read: Ticket | None = None) -> Outcome:
    """Apply `action` to the ticket. A caller that names `expected_version` is told of a
    conflict (`VersionConflict`); otherwise the change is re-read and re-matched. A caller that
    has just read the ticket at `expected_version` may pass it as `read` to spare a second read
    (the write is guarded by that version all the same)."""
    for attempt in range(retries + 1):
        try:
            with _own_transaction(expected_version):
                if claim_cause is not None and not claim_cause():
                    return Outcome(get_by_id(Ticket, ticket_id), duplicate=True)
                usable = read is not None and expected_version is not None and read.version == expected_version
                ticket = read if usable else get_by_id(Ticket, ticket_id)
                if ticket is None:
                    raise UnknownTicket(f"no ticket {ticket_id}")
                if expected_version is not None and ticket.version != expected_version:
                    raise VersionConflict(f"ticket {ticket_id} is at version {ticket.version}, "
                                          f"not {expected_version}")
                change = Change(ticket, action, actor, params, policy, now or utcnow(), qc, cause=cause)
                return _commit(change, match(change))
        except VersionConflict:
            if expected_version is not None or attempt == retries:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _own_transaction(expected_version: int | None) -> contextlib.AbstractContextManager:
    """The change's transaction, or a savepoint inside the caller's. A change on an expected version
    is never retried here (a conflict goes up to the caller), so inside a caller's transaction it
    needs no savepoint of its own — two round trips a claim would pay — because whatever it wrote
    is taken back with the caller's transaction, which a refusal leaves by raising through it."""
    if expected_version is not None and database.in_transaction():
        return contextlib.nullcontext()
    return database.atomic()


def open_ticket(fields: dict, params: dict, policy: "Policy", *, claim_cause: ClaimCause | None = None,
                cause: str | None = None, now: datetime | None = None) -> Outcome:
    """Create a ticket from an admitted complaint (the table's ``submit`` rows choose its first state).

    Inside a caller's transaction it adds no savepoint of its own: the caller's (the intake's one
    per message) already takes back whatever a failure here wrote, and a savepoint is two round trips."""
    with database.atomic() if not database.in_transaction() else contextlib.nullcontext():
        if claim_cause is not None and not claim_cause():
            return Outcome(None, duplicate=True)
        now = now or utcnow()
        ticket = build(Ticket, **fields, state=None, version=0, created_at=now, state_entered_at=now)
        change = Change(ticket, "submit", Actor(Role.SYSTEM), params, policy, now, cause=cause)
        row = match(change)
        change.to_state = row.target(None)
        ticket.state, ticket.version, ticket.state_version = change.to_state, 1, 1
        batch = write_behind.active()
        if batch is None:
            insert_instance(ticket)  # effects may write rows that refer to its id
        else:  # held first, so the flush writes it before the rows that refer to it
            ticket.id = batch.next_id(Ticket)
            write_behind.hold(ticket)
        ticket.version = 0  # effects read next_version (1) like any other change
        for effect in row.effects:
            effect(change)
        sla.on_change(change, None)
        ticket.version = 1
        ticket._dirty.discard("version")  # inserted as 1
        if ticket._dirty and batch is None:  # what the effects set after the insert (a held row has it)
            _write_fields(ticket, id=ticket.id)
        ticket._dirty.clear()
        return _record(change, row, True, None)


def _commit(change: Change, row: Transition) -> Outcome:
    ticket = change.ticket
    from_state = ticket.state
    change.to_state = row.target(from_state)
    for effect in row.effects:
        effect(change)
    state_changed = change.to_state != from_state
    if STATES[State(change.to_state)].stage != STATES[State(from_state)].stage and assign_to_actor not in row.effects:
        ticket.assignee = ticket.assigned_at = None
    if state_changed:
        ticket.state_version, ticket.state_entered_at = change.next_version, change.now
        if STATES[State(from_state)].wake_queue is not None:  # only states a deadline wakes hold timers
            _CANCEL_TIMERS_OF_STATE.execute(ticket_id=ticket.id, state=from_state, state_version=change.next_version)
    ticket.state = change.to_state
    sla.on_change(change, from_state)
    ticket.version, read_version = change.next_version, ticket.version
    if _write_fields(ticket, id=ticket.id, version=read_version) != 1:
        raise VersionConflict(f"ticket {ticket.id} moved on while '{change.action}' was applied")
    return _record(change, row, state_changed, from_state)


#: Timers set in the state a ticket leaves die with it (those the change itself just set survive).
_CANCEL_TIMERS_OF_STATE = Prepared(lambda s: Timer.update(status=CANCELLED).where(
    (Timer.ticket_id == s.ticket_id) & (Timer.status == PENDING) & (Timer.state == s.state)
    & (Timer.state_version != s.state_version)))


def _write_fields(ticket: Ticket, **where: object) -> int:
    """Write only the fields this change set (and the version): a field another writer keeps (the
    SLA watcher's priority) is not overwritten with the value read at the start."""
    values = {name: ticket.__data__.get(name) for name in ticket._dirty if name != "id"}
    values["version"] = ticket.version
    written = update_where(Ticket, values, **where)
    ticket._dirty.clear()
    return written


def _record(change: Change, row: Transition, state_changed: bool, from_state: str | None) -> Outcome:
    """Audit row, outbox event(s) and the dispatch to the next stage, in the change's transaction."""
    t = change.ticket
    qc = change.qc or {}
    event = insert_later(TicketEvent,
        ticket=t.id, version=t.version, from_state=from_state, to_state=change.to_state,
        actor=change.actor.label, action=change.action, params=_public_params(change.params) or None,
        qc_verdict=qc.get("verdict"), qc_reason=qc.get("reason_code"), qc_about=qc.get("about"),
        data=change.data or None, cause=change.cause, at=change.now)
    if state_changed or row.announce:
        insert_later(OutboxEvent, ticket_id=t.id, routing_key=f"ticket.{change.to_state}",
                   body=ticket_event_body(t, event), created_at=change.now)
    for kind, money in change.extra_events:
        body = ledger_body(kind=kind, ticket_id=t.id, source=t.source, external_ref=t.external_ref,
                           merchant_id=t.merchant_id, user_id=t.user_id, currency=t.currency, at=change.now,
                           **money)
        insert_later(OutboxEvent, ticket_id=t.id, routing_key=ledger_routing_key(kind), body=body,
                     created_at=change.now)
    dispatches: list[int] = []
    stage = STATES[State(change.to_state)].stage
    if state_changed and stage is not None and change.policy.routing.mode == "push":
        # Only the push router acts on an arrival (it offers the ticket to an agent). Under pull
        # routing agents claim from the table, so an arrival would be a message, a row and a
        # transaction that change nothing: the audit row already records that the ticket arrived.
        dispatches.append(new_dispatch(stage, Arrival(t.id, t.version)))
    dispatches += notify_parties(change, event)  # buyer and merchant hear of what concerns them (notify queue)
    return Outcome(t, event, dispatches)


def ticket_event_body(t: Ticket, e: TicketEvent) -> dict:
    """The ``op.events`` body of SPEC §5 for one audit row."""
    body = event_body(ticket_id=t.id, source=t.source, external_ref=t.external_ref, from_state=e.from_state,
                      to_state=e.to_state, actor=e.actor, action=e.action, at=e.at, data=e.data or {}, check=False)
    body["version"] = e.version  # lets consumers order and de-duplicate per ticket
    return body


#: Params that can hold personal data or bulky payloads and stay out of the audit row's params.
_PRIVATE = ("contact", "description", "evidence", "items", "voucher")


def _public_params(params: dict) -> dict:
    return {k: v for k, v in params.items() if k not in _PRIVATE and not isinstance(v, (dict, list))
            or k == "items" and all(isinstance(i, str) for i in v)}


def check_allowed(ticket: Ticket, action: str, actor: Actor, policy: "Policy", params: dict | None = None) -> None:
    """Raise `NotAllowed` (with the refusing guards' words) unless some row lets `actor` take
    `action` on `ticket` now; guards are evaluated, nothing is written or locked."""
    match(Change(ticket, action, actor, params or {}, policy, utcnow(), deciding=False))


def is_allowed(ticket: Ticket, action: str, actor: Actor, policy: "Policy", params: dict | None = None) -> bool:
    """Whether some row lets `actor` take `action` on `ticket` now (guards evaluated, nothing written)."""
    try:
        check_allowed(ticket, action, actor, policy, params)
    except NotAllowed:
        return False
    return True


#: `NotAllowed`, `UnknownTicket` and `VersionConflict` live in `models.errors` and are importable from here.
__all__ = ["NotAllowed", "Outcome", "SAME", "UnknownTicket", "VersionConflict", "apply", "check_allowed",
           "is_allowed", "open_ticket", "ticket_event_body"]
