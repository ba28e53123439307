"""Re-driving waits that never ended: dispatches sent but never done.

Every message between our queues is a dispatch row that its handler marks
done in the transaction of its effect. One sent long ago and still not done
was lost (a worker killed mid-message, a broker that dropped it): send it
again — the handler's idempotency makes that safe. After too many attempts
the dispatch is marked dead, which `disputes ticket show` and ``/metrics`` show.

A notification is its own work item (no dispatch row): one still pending whose
last try (or creation) is older than the window is sent again; one with no try
left is marked failed, which `disputes ticket show` lists.

A follow-up the intake holds for its complaint (SPEC §4) is applied once the
complaint is admitted; one a crash left held after that is released here, and
one still unmatched after ``intake.early_message_ttl`` is rejected.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

import dramatiq

from models.admission import reject_expired_holds, release_landed_follow_ups
from models.base import database
from models.notification import give_up_stale, take_stale
from models.outbox import Dispatch
from models.sending import send_dispatches, send_rows
from policy import Policy

log = logging.getLogger("disputes.reconciler")


def redrive_stale_dispatches(broker: dramatiq.Broker, now: datetime, after: float, max_attempts: int,
                             batch: int = 500) -> int:
    stale = (Dispatch.done_at.is_null() & Dispatch.sent_at.is_null(False)
             & (Dispatch.sent_at < now - timedelta(seconds=after)))
    dead = list(Dispatch.select(Dispatch.id).where(stale & (Dispatch.attempts >= max_attempts)).limit(batch))
    if dead:
        with database.atomic():
            (Dispatch.update(done_at=now, outcome=f"dead: not done after {max_attempts} sends")
             .where(Dispatch.id.in_([d.id for d in dead])).execute())
        log.error("dispatches declared dead after %s sends: %s", max_attempts, [d.id for d in dead])
    rows = list(Dispatch.select().where(stale & (Dispatch.attempts < max_attempts)).order_by(Dispatch.id).limit(batch))
    if rows:
        log.warning("re-driving %s dispatches not done after %ss", len(rows), after)
    return send_rows(broker, rows)


def redrive_stale_notifications(broker: dramatiq.Broker, now: datetime, after: float, max_attempts: int,
                                batch: int = 500) -> int:
    """Re-send pending notifications whose message was lost, fail those out of tries; returns how
    many were re-sent. `after` must exceed the notify queue's longest backoff (each failed try
    restarts a notification's clock), so a retry waiting in dramatiq is not doubled."""
    failed = give_up_stale(now, after, max_attempts)
    if failed:
        log.error("notifications failed with no try left after %s tries: %s", max_attempts, failed[:50])
    refs = take_stale(now, after, max_attempts, batch)
    if refs:
        log.warning("re-sending %s notifications not delivered after %ss", sum(len(r.ids) for r in refs), after)
    sent = send_dispatches(broker, refs)  # one not sent waits out another window: its clock restarted
    return sum(len(ref.ids) for ref in refs[:sent])


def settle_held_follow_ups(broker: dramatiq.Broker, policy: Policy, now: datetime) -> int:
    """Release held follow-ups whose complaint landed, and reject those held past their time;
    returns how many left the hold."""
    landed, dispatches = release_landed_follow_ups(policy)
    if landed:
        log.warning("%s follow-ups still held after their complaint was admitted are applied now", landed)
    expired, sends = reject_expired_holds(policy, now)
    if expired:
        log.warning("%s follow-ups held past intake.early_message_ttl (%s) left the hold", expired,
                    policy.early_message_ttl)
    send_dispatches(broker, dispatches + sends)
    return landed + expired
