"""The relay on RabbitMQ: batches of events confirmed once, as a consumer of ``op.events`` sees them.

Each test gets a private vhost and a fresh PostgreSQL database. What is asserted is what a consumer
bound to ``op.events`` notices — every event arrives, events of a ticket in id order (first
occurrences: it de-duplicates on ``event_id``), each with the properties it always had — and that
a row is marked published only once the broker confirmed it.
"""
from __future__ import annotations

import itertools
import json
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator

import psycopg2
import pytest
from kombu import Connection, Exchange, Producer, Queue
from kombu.exceptions import OperationalError

from disputes.settings import EVENTS_EXCHANGE
from disputes.wiring import App
from models.base import database, utcnow
from models.outbox import OutboxEvent
from scheduler import relay
from scheduler.loop import Scheduler
from scheduler.relay import events_exchange, relay_events
from tests.integration.conftest import PG_DSN, fresh_pg_database, make_app, need

pytestmark = pytest.mark.servers

AMQP_HOST = "guest:guest@127.0.0.1:5672"
_refs = itertools.count(1)


def rabbitmqctl(*args: str) -> None:
    done = subprocess.run(["rabbitmqctl", "-q", *args], check=False, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"rabbitmqctl {' '.join(args)}: {done.stderr or done.stdout}"


@pytest.fixture
def amqp_url() -> Iterator[str]:
    """A RabbitMQ vhost of this test; its AMQP URL."""
    need(5672, "RabbitMQ")
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed")
    name = f"disputes-relay-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"amqp://{AMQP_HOST}/{name}"
    finally:
        rabbitmqctl("delete_vhost", name)


@pytest.fixture
def rabbit_app(policy, amqp_url: str) -> Iterator[App]:
    """The app on a fresh PostgreSQL database, its events going to the test's vhost."""
    # A name of its own: a run of this file elsewhere on the same server drops only its own database.
    name = f"disputes_test_relay_{uuid.uuid4().hex[:8]}"
    app = make_app(fresh_pg_database(name), policy, intake_url=amqp_url)
    try:
        yield app  # no connection_context: a scheduler beat closes the connection it used
    finally:
        app.db.close_all()
        drop_pg_database(name)


def drop_pg_database(name: str) -> None:
    conn = psycopg2.connect(PG_DSN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    conn.close()


def confirming(url: str) -> Connection:
    """A connection as `App.kombu_connection` makes it for RabbitMQ."""
    return Connection(url, transport_options={"confirm_publish": True})


class Tap:
    """A queue bound to ``op.events`` with ``#`` before anything is published: what a consumer gets."""

    def __init__(self, url: str, **arguments: object) -> None:
        self.connection = Connection(url)
        self.queue = Queue(f"tap-{uuid.uuid4().hex[:8]}", exchange=events_exchange, routing_key="#",
                           queue_arguments=arguments or None)(self.connection.channel())
        self.queue.declare()

    def read(self) -> list:
        messages = []
        while (message := self.queue.get(no_ack=True)) is not None:
            messages.append(message)
        return messages

    def close(self) -> None:
        self.connection.release()


@pytest.fixture
def tap(rabbit_app: App, amqp_url: str) -> Iterator[Tap]:
    consumer = Tap(amqp_url)
    yield consumer
    consumer.close()


def write_events(n: int, tickets: int = 3) -> list[OutboxEvent]:
    """`n` outbox rows for `tickets` tickets, interleaved, each ticket's versions rising with the id."""
    versions: dict[int, int] = {}
    with database.atomic():
        for i in range(n):
            ticket = 1 + i % tickets
            versions[ticket] = versions.get(ticket, 0) + 1
            body = {"event_id": str(uuid.uuid4()), "ticket_id": ticket, "version": versions[ticket],
                    "external_ref": f"X-{next(_refs)}", "to_state": "stage1", "note": "ünïcode ✓"}
            OutboxEvent.create(ticket_id=ticket, routing_key="ticket.stage1", body=body)
    return list(OutboxEvent.select().order_by(OutboxEvent.id))


def marked_ids() -> list[int]:
    return [r.id for r in OutboxEvent.select(OutboxEvent.id).where(OutboxEvent.published_at.is_null(False))
            .order_by(OutboxEvent.id)]


def raw_body(message) -> bytes:  # type: ignore[no-untyped-def]
    """The body bytes as sent (py-amqp hands a consumer text when the content encoding is utf-8)."""
    return message.body.encode("utf-8") if isinstance(message.body, str) else message.body


def first_occurrences(messages: list) -> list[str]:
    """The event ids as a consumer that de-duplicates on ``event_id`` handles them."""
    seen: dict[str, None] = {}
    for message in messages:
        seen.setdefault(json.loads(message.body)["event_id"], None)
    return list(seen)


def event_ids(rows: list[OutboxEvent]) -> list[str]:
    return [row.body["event_id"] for row in rows]


def fail_after(monkeypatch: pytest.MonkeyPatch, count: int, failure: Callable[[], None]) -> None:
    """Run `failure` once the relay has sent `count` messages of its batch."""
    publish, sent = relay.publish_unconfirmed, itertools.count(1)

    def publish_then_fail(channel, event) -> None:  # type: ignore[no-untyped-def]
        publish(channel, event)
        if next(sent) == count:
            failure()
    monkeypatch.setattr(relay, "publish_unconfirmed", publish_then_fail)


# -- every event, in order, with its properties ---------------------------------------------------

def test_a_scheduler_beat_delivers_every_event_once_in_id_order_with_its_properties(rabbit_app, tap) -> None:
    # Given 1,200 events of three tickets (more than one batch of 500)
    rows = write_events(1200)
    # When the scheduler beats until the outbox is empty
    scheduler = Scheduler(rabbit_app)
    try:
        assert [scheduler.tick()["events"] for _ in range(4)] == [500, 500, 200, 0]
    finally:
        scheduler._reset_producer()
    # Then the consumer got each event once, in id order, as the contract describes it
    messages = tap.read()
    assert [json.loads(m.body)["event_id"] for m in messages] == event_ids(rows)
    for message, row in zip(messages, rows):
        assert raw_body(message) == json.dumps(row.body, ensure_ascii=False).encode("utf-8")
        assert message.delivery_info["routing_key"] == row.routing_key
        assert message.properties["message_id"] == row.body["event_id"]
        assert (message.properties["delivery_mode"], message.content_type, message.content_encoding) == (
            2, "application/json", "utf-8")
    # And every row is marked published
    assert marked_ids() == [row.id for row in rows]


def test_a_batch_carries_the_same_messages_as_the_one_by_one_path(rabbit_app, tap, amqp_url) -> None:
    # Given events published one at a time (each publish waiting for its confirm) ...
    rows = write_events(5)
    with confirming(amqp_url) as connection:
        producer = Producer(connection.channel())
        assert relay.relay_one_by_one(producer, relay.unpublished_events(500), utcnow()) == 5
        one_by_one = tap.read()
        # ... and the same events again as one confirmed batch
        OutboxEvent.update(published_at=None).execute()
        assert relay_events(Producer(connection.channel()), utcnow()) == 5
    batched = tap.read()
    # Then a consumer cannot tell the two apart
    def seen(m):  # type: ignore[no-untyped-def]
        return m.body, m.delivery_info["routing_key"], m.properties, m.headers
    assert [seen(m) for m in batched] == [seen(m) for m in one_by_one]
    assert first_occurrences(batched) == event_ids(rows)


# -- only what the broker confirmed is marked ----------------------------------------------------

def test_a_batch_refused_in_part_marks_only_the_events_before_the_first_refusal(rabbit_app, tap, amqp_url) -> None:
    # Given a queue on op.events that takes 4 messages and refuses the rest (the broker nacks them)
    rows = write_events(10)
    full = Tap(amqp_url, **{"x-max-length": 4, "x-overflow": "reject-publish"})
    try:
        # When the relay publishes the 10 events (and retries, still refused)
        with confirming(amqp_url) as connection, pytest.raises(OperationalError, match="refused"):
            relay_events(Producer(connection.channel()), utcnow())
        # Then only the 4 events the broker confirmed are marked: the first four, in id order
        assert marked_ids() == [row.id for row in rows[:4]]
        # And once that queue is gone, a later relay sends the other six
        full.queue.delete()
        with confirming(amqp_url) as connection:
            assert relay_events(Producer(connection.channel()), utcnow()) == 6
    finally:
        full.close()
    assert marked_ids() == [row.id for row in rows]
    assert first_occurrences(tap.read()) == event_ids(rows)


def test_an_exchange_gone_mid_batch_marks_no_event_the_broker_did_not_confirm(
        rabbit_app, tap, amqp_url, monkeypatch) -> None:
    # Given 20 events, and op.events deleted once the relay has sent 5 of them
    rows = write_events(20)

    def delete_exchange() -> None:
        with Connection(amqp_url) as other:
            Exchange(EVENTS_EXCHANGE, type="topic")(other.channel()).delete()
    fail_after(monkeypatch, 5, delete_exchange)
    # When the relay publishes: the broker closes its channel at the 6th message (404)
    with confirming(amqp_url) as connection, pytest.raises(Exception, match="NOT_FOUND"):
        relay_events(Producer(connection.channel()), utcnow())
    # Then at most the first 5 are marked, and each of them reached the consumer
    marked = marked_ids()
    assert marked == [row.id for row in rows[:len(marked)]] and len(marked) <= 5
    assert set(event_ids(rows[:len(marked)])) <= set(first_occurrences(tap.read()))
    # And a later relay (op.events declared again, the consumer bound again) sends the rest in order
    monkeypatch.undo()
    tap.queue.declare()
    with confirming(amqp_url) as connection:
        assert relay_events(Producer(connection.channel()), utcnow()) == 20 - len(marked)
    assert first_occurrences(tap.read()) == event_ids(rows[len(marked):])
    assert marked_ids() == [row.id for row in rows]


class CuttableProxy:
    """A TCP proxy to RabbitMQ that can cut every connection and refuse new ones: a broker gone."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", 5672))
            self.sockets += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass

    def cut(self) -> None:
        self.server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone would not
        self.server.close()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def test_a_connection_lost_mid_batch_marks_only_confirmed_events_and_a_later_relay_sends_the_rest(
        rabbit_app, tap, amqp_url, monkeypatch) -> None:
    # Given 50 events, and a broker that vanishes once the relay has sent 20 of them
    rows = write_events(50)
    proxy = CuttableProxy()
    fail_after(monkeypatch, 20, proxy.cut)
    # When the relay publishes through it (its reconnects refused too)
    with confirming(amqp_url.replace("5672", str(proxy.port))) as connection, pytest.raises(OperationalError):
        relay_events(Producer(connection.channel()), utcnow())
    # Then what is marked is a run from the first event, of events the consumer did receive
    marked = marked_ids()
    assert marked == [row.id for row in rows[:len(marked)]] and len(marked) <= 20
    assert set(event_ids(rows[:len(marked)])) <= set(first_occurrences(tap.read()))
    # And a relay on a working connection sends every event not marked, in id order
    monkeypatch.undo()
    with confirming(amqp_url) as connection:
        assert relay_events(Producer(connection.channel()), utcnow()) == 50 - len(marked)
    assert first_occurrences(tap.read()) == event_ids(rows[len(marked):])
    assert marked_ids() == [row.id for row in rows]


def test_a_lost_connection_is_reconnected_and_the_batch_finished_in_the_same_relay(
        rabbit_app, tap, amqp_url, monkeypatch) -> None:
    # Given 30 events, and the relay's connection closed under it once it sent 10 of them
    rows = write_events(30)
    with confirming(amqp_url) as connection:
        producer = Producer(connection.channel())
        fail_after(monkeypatch, 10, lambda: connection.connection.sock.shutdown(socket.SHUT_RDWR))
        # When it relays / Then it reconnects and publishes the rest again within the call
        relayed = relay_events(producer, utcnow())
    # And the consumer has every event, first occurrences in id order, all marked
    assert relayed <= 30
    assert first_occurrences(tap.read()) == event_ids(rows)
    assert marked_ids() == [row.id for row in rows]
