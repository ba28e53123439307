"""A stage's workers stopped for a while lose no decision: a dispatch nobody has run stays pending
(never declared dead for waiting), is not copied over and over into a queue that still holds it, and
is applied once — by the first worker that comes back. Only a dispatch whose handler ran and failed
`MAX_DISPATCH_ATTEMPTS` times ends dead, and says why."""
from __future__ import annotations

import math
from datetime import timedelta
from typing import Callable, Iterator

import dramatiq
import pytest

import models.outbox
import models.sending
import scheduler.reconciler as reconciler
from disputes.settings import MAX_DISPATCH_ATTEMPTS
from disputes.wiring import App
from models.audit import TicketEvent
from models.base import utcnow
from models.change import Actor
from models.dispatches import AgentDecision
from models.outbox import Dispatch, failed_tries, failing_outcome, new_dispatch
from models.sending import send_dispatches
from models.ticket import Ticket
from models.views.floor import DeadDispatches, undone_dispatches
from models.workflow import apply
from scheduler.loop import Scheduler
from scheduler.reconciler import redrive_stale_dispatches
from tests.conftest import Clock, drain_app, fund_merchant
from workers.base import StageWorker, record_failed_try

STAGE1_AGENT = 11
REQUEST_BOTH = {"dispute_status": "not_reconciled", "category": "apparel", "from": "both",
                "items": ["photo", "chat_log"]}
#: The outage: well past the ~5 minutes (10 sends, 30 s apart) after which a waiting decision was lost.
OUTAGE_SECONDS = 20 * 60
#: One reconciler pass (a scheduler housekeeping beat) every this many seconds of the outage.
PASS_EVERY = 5


