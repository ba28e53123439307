"""The scheduler: timers fire once, the outbox reaches ``op.events`` in order, lost dispatches are re-driven."""
from __future__ import annotations

import contextlib
import json
import logging
import threading
import uuid
from datetime import timedelta
from typing import Iterator

import pytest
from kombu import Connection, Producer, Queue

from disputes.settings import MAX_DISPATCH_ATTEMPTS
from disputes.wiring import App
from models.base import database, utcnow
from models.change import Actor, Role
from models.dispatches import Arrival, WakeUp
from models.outbox import Dispatch, OutboxEvent, failing_outcome, new_dispatch
from models.sending import send_dispatches
from models.ticket import Ticket
from models.timer import CANCELLED, FIRED, PENDING, Timer
from models.workflow import apply, open_ticket
from scheduler.singleton import acquire_lease, release_lease
from scheduler.loop import Scheduler
from scheduler.reconciler import redrive_stale_dispatches
from scheduler.relay import events_exchange, relay_events, send_unsent_dispatches
from scheduler.timers import fire_due_timers, schedule_timer

#: An arrival whose handling these relay tests never reach (only sending and re-driving are looked at).
ARRIVAL = Arrival(ticket_id=1, version=1)


def new_ticket(app: App, ref: str, negotiation: str = "failed") -> int:
    fields = dict(source="shop", external_ref=ref, channel="app", user_id="u1", merchant_id="m1", order_id=ref,
                  order_amount=10000, currency="CNY", category="apparel", delivery="platform",
                  order_status="delivered", dispute_type="quality", claimed_amount=5000, occurred_at=utcnow())
    return open_ticket(fields, {"negotiation": negotiation}, app.policy).ticket.id


def due_timer(ticket_id: int, seconds_ago: float = 5, state: str = "negotiating", version: int = 1) -> Timer:
    return schedule_timer(ticket_id, "merchant_response_deadline", state, version, "negotiation",
                          utcnow() - timedelta(seconds=seconds_ago))


@contextlib.contextmanager
def count_statements() -> Iterator[list[str]]:
    """The SQL statements peewee runs inside the block."""
    seen: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger, handler = logging.getLogger("peewee"), Catch()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def queued(app: App, queue: str) -> int:
    return app.broker.queues[queue].qsize()


def age(dispatch_id: int, *, created: float = 0, sent: float | None = None, attempts: int | None = None) -> None:
    """Make a dispatch look `created`/`sent` seconds old (tests may rewrite rows)."""
    values: dict = {Dispatch.created_at: utcnow() - timedelta(seconds=created)}
    if sent is not None:
        values[Dispatch.sent_at] = utcnow() - timedelta(seconds=sent)
    if attempts is not None:
        values[Dispatch.attempts] = attempts
    Dispatch.update(values).where(Dispatch.id == dispatch_id).execute()


# -- timers ----------------------------------------------------------------------

def test_a_due_timer_fires_once_however_often_the_scheduler_looks(app) -> None:
    # Given a due timer and one not yet due
    ticket_id = new_ticket(app, "T1")
    timer = due_timer(ticket_id)
    later = schedule_timer(ticket_id, "merchant_response_deadline", "negotiating", 1, "negotiation",
                           utcnow() + timedelta(hours=1))
    # When timers are fired twice
    first, second = fire_due_timers(utcnow()), fire_due_timers(utcnow())
    # Then the due one became exactly one wake-up for its queue, and the other waits
    assert len(first) == 1 and second == []
    wake = Dispatch.get_by_id(first[0])
    assert (wake.queue, wake.kind, wake.ticket_id, wake.payload) == ("negotiation", "wake", ticket_id,
                                                                     {"timer_id": timer.id})
    assert wake.payload_object() == WakeUp(timer.id)
    assert (Timer.get_by_id(timer.id).status, Timer.get_by_id(later.id).status) == (FIRED, PENDING)


def test_two_schedulers_ticking_one_after_the_other_fire_a_timer_once(app) -> None:
    ticket_id = new_ticket(app, "T2")
    due_timer(ticket_id)
    one, two = Scheduler(app), Scheduler(app)
    assert (one.tick()["timers_fired"], two.tick()["timers_fired"]) == (1, 0)
    assert Dispatch.select().where(Dispatch.kind == "wake").count() == 1
    assert queued(app, "negotiation") == 1


