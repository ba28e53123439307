"""A notification is its own work item: few statements, redeliveries harmless, lost messages re-driven.

Send (a change that concerns a party; a message lost, or of the previous
version), join (the notify queue, the reconciler), assert (what the parties
received, what the `Notification` rows and `disputes ticket show` say).
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Callable, Iterator

import dramatiq
import pytest

import tests.statements
import workers
from disputes.cli.ticket_show import undelivered_notifications
from disputes.logs import current_context
from disputes.middleware.log_context import LogContext
from disputes.wiring import App
from models.base import utcnow
from models.change import Actor
from models.dispatches import NotificationDelivery
from models.notification import FAILED, PENDING, SENT, Notification, NotificationRef
from models.outbox import Dispatch, new_dispatch
from models.sending import send_dispatches
from models.ticket import Ticket
from models.workflow import apply
from policy import Policy
from scheduler.loop import Scheduler
from scheduler.reconciler import redrive_stale_notifications
from tests.conftest import fund_merchant
from tests.notify.conftest import CONTACT, REQUEST_USER, STAGE1_AGENT

BOTH = dict(REQUEST_USER, **{"from": "both"})


@pytest.fixture
def policy(make_policy, smtp_server) -> Policy:
    """Buyers mailed through the local SMTP server and logged, merchants logged; three tries."""
    return make_policy(notifications={
        "max_attempts": 3, "channels": {"user": ["smtp", "log"], "merchant": ["log"]},
        "smtp": {"host": "127.0.0.1", "port": smtp_server.port, "from": "disputes@shop.example", "timeout": "5s"}})


def notifications(ticket_id: int) -> list[Notification]:
    return list(Notification.select().where(Notification.ticket_id == ticket_id).order_by(Notification.id))


def redrive(app: App) -> int:
    """One pass of the reconciler, as the scheduler runs it."""
    return redrive_stale_notifications(app.broker, utcnow(), app.settings.redrive_after,
                                       app.policy.notifications.max_attempts)


def age(ticket_id: int, seconds: float) -> None:
    """Move the ticket's notifications `seconds` into the past (the worker stamps real time, so the
    clock of the reconciler stays the real one too)."""
    back = timedelta(seconds=seconds)
    for n in notifications(ticket_id):
        (Notification.update(created_at=n.created_at - back,
                             last_attempt_at=n.last_attempt_at and n.last_attempt_at - back)
         .where(Notification.id == n.id).execute())


# -- the cost of a notification -----------------------------------------------------------------

class Statements(tests.statements.Statements):
    """Every statement peewee sends, and every BEGIN / COMMIT / ROLLBACK of a transaction."""

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, tuple) or record.msg in ("BEGIN", "COMMIT", "ROLLBACK"):
            self.sql.append(str(record.msg[0] if isinstance(record.msg, tuple) else record.msg))


@pytest.fixture
def statements(db_app: App, monkeypatch: pytest.MonkeyPatch) -> Iterator[Statements]:
    counter = Statements()
    logger = logging.getLogger("peewee")
    for name in ("begin", "commit", "rollback"):  # transactions the driver opens without a logged statement
        original = getattr(type(db_app.db), name)
        monkeypatch.setattr(type(db_app.db), name,
                            lambda self, *a, _o=original, _n=name, **k: (logger.debug(_n.upper()), _o(self, *a, **k))[1])
    level = logger.level
    logger.addHandler(counter)
    logger.setLevel(logging.DEBUG)
    try:
        yield counter
    finally:
        logger.removeHandler(counter)
        logger.setLevel(level)


def on_the_floor(app: App, publish: Callable, complaint: Callable) -> int:
    fund_merchant()
    ticket_id = publish("complaint.submitted", complaint(negotiation="failed", contact=CONTACT)).ticket_id
    apply(ticket_id, "take_over", Actor.agent(1, STAGE1_AGENT), {}, app.policy)
    app.broker.flush_all()
    return ticket_id


def run_queue(app: App, queue: str) -> int:
    """Handle what `queue` holds, in this thread, with the log context a worker binds first;
    returns how many messages there were."""
    waiting, handled = app.broker.queues[queue], 0
    while not waiting.empty():
        message = dramatiq.Message.decode(waiting.get_nowait())
        LogContext().before_process_message(app.broker, message)
        app.broker.actors[message.actor_name].fn(*message.args, **message.kwargs)
        handled += 1
    return handled


def test_a_changes_notifications_cost_one_insert_one_message_and_two_statements_to_deliver(
        db_app, publish, complaint, statements, smtp_server) -> None:
    # Given a ticket on the floor (on SQLite and on PostgreSQL), the notify actor declared
    if "notify_handle" not in db_app.broker.actors:
        workers.declare_all(db_app)
    ticket_id = on_the_floor(db_app, publish, complaint)
    statements.take()
    # When evidence is requested from both parties: the buyer by email and log, the merchant by log
    outcome = apply(ticket_id, "request_evidence", Actor.agent(1, STAGE1_AGENT), BOTH, db_app.policy)
    change = statements.take()
    send_dispatches(db_app.broker, outcome.dispatches)
    messages = run_queue(db_app, "notify")
    delivery = statements.take()
    # Then three notifications were written in one INSERT, with no dispatch row, and sent as one message
    assert [n.status for n in notifications(ticket_id)] == [SENT] * 3
    assert sum(s.startswith('INSERT INTO "notification"') for s in change) == 1
    assert not any(s.startswith('INSERT INTO "dispatch"') for s in change)
    assert messages == 1
    # And they were delivered in three statements, none in a transaction of its own: the claim, the
    # buyer's address (email only), the sent mark — before, it took six per notification; the
    # worker's log lines name the ticket the message carries, with no lookup
    assert [s.split(" ")[0] for s in delivery] == ["UPDATE", "SELECT", "UPDATE"], delivery
    assert 'FROM "ticket"' in delivery[1]
    assert current_context()["ticket_id"] == ticket_id
    assert len(smtp_server.messages) == 1


# -- redelivery, lost messages, the last try -------------------------------------------------------

def test_a_message_delivered_twice_at_once_sends_each_notification_once(
        app, worker, smtp_server, floor_ticket, act, drain) -> None:
    # Given an evidence request whose notifications are written, its message about to be delivered
    ticket_id = floor_ticket(contact=CONTACT)
    act(1, ticket_id, "request_evidence", BOTH)
    drain()
    ids = [n.id for n in notifications(ticket_id)]
    Notification.update(status=PENDING, attempts=0, sent_at=None).execute()  # as if not delivered yet
    smtp_server.messages.clear()
    # When the broker delivers that message twice
    send_dispatches(app.broker, [NotificationRef(ids, ticket_id), NotificationRef(ids, ticket_id)])
    drain()
    # Then each notification went out once, in one try
    assert len(smtp_server.messages) == 1
    assert [(n.status, n.attempts) for n in notifications(ticket_id)] == [(SENT, 1)] * 3


@pytest.mark.parametrize("loss", ["the send failed", "the broker dropped it"])
def test_a_lost_message_is_re_sent_by_the_reconciler_and_delivered_once(
        app, worker, smtp_server, floor_ticket, act, drain, monkeypatch, loss) -> None:
    # Given a ticket on the floor, and a broker that loses what is sent to the notify queue
    ticket_id = floor_ticket(contact=CONTACT)
    enqueue = app.broker.enqueue

    def losing(message: dramatiq.Message, **options: object) -> dramatiq.Message:
        if message.queue_name != "notify":
            return enqueue(message, **options)
        if loss == "the send failed":
            raise ConnectionError("broker unreachable")
        return message  # accepted, never delivered

    monkeypatch.setattr(app.broker, "enqueue", losing)
    # When evidence is requested from the buyer (the ticket moves on; the notification's message is lost)
    act(1, ticket_id, "request_evidence", REQUEST_USER)
    drain()
    assert Ticket.get_by_id(ticket_id).state == "awaiting_evidence"
    assert smtp_server.messages == [] and {n.status for n in notifications(ticket_id)} == {PENDING}
    monkeypatch.setattr(app.broker, "enqueue", enqueue)
    # Then the scheduler's reconciler leaves it alone inside the re-drive window
    scheduler = Scheduler(app)
    assert scheduler.tick()["redriven"] == 0
    # And re-sends it once the window has passed, once
    age(ticket_id, app.settings.redrive_after + 1)
    assert scheduler.tick()["redriven"] == 2
    assert scheduler.tick()["redriven"] == 0
    drain()
    # And the buyer is mailed once, each notification sent on its first try
    assert len(smtp_server.messages) == 1
    assert [(n.status, n.attempts) for n in notifications(ticket_id)] == [(SENT, 1)] * 2


def test_a_notification_whose_tries_never_reported_is_failed_by_the_reconciler(
        app, worker, smtp_server, floor_ticket, act, drain) -> None:
    # Given a notification that used its last try without an outcome (its worker killed mid-delivery)
    ticket_id = floor_ticket(contact=CONTACT)
    act(1, ticket_id, "request_evidence", REQUEST_USER)
    drain()
    mailed, logged = notifications(ticket_id)
    Notification.update(status=PENDING, attempts=3, sent_at=None).where(Notification.id == mailed.id).execute()
    # When the reconciler runs after the re-drive window
    age(ticket_id, app.settings.redrive_after + 1)
    assert redrive(app) == 0
    drain()
    # Then it is failed, not tried a fourth time, and `disputes ticket show` lists it
    failed = Notification.get_by_id(mailed.id)
    assert (failed.status, failed.attempts, failed.last_error) == (FAILED, 3, "no outcome after 3 tries")
    assert len(smtp_server.messages) == 1
    assert [(n["id"], n["status"]) for n in undelivered_notifications(Ticket.get_by_id(ticket_id))] == [
        (mailed.id, FAILED)]
    assert Notification.get_by_id(logged.id).status == SENT


def test_a_notification_backing_off_between_tries_is_not_re_driven(
        app, smtp_server, floor_ticket, act, drain) -> None:
    # Given a notification whose try failed just now (dramatiq will retry it after its backoff)
    ticket_id = floor_ticket(contact=CONTACT)
    act(1, ticket_id, "request_evidence", REQUEST_USER)
    drain()
    mailed = notifications(ticket_id)[0]
    age(ticket_id, app.settings.redrive_after + 1)
    Notification.update(status=PENDING, attempts=1, sent_at=None, last_attempt_at=utcnow()).where(
        Notification.id == mailed.id).execute()
    # When the reconciler runs / Then it leaves that retry alone
    assert redrive(app) == 0
    assert Notification.get_by_id(mailed.id).status == PENDING


# -- the previous version's messages -----------------------------------------------------------------

def test_a_deliver_dispatch_of_the_previous_version_is_still_delivered_once_and_done(
        app, worker, smtp_server, floor_ticket, act, drain) -> None:
    # Given a notification written by the previous version: pending, with a deliver dispatch
    ticket_id = floor_ticket(contact=CONTACT)
    act(1, ticket_id, "request_evidence", REQUEST_USER)
    drain()
    mailed = notifications(ticket_id)[0]
    Notification.update(status=PENDING, attempts=0, sent_at=None).where(Notification.id == mailed.id).execute()
    smtp_server.messages.clear()
    dispatch_id = new_dispatch("notify", NotificationDelivery(mailed.id), ticket_id).id
    # When its message — the dispatch id alone — arrives, and again later
    for _ in range(2):
        app.broker.enqueue(dramatiq.Message(queue_name="notify", actor_name="notify_handle", args=(dispatch_id,),
                                            kwargs={}, options={}))
        drain()
    # Then the buyer is mailed once and the dispatch is done
    assert len(smtp_server.messages) == 1
    assert (Notification.get_by_id(mailed.id).status, Notification.get_by_id(mailed.id).attempts) == (SENT, 1)
    assert Dispatch.get_by_id(dispatch_id).outcome == "applied"
