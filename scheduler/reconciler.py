"""Re-driving waits that never ended: dispatches sent but never done.

Every message between our queues is a dispatch row that its handler marks
done in the transaction of its effect. One sent a while ago and still not done
is either still queued (its queue's workers are stopped, or behind) or lost (a
worker killed mid-message, a broker that dropped it, a message whose retries
ran out). The reconciler cannot tell which for one row; it sends it again —
the handler's idempotency makes a copy harmless — but only where a message is
missing, so that a queue nobody consumes does not fill with copies:

- A queue whose broker holds at least as many messages as the queue has
  dispatches sent and not done gets no copy: its workers are stopped or
  behind, and the messages are there for them. A queue holding fewer gets at
  most the difference, of its dispatches sent ``OP_REDRIVE_AFTER`` ago or more
  — those sent the fewest times first, then the longest-waiting.
- Where the broker cannot say what it holds, each dispatch's wait doubles
  with each send (``OP_REDRIVE_AFTER``, then twice that, … up to
  `MAX_REDRIVE_INTERVAL`), which bounds its copies.

A dispatch is never given up for waiting: however long its workers are away,
it is applied when they come back. Only one whose handler ran and failed — the
worker counts each such try on the row (`workers.base.record_failed_try`) — is
declared dead after ``max_attempts`` failed tries, saying what it raised;
`disputes ticket show`, the desk and ``/metrics`` (``disputes_dispatches_dead_total``)
show it.

A notification is its own work item (no dispatch row): one still pending whose
last try (or creation) is older than the window is sent again; one with no try
left is marked failed, which `disputes ticket show` lists.

A follow-up the intake holds for its complaint (SPEC §4) is applied once the
complaint is admitted; one a crash left held after that is released here, and
one still unmatched after ``intake.early_message_ttl`` is rejected.
"""
from __future__ import annotations

import logging
import operator
import time
import weakref
from datetime import datetime, timedelta
from functools import reduce

import dramatiq
import peewee

from disputes.probes import queue_depths
from models.admission import reject_expired_holds, release_landed_follow_ups
from models.notification import give_up_stale, take_stale
from models.outbox import FAILING, Dispatch, dead_outcome, failed_tries
from models.sending import send_dispatches, send_rows
from policy import Policy

log = logging.getLogger("disputes.reconciler")

#: Where the broker cannot say what a queue holds, the longest wait between two sends of a dispatch.
MAX_REDRIVE_INTERVAL = 1800.0
#: A queue found holding its dispatches is not asked again for this long, or ``OP_REDRIVE_AFTER`` if
#: shorter (a passive declare on RabbitMQ is a connection of its own): a message lost meanwhile is
#: re-sent that much later.
HELD_RECHECK_SECONDS = 10.0
#: How often, at most, the reconciler says that a queue is holding its dispatches.
HELD_WARNING_EVERY = 60.0


class _Held:
    """Per broker and queue: until when the queue is taken to hold its dispatches, and when that
    was last said in the log."""

    def __init__(self) -> None:
        self.until: dict[str, float] = {}
        self.warned: dict[str, float] = {}


_held: "weakref.WeakKeyDictionary[dramatiq.Broker, _Held]" = weakref.WeakKeyDictionary()


def redrive_stale_dispatches(broker: dramatiq.Broker, now: datetime, after: float, max_attempts: int,
                             batch: int = 500) -> int:
    """Declare dead the dispatches whose handler failed `max_attempts` tries, and send again, up
    to `batch`, those not done whose message is missing (see the module's docstring); returns how
    many were sent."""
    declare_dead(now, after, max_attempts, batch)
    stale = (Dispatch.done_at.is_null() & Dispatch.sent_at.is_null(False)
             & (Dispatch.sent_at < now - timedelta(seconds=after)))
    held = _held.setdefault(broker, _Held())
    clock = time.monotonic()
    waiting = {queue: n for queue, n in Dispatch.select(Dispatch.queue, peewee.fn.COUNT(Dispatch.id)).where(stale)
               .group_by(Dispatch.queue).tuples() if held.until.get(queue, 0.0) <= clock}
    if not waiting:
        return 0
    queues = sorted(waiting)
    depths = queue_depths(broker, queues)
    sent_not_done = dict(Dispatch.select(Dispatch.queue, peewee.fn.COUNT(Dispatch.id))
                         .where(Dispatch.done_at.is_null() & Dispatch.sent_at.is_null(False)
                                & Dispatch.queue.in_(queues))
                         .group_by(Dispatch.queue).tuples())
    rows: list[Dispatch] = []
    for queue in queues:
        depth, room = depths.get(queue), batch - len(rows)
        if depth is None:  # the broker cannot say: each dispatch waits longer after each send
            due = _backed_off(now, after)
        else:  # at most as many as are missing from the queue
            due, room = stale, min(room, sent_not_done.get(queue, 0) - depth)
            if room <= 0:
                held.until[queue] = clock + min(after, HELD_RECHECK_SECONDS)
                _say_held(held, queue, waiting[queue], depth, sent_not_done.get(queue, 0))
                continue
        if room > 0:
            rows += list(Dispatch.select().where(due & (Dispatch.queue == queue))
                         .order_by(Dispatch.attempts, Dispatch.sent_at, Dispatch.id).limit(room))
    sent = send_rows(broker, rows)
    if sent:  # what went out: while the broker is away nothing does, beat after beat (its outage is logged once)
        log.warning("re-sent %s dispatches not done %ss or more after their last send", sent, after)
    return sent


