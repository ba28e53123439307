"""Named leases in the database, so one of several schedulers runs a singleton job.

A guarded UPDATE takes an expired lease (or renews our own); the same SQL
works on SQLite and PostgreSQL, and a scheduler that dies simply lets its
lease expire.
"""
from __future__ import annotations

from datetime import datetime, timedelta

import peewee

from models.base import database
from models.outbox import Lease


def acquire_lease(name: str, holder: str, ttl: float, now: datetime) -> bool:
    """Take or renew the lease `name` for `ttl` seconds; False when another holder has it."""
    expires = now + timedelta(seconds=ttl)
    with database.atomic():
        taken = (Lease.update(holder=holder, expires_at=expires)
                 .where((Lease.name == name) & ((Lease.holder == holder) | (Lease.expires_at < now))).execute())
        if taken:
            return True
        try:
            with database.atomic():
                Lease.create(name=name, holder=holder, expires_at=expires)
            return True
        except peewee.IntegrityError:
            return False


def release_lease(name: str, holder: str) -> None:
    with database.atomic():
        Lease.delete().where((Lease.name == name) & (Lease.holder == holder)).execute()
