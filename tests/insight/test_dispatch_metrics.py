"""`/metrics` for work between the queues: how long the oldest dispatch of each queue has waited
(``disputes_dispatch_oldest_age_seconds{queue}``) and how many dispatches ended dead
(``disputes_dispatches_dead_total``) — a dispatch that only waited for its workers is never one."""
from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from desk.metrics import render_metrics
from disputes.settings import MAX_DISPATCH_ATTEMPTS, QUEUES
from disputes.wiring import App
from models.base import utcnow
from models.dispatches import Arrival
from models.notification import Notification
from models.outbox import Dispatch, failing_outcome, new_dispatch
from models.views.floor import DeadDispatches
from scheduler.reconciler import redrive_stale_dispatches

ARRIVAL = Arrival(ticket_id=1, version=1)


def scrape(app: App) -> dict:
    return {f.name: f for f in text_string_to_metric_families(render_metrics(app).decode("utf-8"))}


def sample(families: dict, name: str, **labels: str) -> float:
    for family in families.values():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise KeyError(f"{name} {labels}")


def dispatch(queue: str, *, age: float, sent: float | None = None, attempts: int = 1, outcome: str | None = None,
             done: float | None = None) -> int:
    """A dispatch written `age` seconds ago (sent `sent` seconds ago, done `done` seconds ago)."""
    row = new_dispatch(queue, ARRIVAL)
    now = utcnow()
    (Dispatch.update(created_at=now - timedelta(seconds=age),
                     sent_at=now - timedelta(seconds=age if sent is None else sent), attempts=attempts,
                     outcome=outcome, done_at=None if done is None else now - timedelta(seconds=done))
     .where(Dispatch.id == row.id).execute())
    return row.id


def test_the_oldest_undone_dispatch_of_each_queue_gives_its_age(app: App) -> None:
    # Given dispatches not done in stage 1 (2 and 5 minutes old) and stage 3 (an hour old, failing),
    # one done in stage 2 a day ago, and a notification not delivered for 15 minutes
    dispatch("stage1", age=120)
    dispatch("stage1", age=300)
    dispatch("stage3", age=3600, outcome=failing_outcome(2, "RuntimeError: broken"))
    dispatch("stage2", age=86400, done=86000, outcome="applied")
    Notification.create(ticket_id=1, template="ticket_opened", recipient="user", recipient_id="u1", channel="log",
                        language="en", subject="s", body="b", created_at=utcnow() - timedelta(seconds=900))
    # When /metrics is scraped
    families = scrape(app)
    # Then each queue's oldest undone work gives its age, 0 where nothing waits
    assert families["disputes_dispatch_oldest_age_seconds"].type == "gauge"
    ages = {q: sample(families, "disputes_dispatch_oldest_age_seconds", queue=q) for q in QUEUES}
    assert ages["stage1"] == pytest.approx(300, abs=5)
    assert ages["stage3"] == pytest.approx(3600, abs=5)
    assert ages["notify"] == pytest.approx(900, abs=5)
    assert ages["stage2"] == ages["stage4"] == ages["negotiation"] == 0
    # And next to it the backlog counts the same work
    assert sample(families, "disputes_dispatch_backlog_by_queue", queue="stage1") == 2
    assert sample(families, "disputes_dispatch_backlog_by_queue", queue="notify") == 1


def test_dispatches_declared_dead_are_counted_and_waiting_ones_never_are(app: App, clock) -> None:
    # Given a dispatch that waited an hour for its workers (sent 10 times by an older reconciler),
    # one dead since yesterday, and one whose handler has failed its last allowed try
    waiting = dispatch("stage2", age=3600, sent=1800, attempts=10)
    dispatch("stage2", age=86400, done=86000, outcome="dead: not done after 10 sends")
    failing = dispatch("stage3", age=120, sent=60,
                       outcome=failing_outcome(MAX_DISPATCH_ATTEMPTS, "RuntimeError: broken"))
    # Then the first scrape counts the one dead so far
    families = scrape(app)
    assert families["disputes_dispatches_dead"].type == "counter"
    assert sample(families, "disputes_dispatches_dead_total") == 1
    # When the reconciler runs
    redrive_stale_dispatches(app.broker, clock(), after=30, max_attempts=MAX_DISPATCH_ATTEMPTS)
    # Then the failing one is dead, the waiting one is not, and the next scrape counts it
    assert Dispatch.get_by_id(failing).outcome.startswith(f"dead: {MAX_DISPATCH_ATTEMPTS} tries failed")
    assert Dispatch.get_by_id(waiting).done_at is None
    assert sample(scrape(app), "disputes_dispatches_dead_total") == 2
    # And once it has settled, it is counted once: by this process, and by one starting afresh
    clock.advance(600)
    assert sample(scrape(app), "disputes_dispatches_dead_total") == 2
    assert sample(scrape(app), "disputes_dispatches_dead_total") == 2
    assert DeadDispatches().read(clock()) == 2


def test_a_large_dispatch_table_is_counted_in_the_background_first(app: App, clock) -> None:
    dispatch("stage2", age=86400, done=86000, outcome="dead: 10 tries failed, last: RuntimeError: broken")
    dispatch("stage2", age=60, done=30, outcome="applied")
    dead = DeadDispatches(sync_rows=1)
    # The first read starts the count off the scrape's thread and says nothing meanwhile
    assert dead.read(clock()) is None
    dead.warming.join(timeout=10)  # type: ignore[union-attr]
    assert dead.read(clock()) == 1
    dispatch("stage4", age=60, done=1, outcome="dead: 10 tries failed, last: RuntimeError: broken")
    assert dead.read(clock()) == 2