def test_two_schedulers_firing_at_the_same_moment_fire_each_timer_once(app) -> None:
    # Given twenty due timers
    ticket_id = new_ticket(app, "T3")
    timers = [due_timer(ticket_id).id for _ in range(20)]
    fired: list[list[int]] = [[], []]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def scheduler(slot: int) -> None:
        database.connect(reuse_if_open=True)
        try:
            start.wait()
            for _ in range(5):
                fired[slot] += fire_due_timers(utcnow(), batch=4)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            database.close()
    # When two schedulers fire them concurrently
    threads = [threading.Thread(target=scheduler, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then every timer fired exactly once
    assert errors == []
    wakes = Dispatch.select().where(Dispatch.kind == "wake")
    assert sorted(d.payload["timer_id"] for d in wakes) == sorted(timers)
    assert len(fired[0]) + len(fired[1]) == 20


def test_a_cancelled_timer_never_fires(app) -> None:
    # Given a negotiation deadline cancelled by the merchant's answer, and one cancelled by hand
    ticket_id = new_ticket(app, "T4", negotiation="pending")
    apply(ticket_id, "platform_judgment", Actor(Role.MERCHANT), {"option": "platform_judgment"}, app.policy)
    manual = due_timer(ticket_id)
    Timer.update(status=CANCELLED).where(Timer.id == manual.id).execute()
    assert {t.status for t in Timer.select()} == {CANCELLED}
    # When the scheduler looks long after both were due
    app.clock = lambda: utcnow() + timedelta(days=30)
    # Then nothing fires
    assert Scheduler(app).tick()["timers_fired"] == 0
    assert not Dispatch.select().where(Dispatch.kind == "wake").exists()


# -- the event relay -------------------------------------------------------------------

@pytest.fixture
def events_queue(app: App) -> Iterator[Queue]:
    """A queue bound to ``op.events`` with ``#`` on kombu's memory transport, bound before anything
    is published (the memory transport is process-wide, hence a unique name, deleted after)."""
    connection = app.kombu_connection()
    queue = Queue(f"test-events-{uuid.uuid4().hex[:8]}", exchange=events_exchange, routing_key="#")(
        connection.channel())
    queue.declare()
    try:
        yield queue
    finally:
        queue.delete()
        connection.release()


def read_all(queue: Queue) -> list:
    messages = []
    while (message := queue.get(no_ack=True)) is not None:
        messages.append(message)
    return messages


def test_the_relay_publishes_the_outbox_in_commit_order_and_marks_it_published(app, events_queue) -> None:
    # Given changes to two tickets, interleaved
    a, b = new_ticket(app, "R1"), new_ticket(app, "R2")
    apply(a, "take_over", Actor.agent(1, 1), {}, app.policy)
    apply(b, "withdraw", Actor(Role.USER), {}, app.policy)
    apply(a, "to_judgment", Actor.agent(1, 1), {"dispute_status": "not_reconciled", "category": "apparel"},
          app.policy)
    outbox = list(OutboxEvent.select().order_by(OutboxEvent.id))
    # When the scheduler beats
    assert Scheduler(app).tick()["events"] == len(outbox) == 5
    # Then op.events carries them in id order, as JSON with their event ids
    messages = read_all(events_queue)
    assert [m.delivery_info["routing_key"] for m in messages] == [e.routing_key for e in outbox] == [
        "ticket.awaiting_takeover", "ticket.awaiting_takeover", "ticket.stage1", "ticket.withdrawn", "ticket.stage3"]
    bodies = [json.loads(m.body) for m in messages]
    assert [body["event_id"] for body in bodies] == [e.body["event_id"] for e in outbox]
    assert [m.properties["message_id"] for m in messages] == [body["event_id"] for body in bodies]
    assert all(m.content_type == "application/json" for m in messages)
    assert [(body["ticket_id"], body["version"]) for body in bodies] == [(a, 1), (b, 1), (a, 2), (b, 2), (a, 3)]
    # And they are marked published, so the next beat sends nothing again
    assert not OutboxEvent.select().where(OutboxEvent.published_at.is_null()).exists()
    assert Scheduler(app).tick()["events"] == 0
    assert read_all(events_queue) == []


def test_only_the_holder_of_the_relay_lease_publishes(app, events_queue) -> None:
    # Given one scheduler that holds the relay lease
    holder, other = Scheduler(app, name="holder"), Scheduler(app, name="other")
    holder.tick()
    new_ticket(app, "R3")
    # When another scheduler beats / Then it leaves the event to the holder
    assert other.tick()["events"] == 0
    assert holder.tick()["events"] == 1
    assert [m.delivery_info["routing_key"] for m in read_all(events_queue)] == ["ticket.awaiting_takeover"]


def test_relay_events_marks_only_what_the_broker_took(app, events_queue) -> None:
    # Given three events and a producer that fails on the second
    for ref in ("R4", "R5", "R6"):
        new_ticket(app, ref)

    class Flaky(Producer):
        calls = 0

        def publish(self, *args, **kwargs):  # type: ignore[override]
            Flaky.calls += 1
            if Flaky.calls == 2:
                raise ConnectionError("broker went away")
            return super().publish(*args, **kwargs)
    with Connection("memory://") as connection:
        with pytest.raises(ConnectionError):
            relay_events(Flaky(connection.channel()), utcnow())
        # Then the first is published, the others wait for the next beat, which sends them in order
        assert OutboxEvent.select().where(OutboxEvent.published_at.is_null(False)).count() == 1
        assert relay_events(Producer(connection.channel()), utcnow()) == 2
    assert [json.loads(m.body)["external_ref"] for m in read_all(events_queue)] == ["R4", "R5", "R6"]


# -- dispatches a crash left behind --------------------------------------------------------

def test_a_dispatch_whose_first_send_fails_goes_back_to_the_unsent_rows(app, monkeypatch) -> None:
    # Given a dispatch just written: it is written as sent once, for its writer sends it right away
    row = new_dispatch("stage2", ARRIVAL)
    assert (Dispatch.get_by_id(row.id).attempts, Dispatch.get_by_id(row.id).sent_at is not None) == (1, True)
    # When the broker refuses it
    def refuse(message, *, delay=None):
        raise ConnectionError("broker down")
    monkeypatch.setattr(app.broker, "enqueue", refuse)
    assert send_dispatches(app.broker, [row]) == 0
    # Then it is unsent again, for the relay's sweep
    assert (Dispatch.get_by_id(row.id).attempts, Dispatch.get_by_id(row.id).sent_at) == (0, None)


def test_a_dispatch_sent_as_written_costs_no_statement_after_the_send(app) -> None:
    row = new_dispatch("stage2", ARRIVAL)
    with count_statements() as statements:
        assert send_dispatches(app.broker, [row]) == 1
    assert statements == [] and queued(app, "stage2") == 1


def test_dispatches_never_sent_are_sent_once_older_than_the_grace(app) -> None:
    # Given a dispatch committed long ago whose first send failed, a fresh one, and an old one done
    old = new_dispatch("stage2", ARRIVAL).id
    fresh = new_dispatch("stage2", ARRIVAL).id
    done = new_dispatch("stage2", ARRIVAL).id
    Dispatch.update(sent_at=None, attempts=0).execute()  # what a failed first send leaves
    age(old, created=10)
    age(done, created=10)
    Dispatch.update(done_at=utcnow(), outcome="applied").where(Dispatch.id == done).execute()
    # When the relay looks for unsent dispatches
    sent = send_unsent_dispatches(app.broker, utcnow(), grace=2.0)
    # Then only the old one went out, once
    assert sent == 1 and queued(app, "stage2") == 1
    assert (Dispatch.get_by_id(old).attempts, Dispatch.get_by_id(old).sent_at is not None) == (1, True)
    assert Dispatch.get_by_id(fresh).sent_at is None and Dispatch.get_by_id(done).sent_at is None
    assert send_unsent_dispatches(app.broker, utcnow(), grace=2.0) == 0


def test_dispatches_sent_but_never_done_are_sent_again_and_only_failed_tries_make_one_dead(app) -> None:
    # Given a dispatch sent long ago and not done, one sent 10 times that no worker ever ran, one whose
    # handler failed its last allowed try, one sent just now, one done
    lost = new_dispatch("stage3", ARRIVAL).id
    unrun = new_dispatch("stage3", ARRIVAL).id
    failing = new_dispatch("stage3", ARRIVAL).id
    recent = new_dispatch("stage3", ARRIVAL).id
    finished = new_dispatch("stage3", ARRIVAL).id
    age(lost, created=100, sent=60, attempts=1)
    age(unrun, created=100, sent=60, attempts=MAX_DISPATCH_ATTEMPTS)
    age(failing, created=100, sent=60, attempts=2)
    Dispatch.update(outcome=failing_outcome(MAX_DISPATCH_ATTEMPTS, "RuntimeError: broken")).where(
        Dispatch.id == failing).execute()
    age(recent, created=100, sent=1, attempts=1)
    age(finished, created=100, sent=60, attempts=1)
    Dispatch.update(done_at=utcnow(), outcome="applied").where(Dispatch.id == finished).execute()
    # When the reconciler runs (the stage3 queue holds none of their messages)
    redriven = redrive_stale_dispatches(app.broker, utcnow(), after=30, max_attempts=MAX_DISPATCH_ATTEMPTS)
    # Then the two missing ones are sent again — however often the unrun one was sent before, it is
    # not dead — the failing one is dead, saying why, and the others are untouched
    assert redriven == 2 and queued(app, "stage3") == 2
    assert Dispatch.get_by_id(lost).attempts == 2
    assert (Dispatch.get_by_id(unrun).attempts, Dispatch.get_by_id(unrun).done_at) == (MAX_DISPATCH_ATTEMPTS + 1, None)
    dead = Dispatch.get_by_id(failing)
    assert dead.done_at is not None
    assert dead.outcome == f"dead: {MAX_DISPATCH_ATTEMPTS} tries failed, last: RuntimeError: broken"
    assert (Dispatch.get_by_id(recent).attempts, Dispatch.get_by_id(finished).attempts) == (1, 1)
    # And a second run right after sends nothing (the queue holds what is missing no more)
    assert redrive_stale_dispatches(app.broker, utcnow(), after=30, max_attempts=MAX_DISPATCH_ATTEMPTS) == 0


def test_a_wake_up_the_broker_lost_is_re_driven_and_applied_once(app, worker, drain, clock) -> None:
    # Given a negotiation deadline fired, its wake-up sent, and the message lost by the broker
    ticket_id = new_ticket(app, "D1", negotiation="pending")
    clock.advance(1.5)
    [wake_id] = fire_due_timers(clock())
    Dispatch.update(sent_at=utcnow(), attempts=1).where(Dispatch.id == wake_id).execute()
    scheduler = Scheduler(app)
    assert scheduler.tick()["redriven"] == 0
    assert Ticket.get_by_id(ticket_id).state == "negotiating"
    # When the reconciler's time comes (redrive_after later)
    clock.advance(app.settings.redrive_after + 1)
    # (≥: a worker that applies the wake-up within the tick makes notifications stamped by the wall
    # clock, which the advanced clock finds stale too; the wake-up's own sends are checked below)
    assert scheduler.tick()["redriven"] >= 1
    drain()
    # Then the deadline is applied once and the ticket is on the floor
    ticket = Ticket.get_by_id(ticket_id)
    assert (ticket.state, ticket.version) == ("awaiting_takeover", 2)
    wake = Dispatch.get(Dispatch.kind == "wake")
    assert (wake.attempts, wake.outcome) == (2, "applied")


# -- leases -----------------------------------------------------------------------------

def test_a_lease_is_refused_to_a_second_holder_until_it_expires(app) -> None:
    now = utcnow()
    # Given A holds the lease for ten seconds
    assert acquire_lease("relay", "A", 10, now)
    # Then B is refused while it lasts, and A may renew it
    assert not acquire_lease("relay", "B", 10, now + timedelta(seconds=5))
    assert acquire_lease("relay", "A", 10, now + timedelta(seconds=5))
    assert not acquire_lease("relay", "B", 10, now + timedelta(seconds=14))
    # When it expires without renewal / Then B takes it and A is refused
    assert acquire_lease("relay", "B", 10, now + timedelta(seconds=16))
    assert not acquire_lease("relay", "A", 10, now + timedelta(seconds=17))


def test_releasing_a_lease_lets_another_holder_take_it_at_once_but_only_its_holder_may_release(app) -> None:
    now = utcnow()
    assert acquire_lease("relay", "A", 10, now)
    release_lease("relay", "B")  # not B's to release
    assert not acquire_lease("relay", "B", 10, now)
    release_lease("relay", "A")
    assert acquire_lease("relay", "B", 10, now)