@pytest.fixture(autouse=True)
def one_clock(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dispatches are written and sent on the clock the scheduler reads, which these tests move (in
    production both are the wall clock)."""
    monkeypatch.setattr(models.outbox, "utcnow", clock)
    monkeypatch.setattr(models.sending, "utcnow", clock)


def on_the_floor(app: App, publish: Callable, complaint: Callable) -> int:
    """A ticket in ``stage1``, taken over by the stage-1 agent — with no worker running anywhere."""
    fund_merchant("m1")
    ticket_id = publish("complaint.submitted", complaint(negotiation="failed")).ticket_id
    outcome = apply(ticket_id, "take_over", Actor.agent(1, STAGE1_AGENT), {}, app.policy)
    send_dispatches(app.broker, outcome.dispatches)
    assert Ticket.get_by_id(ticket_id).state == "stage1"
    return ticket_id


def decide(app: App, ticket_id: int) -> int:
    """The agent asks both parties for evidence: written and sent as the desk does."""
    decision = AgentDecision(ticket_id, STAGE1_AGENT, "request_evidence", Ticket.get_by_id(ticket_id).version,
                             REQUEST_BOTH, None)
    row = new_dispatch("stage1", decision)
    send_dispatches(app.broker, [row])
    return row.id


def outage(app: App, clock: Clock, dispatch_id: int, seconds: float = OUTAGE_SECONDS,
           every: float = PASS_EVERY) -> int:
    """Time passes with nobody consuming: the scheduler beats (reconciler included) every `every`
    seconds of it. Returns how many times the dispatch was sent again meanwhile."""
    scheduler, sent_before = Scheduler(app), Dispatch.get_by_id(dispatch_id).attempts
    for _ in range(int(seconds / every)):
        clock.advance(every)
        scheduler.tick()
    return Dispatch.get_by_id(dispatch_id).attempts - sent_before


@pytest.fixture
def workers_back(app: App) -> Iterator[Callable[[], None]]:
    """``workers_back()``: the stage's workers start again and work off what waits for them."""
    started: list[dramatiq.Worker] = []

    def _start() -> None:
        worker = dramatiq.Worker(app.broker, worker_threads=2, worker_timeout=50)
        worker.start()
        started.append(worker)
        drain_app(app, worker)
    yield _start
    for worker in started:
        worker.stop()


def audit_rows(ticket_id: int, action: str) -> int:
    return TicketEvent.select().where((TicketEvent.ticket == ticket_id) & (TicketEvent.action == action)).count()


def test_a_decision_made_while_its_stages_workers_are_stopped_is_applied_when_they_come_back(
        app, publish, complaint, clock, workers_back) -> None:
    # Given a stage-1 decision sent while stage 1's workers are stopped
    ticket_id = on_the_floor(app, publish, complaint)
    waiting_before = app.broker.queues["stage1"].qsize()
    dispatch_id = decide(app, ticket_id)
    # When they stay stopped for 20 minutes, the reconciler looking every 5 s
    redriven = outage(app, clock, dispatch_id)
    # Then the decision is still pending, never declared dead for having waited
    row = Dispatch.get_by_id(dispatch_id)
    assert (row.done_at, row.outcome) == (None, None)
    # And the queue, which still held it, got no copy of it
    assert redriven == 0
    assert app.broker.queues["stage1"].qsize() - waiting_before == 1
    # When the workers come back
    workers_back()
    # Then the decision is applied, once
    ticket = Ticket.get_by_id(ticket_id)
    assert (ticket.state, ticket.evidence_rounds) == ("awaiting_evidence", 1)
    assert audit_rows(ticket_id, "request_evidence") == 1
    assert Dispatch.get_by_id(dispatch_id).outcome == "applied"


def test_when_the_broker_cannot_say_what_it_holds_the_re_sends_back_off(
        app, publish, complaint, clock, workers_back, monkeypatch) -> None:
    # Given a broker whose queue lengths cannot be read, and a decision sent while its workers are stopped
    monkeypatch.setattr(reconciler, "queue_depths", lambda broker, queues: {q: None for q in queues})
    ticket_id = on_the_floor(app, publish, complaint)
    waiting_before = app.broker.queues["stage1"].qsize()
    dispatch_id = decide(app, ticket_id)
    # When the workers stay stopped for 20 minutes
    redriven = outage(app, clock, dispatch_id)
    # Then the reconciler re-sent it with a doubling wait (after 30 s, 60 s more, 120 s more...), not
    # every 30 s, and never declared it dead
    after = app.settings.redrive_after
    bound = math.ceil(math.log2(OUTAGE_SECONDS / after + 1))
    assert 1 <= redriven <= bound
    assert app.broker.queues["stage1"].qsize() - waiting_before == 1 + redriven
    assert Dispatch.get_by_id(dispatch_id).done_at is None
    # When the workers come back, they apply it once and find every other copy done
    workers_back()
    assert Ticket.get_by_id(ticket_id).state == "awaiting_evidence"
    assert audit_rows(ticket_id, "request_evidence") == 1
    assert Dispatch.get_by_id(dispatch_id).outcome == "applied"


def test_a_message_the_broker_lost_is_re_sent_even_while_the_workers_are_stopped(
        app, publish, complaint, clock, workers_back) -> None:
    # Given a decision whose message the broker lost (a Redis restart without persistence)
    ticket_id = on_the_floor(app, publish, complaint)
    dispatch_id = decide(app, ticket_id)
    app.broker.flush("stage1")
    # When the reconciler's time comes
    redriven = outage(app, clock, dispatch_id, seconds=app.settings.redrive_after + 2 * PASS_EVERY)
    # Then it is sent again, once: the queue holds it again
    assert redriven == 1 and app.broker.queues["stage1"].qsize() == 1
    # And later passes leave it there alone
    assert outage(app, clock, dispatch_id, seconds=10 * 60) == 0
    workers_back()
    assert Ticket.get_by_id(ticket_id).state == "awaiting_evidence"
    assert Dispatch.get_by_id(dispatch_id).outcome == "applied"


def poison(monkeypatch: pytest.MonkeyPatch, failures: int | None = None) -> list[int]:
    """Stage decisions raise (a bug, not a refusal) — every time, or the first `failures` times.
    Returns the list of the runs, appended to on each."""
    runs: list[int] = []
    applies = StageWorker.on_act

    def on_act(self: StageWorker, row: Dispatch):  # type: ignore[no-untyped-def]
        runs.append(row.id)
        if failures is None or len(runs) <= failures:
            raise RuntimeError("the handler is broken for phone 13812345678")
        return applies(self, row)
    monkeypatch.setattr(StageWorker, "on_act", on_act)
    return runs


def consume(app: App, clock: Clock, passes: int, every: float) -> None:
    """Workers running (each message tried once: the tests' brokers do not retry), the reconciler
    passing every `every` seconds."""
    worker = dramatiq.Worker(app.broker, worker_threads=1, worker_timeout=50)
    worker.start()
    scheduler = Scheduler(app)
    try:
        for _ in range(passes):
            app.broker.join("stage1", timeout=10_000, fail_fast=False)  # a failing message is the point
            worker.join()
            clock.advance(every)
            scheduler.tick()
        app.broker.join("stage1", timeout=10_000, fail_fast=False)
        worker.join()
    finally:
        worker.stop()


def test_a_decision_whose_handler_keeps_failing_ends_dead_after_max_attempts_real_tries(
        app, publish, complaint, clock, monkeypatch) -> None:
    # Given a decision whose handler fails every time it runs
    runs = poison(monkeypatch)
    ticket_id = on_the_floor(app, publish, complaint)
    dispatch_id = decide(app, ticket_id)
    # When a worker tries it once
    consume(app, clock, passes=0, every=0)
    # Then the failed try is on the dispatch, still pending (contact data masked)
    row = Dispatch.get_by_id(dispatch_id)
    assert row.done_at is None and runs == [dispatch_id]
    assert row.outcome.startswith("failing: 1 try failed, last: RuntimeError: the handler is broken")
    assert "13812345678" not in row.outcome
    # When the reconciler keeps re-sending it, hours on
    consume(app, clock, passes=60, every=600)
    # Then it was run exactly MAX_DISPATCH_ATTEMPTS times, and is dead, saying why
    row = Dispatch.get_by_id(dispatch_id)
    assert len(runs) == MAX_DISPATCH_ATTEMPTS
    assert row.done_at is not None
    assert row.outcome.startswith(f"dead: {MAX_DISPATCH_ATTEMPTS} tries failed, last: RuntimeError:")
    assert Ticket.get_by_id(ticket_id).state == "stage1"


def test_a_decision_whose_handler_failed_a_few_times_is_applied_once_when_it_works(
        app, publish, complaint, clock, monkeypatch) -> None:
    # Given a decision whose handler fails its first three tries (the database was away)
    runs = poison(monkeypatch, failures=3)
    ticket_id = on_the_floor(app, publish, complaint)
    dispatch_id = decide(app, ticket_id)
    # When the reconciler re-sends it until it works
    consume(app, clock, passes=30, every=600)
    # Then it is applied once, four tries in all, and nothing of the failures is left on it
    assert len(runs) == 4
    assert Ticket.get_by_id(ticket_id).evidence_rounds == 1  # (its evidence deadline has passed since)
    assert audit_rows(ticket_id, "request_evidence") == 1
    assert Dispatch.get_by_id(dispatch_id).outcome == "applied"


def test_failed_tries_waits_and_deaths_read_and_write_alike_on_sqlite_and_postgresql(db_app: App) -> None:
    # Given, on either database, a decision queued and waiting, one whose message was lost, and one
    # whose handler has failed (its tries counted the way a worker counts them)
    waiting = new_dispatch("stage2", AgentDecision(1, STAGE1_AGENT, "to_judgment", 1, {}, None))
    send_dispatches(db_app.broker, [waiting])
    lost = new_dispatch("stage2", AgentDecision(2, STAGE1_AGENT, "to_judgment", 1, {}, None))
    failing = new_dispatch("stage3", AgentDecision(3, STAGE1_AGENT, "judge", 1, {}, None))
    for _ in range(MAX_DISPATCH_ATTEMPTS):
        record_failed_try(failing.id, RuntimeError("broken"))
    assert failed_tries(Dispatch.get_by_id(failing.id).outcome) == MAX_DISPATCH_ATTEMPTS
    # When the reconciler runs a minute later
    later = utcnow() + timedelta(seconds=60)
    redriven = redrive_stale_dispatches(db_app.broker, later, after=30, max_attempts=MAX_DISPATCH_ATTEMPTS)
    # Then stage 2, which holds one message for its two dispatches, gets one copy (of either: which
    # one is missing the broker cannot say), the failing one is dead, and neither of the others is
    assert redriven == 1 and db_app.broker.queues["stage2"].qsize() == 2
    assert Dispatch.get_by_id(lost.id).attempts + Dispatch.get_by_id(waiting.id).attempts == 3
    assert Dispatch.get_by_id(failing.id).outcome == failing_outcome(MAX_DISPATCH_ATTEMPTS, "RuntimeError: broken") \
        .replace("failing", "dead", 1)
    assert Dispatch.get_by_id(waiting.id).done_at is None
    # And the read side agrees
    assert DeadDispatches().read(later) == 1
    assert undone_dispatches() == {"stage2": 2}