def declare_dead(now: datetime, after: float, max_attempts: int, batch: int = 500) -> list[int]:
    """Give up the dispatches whose handler ran and failed `max_attempts` times (the worker counts
    each failed try on the row) and whose last send is older than `after` (dramatiq's own retries
    of it are over); returns their ids. A dispatch that only waited is never one of them."""
    rows = (Dispatch.select(Dispatch.id, Dispatch.outcome)
            .where(Dispatch.done_at.is_null() & (Dispatch.sent_at < now - timedelta(seconds=after))
                   & Dispatch.outcome.startswith(FAILING + ":"))
            .order_by(Dispatch.id).limit(batch).tuples())
    dead = []
    for dispatch_id, outcome in rows:
        if failed_tries(outcome) >= max_attempts:
            done = (Dispatch.update(done_at=now, outcome=dead_outcome(outcome))
                    .where((Dispatch.id == dispatch_id) & Dispatch.done_at.is_null()
                           & (Dispatch.outcome == outcome)).execute())
            if done:
                dead.append(dispatch_id)
                log.error("dispatch %s declared dead: %s", dispatch_id, dead_outcome(outcome))
    return dead


def _backed_off(now: datetime, after: float) -> peewee.Expression:
    """Dispatches not done whose last send is older than their wait: `after` for the first send,
    doubling with each send up to `MAX_REDRIVE_INTERVAL` (the row's `attempts` counts its sends)."""
    cap = max(after, MAX_REDRIVE_INTERVAL)
    terms, sends, wait = [], 1, after
    while wait < cap:
        counted = Dispatch.attempts <= 1 if sends == 1 else Dispatch.attempts == sends
        terms.append(counted & (Dispatch.sent_at < now - timedelta(seconds=wait)))
        sends, wait = sends + 1, wait * 2
    terms.append((Dispatch.attempts >= sends) & (Dispatch.sent_at < now - timedelta(seconds=cap)))
    return Dispatch.done_at.is_null() & Dispatch.sent_at.is_null(False) & reduce(operator.or_, terms)


def _say_held(held: _Held, queue: str, stale: int, depth: int, sent_not_done: int) -> None:
    """A queue holding what was sent to it: its workers are stopped or behind (said once a minute)."""
    clock = time.monotonic()
    if clock - held.warned.get(queue, float("-inf")) < HELD_WARNING_EVERY:
        return
    held.warned[queue] = clock
    log.warning("queue %s holds %s messages for its %s dispatches not done (%s of them past OP_REDRIVE_AFTER): "
                "no copy sent — are its workers stopped or behind?", queue, depth, sent_not_done, stale)


def redrive_stale_notifications(broker: dramatiq.Broker, now: datetime, after: float, max_attempts: int,
                                batch: int = 500) -> int:
    """Re-send pending notifications whose message was lost, fail those out of tries; returns how
    many were re-sent. `after` must exceed the notify queue's longest backoff (each failed try
    restarts a notification's clock), so a retry waiting in dramatiq is not doubled."""
    failed = give_up_stale(now, after, max_attempts)
    if failed:
        log.error("notifications failed with no try left after %s tries: %s", max_attempts, failed[:50])
    refs = take_stale(now, after, max_attempts, batch)
    sent = send_dispatches(broker, refs)  # one not sent waits out another window: its clock restarted
    resent = sum(len(ref.ids) for ref in refs[:sent])
    if resent:  # what went out, as for dispatches
        log.warning("re-sent %s notifications not delivered after %ss", resent, after)
    return resent


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
