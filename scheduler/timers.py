"""Firing due timers: each due timer becomes one ``wake`` dispatch to its state's queue.

A timer is marked fired and its dispatch written in one transaction, guarded
by ``status = 'pending'``, so two schedulers never both fire it; on
PostgreSQL ``FOR UPDATE SKIP LOCKED`` also keeps them from waiting on each
other. The stage worker applies the deadline only if the ticket is still in
the state the timer was set in.
"""
from __future__ import annotations

from datetime import datetime

import peewee

from models.base import database
from models.outbox import new_dispatch
from models.timer import FIRED, PENDING, Timer


def fire_due_timers(now: datetime, batch: int = 500) -> list[int]:
    """Fire up to `batch` timers due by `now`; returns the dispatch ids to send after commit."""
    dispatches: list[int] = []
    with database.atomic():
        query = (Timer.select().where((Timer.status == PENDING) & (Timer.due_at <= now))
                 .order_by(Timer.due_at).limit(batch))
        if isinstance(database.obj, peewee.PostgresqlDatabase):
            query = query.for_update("FOR UPDATE SKIP LOCKED")
        for timer in query:
            fired = (Timer.update(status=FIRED, fired_at=now)
                     .where((Timer.id == timer.id) & (Timer.status == PENDING)).execute())
            if fired:
                dispatches.append(new_dispatch(timer.queue, "wake", timer.ticket_id, {"timer_id": timer.id}).id)
    return dispatches


def schedule_timer(ticket_id: int, action: str, state: str, state_version: int, queue: str,
                   due_at: datetime) -> Timer:
    """A timer outside the transition table's effects (tests, operators)."""
    return Timer.create(ticket_id=ticket_id, action=action, state=state, state_version=state_version,
                        queue=queue, due_at=due_at)
