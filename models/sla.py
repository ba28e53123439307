"""Service-level promises on the working-day calendar: pinned, paused, warned, breached.

When a ticket reaches the floor its three promises (accept, first feedback,
resolve — SPEC §1) are computed from the policy in force and pinned to it.
While it waits on a party (a hidden state) the clock stops: the stopped time
is recorded and every open promise moves back by it. The watcher
(`scheduler.sla`) logs each warning level and the breach once; milestones
met are logged as hits. Every one of these is an `SlaEvent` row and an
``sla.*`` message on ``op.events``.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import peewee

from models.base import BaseModel, UtcDateTimeField, utcnow
from models.change import Change
from models.outbox import OutboxEvent
from models.prepared import Prepared
from models.states import STATES, State
from models.ticket import Ticket

PROMISES = ("accept", "first_feedback", "resolve")
#: SLA events that downstream (supervisors' alerting, governance) hears of on ``op.events``;
#: hits and late milestones stay in the `SlaEvent` log.
PUBLISHED = {"warning": "sla.warning", "breach": "sla.breached"}
#: Agent actions that are the buyer's first feedback (a stage-1 decision, not the takeover itself).
FEEDBACK_ACTIONS = ("request_evidence", "to_judgment")


class SlaEvent(BaseModel):
    ticket_id = peewee.IntegerField(index=True)
    promise = peewee.CharField(max_length=16)
    #: ``hit`` (met in time), ``late`` (met after its due time), ``warning`` or ``breach``.
    kind = peewee.CharField(max_length=16)
    #: The percentage of the budget used, for warnings.
    level = peewee.IntegerField(null=True)
    due_at = UtcDateTimeField()
    at = UtcDateTimeField(default=utcnow)

    class Meta:
        indexes = ((("ticket_id", "promise", "kind", "level"), True),)


def due_of(ticket: Ticket, promise: str) -> datetime | None:
    return {"accept": ticket.sla_accept_due, "first_feedback": ticket.sla_feedback_due,
            "resolve": ticket.sla_resolve_due}[promise]


def pin(c: Change) -> None:
    """At the floor: compute the promises from the policy in force now and keep them."""
    t, sla, calendar = c.ticket, c.policy.sla, c.policy.calendar
    t.sla_accept_due = sla.accept.after(c.now, calendar)
    t.sla_feedback_due = sla.first_feedback.after(c.now, calendar)
    t.sla_resolve_due = sla.resolve_within(t.complexity).after(c.now, calendar)
    c.data.update(sla_accept_due=t.sla_accept_due.isoformat(), sla_resolve_due=t.sla_resolve_due.isoformat())


def on_change(c: Change, from_state: str | None) -> None:
    """Pause or resume the clock, log milestones, and keep `sla_due_at` / `sla_check_at` current."""
    t = c.ticket
    if t.floor_at is None or t.sla_accept_due is None:
        return
    to = STATES[State(c.to_state)]
    promises = open_promises(t)  # read once per change; the milestones below keep it current
    if to.terminal:
        _milestone(c, "resolve", promises)
        t.sla_due_at = t.sla_check_at = None
        t.sla_paused_since = None
        return
    if not to.visible and t.sla_paused_since is None:
        t.sla_paused_since = c.now
    elif to.visible and t.sla_paused_since is not None:
        _resume(t, c.now)
    if c.action == "take_over":
        _milestone(c, "accept", promises)
    if c.action in FEEDBACK_ACTIONS and c.actor.agent_id is not None:
        _milestone(c, "first_feedback", promises)
    refresh(t, c.policy.sla.warn_at, c.now, promises)


def _resume(t: Ticket, now: datetime) -> None:
    stopped = (now - t.sla_paused_since).total_seconds()
    t.sla_paused_seconds = (t.sla_paused_seconds or 0) + stopped
    shift = timedelta(seconds=stopped)
    t.sla_accept_due = t.sla_accept_due + shift if t.sla_accept_due else None
    t.sla_feedback_due = t.sla_feedback_due + shift if t.sla_feedback_due else None
    t.sla_resolve_due = t.sla_resolve_due + shift if t.sla_resolve_due else None
    t.sla_paused_since = None


def open_promises(t: Ticket) -> list[str]:
    """The promises not kept yet: from the ticket, or from the SLA log for a ticket from before
    schema version 3 (`Ticket.sla_met` NULL)."""
    if t.sla_met is None:
        met = {e.promise for e in _MET.rows(SlaEvent, ticket=t.id)}
    else:
        met = set(t.sla_met.split(",")) - {""}
    return [p for p in PROMISES if p not in met]


#: Read on every change of a floor ticket: compiled once (models.prepared).
_MET = Prepared(lambda s: SlaEvent.select(SlaEvent.promise).where(
    (SlaEvent.ticket_id == s.ticket) & SlaEvent.kind.in_(("hit", "late"))))


def refresh(t: Ticket, warn_at: tuple[int, ...], now: datetime, promises: list[str] | None = None) -> None:
    """The next promise due (for ordering work lists) and when the watcher must look again.
    `promises`: the open ones, when the caller has just read them."""
    if t.sla_paused_since is not None or STATES[State(t.state)].terminal:
        t.sla_check_at = None
        return
    promises = open_promises(t) if promises is None else promises
    dues = [d for d in (due_of(t, p) for p in promises) if d is not None]
    t.sla_due_at = min(dues) if dues else None
    checks = [at for p in promises for at in _check_points(t, p, warn_at) if at > now - timedelta(seconds=1)]
    t.sla_check_at = min(checks) if checks else None


def _check_points(t: Ticket, promise: str, warn_at: tuple[int, ...]) -> list[datetime]:
    due, start = due_of(t, promise), t.floor_at
    if due is None or start is None:
        return []
    budget = (due - start) - timedelta(seconds=t.sla_paused_seconds or 0)
    active_start = due - budget
    return [active_start + budget * (level / 100) for level in warn_at] + [due]


def watch(t: Ticket, warn_at: tuple[int, ...], now: datetime) -> list[tuple[str, str, int | None]]:
    """Log the warnings and breaches due by `now` (each once); returns what was logged."""
    logged: list[tuple[str, str, int | None]] = []
    if t.sla_paused_since is not None:
        return logged
    for promise in open_promises(t):
        due = due_of(t, promise)
        if due is None:
            continue
        points = _check_points(t, promise, warn_at)
        for level, at in zip(warn_at, points):
            if at <= now < due and _log(t, promise, "warning", level, due, now):
                logged.append((promise, "warning", level))
        if now >= due and _log(t, promise, "breach", None, due, now):
            t.priority = (t.priority or 0) + 1
            logged.append((promise, "breach", None))
    refresh(t, warn_at, now)
    return logged


def _milestone(c: Change, promise: str, promises: list[str]) -> None:
    """The promise was kept (``hit``) or kept late, once: `promises` (the open ones) says it is not yet."""
    t = c.ticket
    due = due_of(t, promise)
    if due is None or promise not in promises:
        return
    _log(t, promise, "hit" if c.now <= due else "late", None, due, c.now, known_new=True)
    promises.remove(promise)
    t.sla_met = ",".join(p for p in PROMISES if p not in promises)  # written with the change


def _log(t: Ticket, promise: str, kind: str, level: int | None, due: datetime, now: datetime, *,
         known_new: bool = False) -> bool:
    """One SLA event, once: a row (unique) and its ``sla.<kind>`` message on ``op.events``.
    `known_new`: the caller knows no such row exists (a milestone of a promise still open)."""
    if not known_new and SlaEvent.select().where(
            (SlaEvent.ticket_id == t.id) & (SlaEvent.promise == promise) & (SlaEvent.kind == kind)
            & (SlaEvent.level == level if level is not None else SlaEvent.level.is_null())).exists():
        return False
    SlaEvent.create(ticket_id=t.id, promise=promise, kind=kind, level=level, due_at=due, at=now)
    if kind not in PUBLISHED:
        return True
    OutboxEvent.create(ticket_id=t.id, created_at=now, body={
        "event_id": str(uuid.uuid4()), "ticket_id": t.id, "source": t.source, "external_ref": t.external_ref,
        "promise": promise, "kind": kind, "level": level, "due_at": due.isoformat(), "at": now.isoformat(),
        "state": t.state, "priority": t.priority, "paused_seconds": t.sla_paused_seconds or 0},
        routing_key=PUBLISHED[kind])
    return True
