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
from typing import Callable

from kombu import Producer

from disputes.settings import MAX_DISPATCH_ATTEMPTS
from disputes.wiring import App
from models.base import database
from scheduler.singleton import acquire_lease, release_lease
from scheduler.reconciler import redrive_stale_dispatches
from scheduler.relay import relay_events, send_unsent_dispatches
from scheduler.claim_leases import expire_leases
from scheduler.sla import watch_slas
from scheduler.timers import fire_due_timers
from models.sending import send_dispatches

log = logging.getLogger("disputes.scheduler")

#: How long the relay lease lasts without renewal (a dead scheduler's lease passes on after this).
LEASE_SECONDS = 10.0


@dataclass
class Scheduler:
    app: App
    interval: float = 0.2
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")
    _producer: Producer | None = None
    _connection: object | None = None

    def tick(self) -> dict[str, int]:
        """One beat; returns what it did (for logs and tests)."""
        now = self.app.clock()
        database.connect(reuse_if_open=True)
        try:
            fired = fire_due_timers(now)
            send_dispatches(self.app.broker, fired)
            done = {"timers_fired": len(fired), "events": 0, "unsent": 0, "redriven": 0, "sla": 0, "released": 0}
            if acquire_lease("relay", self.name, LEASE_SECONDS, now):
                done["sla"] = watch_slas(self.app.policy, now)
                released = expire_leases(self.app.policy, now)
                send_dispatches(self.app.broker, [d for o in released for d in o.dispatches])
                done["released"] = len(released)
                done["events"] = relay_events(self._events_producer(), now)
                done["unsent"] = send_unsent_dispatches(self.app.broker, now, self.app.settings.unsent_grace)
                done["redriven"] = redrive_stale_dispatches(self.app.broker, now, self.app.settings.redrive_after,
                                                            MAX_DISPATCH_ATTEMPTS)
            return done
        finally:
            if not database.in_transaction():
                database.close()

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        """Beat until `should_stop` says so; a failing beat is logged and retried, never fatal."""
        log.info("scheduler %s started", self.name)
        try:
            while not should_stop():
                try:
                    done = self.tick()
                except Exception:
                    log.exception("scheduler beat failed; retrying")
                    self._reset_producer()
                    time.sleep(1.0)
                    continue
                if not any(done.values()):
                    time.sleep(self.interval)
        finally:
            try:
                release_lease("relay", self.name)
            except Exception:
                log.warning("could not release the relay lease", exc_info=True)
            self._reset_producer()

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
