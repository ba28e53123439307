"""Firing due timers: each due timer becomes one ``wake`` dispatch to its state's queue.

A timer is marked fired and its dispatch written in one transaction, guarded
by ``status = 'pending'``, so two schedulers never both fire it; on
PostgreSQL ``FOR UPDATE SKIP LOCKED`` also keeps them from waiting on each
other, and a whole batch is fired in three statements (lock, mark, write the
dispatches), so a burst of due timers costs per batch, not per timer. The stage worker applies the deadline only if the ticket is still in
the state the timer was set in.
"""
from __future__ import annotations

from datetime import datetime

import peewee

from models.base import database, utcnow
from models.dispatches import WakeUp
from models.outbox import Dispatch, DispatchRef, new_dispatch
from models.timer import FIRED, PENDING, Timer


def fire_due_timers(now: datetime, batch: int = 1000) -> list[int]:
    """Fire up to `batch` timers due by `now`; returns the dispatch ids to send after commit."""
    with database.atomic():
        if isinstance(database.obj, peewee.PostgresqlDatabase):
            return _fire_in_bulk(now, batch)
        dispatches: list[int] = []
        query = (Timer.select().where((Timer.status == PENDING) & (Timer.due_at <= now))
                 .order_by(Timer.due_at).limit(batch))
        for timer in query:
            fired = (Timer.update(status=FIRED, fired_at=now)
                     .where((Timer.id == timer.id) & (Timer.status == PENDING)).execute())
            if fired:
                dispatches.append(new_dispatch(timer.queue, WakeUp(timer.id), timer.ticket_id))
        return dispatches


def _fire_in_bulk(now: datetime, batch: int) -> list[int]:
    """PostgreSQL: three statements per batch, however large — lock the due rows (skipping those
    another scheduler holds), mark them fired, write their dispatches — instead of two per timer."""
    due = (Timer.select(Timer.id).where((Timer.status == PENDING) & (Timer.due_at <= now))
           .order_by(Timer.due_at).limit(batch).for_update("FOR UPDATE SKIP LOCKED"))
    fired = list(Timer.update(status=FIRED, fired_at=now)
                 .where(Timer.id.in_(due) & (Timer.status == PENDING))
                 .returning(Timer.id, Timer.queue, Timer.ticket_id, Timer.due_at).tuples().execute())
    if not fired:
        return []
    fired.sort(key=lambda row: (row[3], row[0]))  # dispatches in due order, like the timers
    created = utcnow()
    # Written as sent once, like `new_dispatch`: the scheduler sends them right after the commit.
    rows = [{"queue": queue, "kind": WakeUp.kind, "ticket_id": ticket_id, "payload": WakeUp(timer_id).to_json(),
             "created_at": created, "sent_at": created, "attempts": 1} for timer_id, queue, ticket_id, _ in fired]
    written = (Dispatch.insert_many(rows).returning(Dispatch.id, Dispatch.queue, Dispatch.ticket_id, Dispatch.payload)
               .tuples().execute())
    return sorted(DispatchRef(dispatch_id, queue, WakeUp.kind, ticket_id, _json(payload))
                  for dispatch_id, queue, ticket_id, payload in written)


def _json(payload: object) -> object:
    return Dispatch.payload.python_value(payload) if isinstance(payload, str) else payload


def schedule_timer(ticket_id: int, action: str, state: str, state_version: int, queue: str,
                   due_at: datetime) -> Timer:
    """A timer outside the transition table's effects (tests, operators)."""
    return Timer.create(ticket_id=ticket_id, action=action, state=state, state_version=state_version,
                        queue=queue, due_at=due_at)
