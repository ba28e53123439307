"""The scheduler process: fire timers, relay the outbox, reconcile — on a short beat.

Several schedulers may run at once: timers are fired under row guards (and
SKIP LOCKED on PostgreSQL); the relay and the reconciler run only in the
holder of the ``relay`` lease.
"""
from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

from kombu import Producer

from disputes.settings import MAX_DISPATCH_ATTEMPTS
from disputes.wiring import App
from models.base import DATABASE_UNAVAILABLE, database
from models.outage import Outage
from scheduler.singleton import acquire_lease, release_lease
from scheduler.reconciler import redrive_stale_dispatches, redrive_stale_notifications, settle_held_follow_ups
from scheduler.relay import relay_events, send_unsent_dispatches
from scheduler.claim_leases import expire_leases
from scheduler.sla import watch_slas
from scheduler.timers import fire_due_timers
from models.sending import send_dispatches

log = logging.getLogger("disputes.scheduler")

#: How long the relay lease lasts without renewal (a dead scheduler's lease passes on after this).
LEASE_SECONDS = 10.0
#: How often the waits measured in seconds or minutes are looked at (SLA watch, claim leases,
#: unsent and stale dispatches) and the relay lease renewed.
HOUSEKEEPING_EVERY = 1.0
#: The pause after a beat that found work (the next one batches what arrived meanwhile).
BUSY_GAP = 0.02


@dataclass
class Scheduler:
    app: App
    interval: float = 0.2
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")
    _producer: Producer | None = None
    _lease_until: datetime | None = None
    _connection: object | None = None
    #: A beat fails every second while the database or the events transport is away: said once each.
    _database_outage: Outage = field(default_factory=lambda: Outage("database", log))
    _events_outage: Outage = field(default_factory=lambda: Outage("events transport (OP_INTAKE_URL)", log))

    def tick(self, housekeeping: bool = True) -> dict[str, int]:
        """One beat; returns what it did (for logs and tests). Timers and the relay run on every
        beat; `housekeeping` (SLA watch, claim leases, unsent and stale dispatches) when asked —
        `run` asks once per `HOUSEKEEPING_EVERY`, since none of those waits is measured in beats."""
        now = self.app.clock()
        database.connect(reuse_if_open=True)
        try:
            fired = fire_due_timers(now)
            send_dispatches(self.app.broker, fired)
            done = {"timers_fired": len(fired), "events": 0, "unsent": 0, "redriven": 0, "sla": 0, "released": 0,
                    "held": 0}
            if self._holds_relay_lease(now, renew=housekeeping):
                if housekeeping:
                    done["sla"] = watch_slas(self.app.policy, now)
                    released = expire_leases(self.app.policy, now)
                    send_dispatches(self.app.broker, [d for o in released for d in o.dispatches])
                    done["released"] = len(released)
                done["events"] = relay_events(self._events_producer(), now)
                self._events_outage.answered()
                if housekeeping:
                    done["unsent"] = send_unsent_dispatches(self.app.broker, now, self.app.settings.unsent_grace)
                    done["redriven"] = redrive_stale_dispatches(self.app.broker, now,
                                                                self.app.settings.redrive_after, MAX_DISPATCH_ATTEMPTS)
                    done["redriven"] += redrive_stale_notifications(
                        self.app.broker, now, self.app.settings.redrive_after,
                        self.app.policy.notifications.max_attempts)
                    done["held"] = settle_held_follow_ups(self.app.broker, self.app.policy, now)
            return done
        finally:
            if not database.in_transaction():
                database.close()

    def _holds_relay_lease(self, now: datetime, renew: bool) -> bool:
        """Whether this scheduler holds the relay lease. It is taken or renewed in the database on
        housekeeping beats only (well within `LEASE_SECONDS`); between them the lease this scheduler
        renewed at `_lease_until` is known to be its own, which spares a transaction per beat."""
        if not renew and self._lease_until is not None and now < self._lease_until:
            return True
        if acquire_lease("relay", self.name, LEASE_SECONDS, now):
            # Trusted for half its length: a clock step or a slow beat cannot outlive it.
            self._lease_until = now + timedelta(seconds=LEASE_SECONDS / 2)
            return True
        self._lease_until = None
        return False

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Beat until `should_stop` says so; a failing beat is logged and retried, never fatal.

        A beat that found work is followed by another after `BUSY_GAP`, not at once: under load
        the relay then moves what a few milliseconds gathered in one batch, instead of spinning
        through every query of a beat for an event or two."""
        log.info("scheduler %s started", self.name)
        housekept = float("-inf")
        try:
            while not should_stop():
                housekeeping = time.monotonic() - housekept >= HOUSEKEEPING_EVERY
                try:
                    done = self.tick(housekeeping)
                except Exception as error:  # noqa: BLE001 - logged by _beat_failed, and the beat retried
                    self._beat_failed(error)
                    self._reset_producer()
                    self._lease_until = None
                    time.sleep(1.0)
                    continue
                self._database_outage.answered()
                if housekeeping:
                    housekept = time.monotonic()
                time.sleep(BUSY_GAP if any(done.values()) else self.interval)
        finally:
            try:
                release_lease("relay", self.name)
            except Exception:
                log.warning("could not release the relay lease", exc_info=True)
            self._reset_producer()
        log.info("scheduler %s stopped", self.name)

    def _beat_failed(self, error: Exception) -> None:
        """An unreachable database or events transport is an outage, logged once; anything else is
        logged each time, with its traceback (a fault of ours)."""
        if isinstance(error, DATABASE_UNAVAILABLE):
            self._database_outage.failed(error)
        elif isinstance(error, (OSError, *self._transport_errors())):
            self._events_outage.failed(error)
        else:
            log.error("scheduler beat failed; retrying", exc_info=error)

    def _transport_errors(self) -> tuple[type[BaseException], ...]:
        """What the events transport's client raises for a lost or refused connection (kombu's list)."""
        return tuple(getattr(self._connection, "connection_errors", ()))

    def _events_producer(self) -> Producer:
        if self._producer is None:
            self._connection = self.app.kombu_connection()
            self._producer = Producer(self._connection.channel())  # type: ignore[union-attr]
        return self._producer

    def _reset_producer(self) -> None:
        if self._connection is not None:
            try:
                self._connection.release()  # type: ignore[union-attr]
            except Exception:
                pass
        self._producer = self._connection = None
