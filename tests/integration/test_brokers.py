"""Dispatches cross each production broker and are applied once; intake and events on each kombu transport."""
from __future__ import annotations

import json
import time
import uuid

import pytest
from dramatiq import Worker
from kombu import Connection, Consumer, Exchange, Producer, Queue

import workers
from models.base import database, utcnow
from models.change import Actor
from models.outbox import Dispatch
from models.ticket import Ticket
from models.workflow import apply, open_ticket
from scheduler.loop import Scheduler
from tests.integration.conftest import make_app
from tests.integration.test_postgres import complaint_fields
from models.sending import send_dispatches
from workers.intake import IntakeConsumer, declare_topology, intake_exchange, intake_queue

pytestmark = pytest.mark.servers


def wait_until(check, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with database.connection_context():
            if check():
                return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_an_agent_action_crosses_the_broker_and_applies_once(broker, request, pg_url, fast_policy) -> None:
    url = request.getfixturevalue("redis_url" if broker == "redis" else "amqp_url")
    app = make_app(pg_url, fast_policy, broker_url=url)
    workers.declare_all(app)
    for queue in app.broker.get_declared_queues():
        app.broker.flush(queue)
    worker = Worker(app.broker, worker_threads=2)
    worker.start()
    try:
        with database.connection_context():
            t = open_ticket(complaint_fields(7), {"negotiation": "failed"}, fast_policy).ticket
            claim = apply(t.id, "take_over", Actor.agent(1, 5), {}, fast_policy)
            with database.atomic():
                act = Dispatch.create(queue="stage1", kind="act", ticket_id=t.id, payload={
                    "ticket_id": t.id, "action": "to_judgment", "agent_id": 5, "expected_version": 2,
                    "params": {"dispute_status": "not_reconciled", "category": "apparel"}, "qc": None})
            send_dispatches(app.broker, claim.dispatches + [act.id, act.id])
            send_dispatches(app.broker, [act.id])  # a redelivery
        wait_until(lambda: Ticket.get_by_id(t.id).state == "stage3")
        time.sleep(0.5)
        with database.connection_context():
            ticket = Ticket.get_by_id(t.id)
            assert (ticket.state, ticket.version) == ("stage3", 3)
    finally:
        worker.stop()
        app.broker.close()


@pytest.mark.parametrize("transport", ["redis", "rabbitmq"])
def test_intake_admits_over_the_transport_and_events_route_by_topic(transport, request, pg_url,
                                                                     fast_policy) -> None:
    url = request.getfixturevalue("redis_url" if transport == "redis" else "amqp_url")
    app = make_app(pg_url, fast_policy, intake_url=url)
    events = Queue(f"test.events.{uuid.uuid4().hex[:8]}", Exchange("op.events", type="topic", durable=True),
                   routing_key="ticket.*", auto_delete=True)
    body = {"schema_version": 1, "source": "shop", "external_ref": f"T-{uuid.uuid4().hex[:6]}", "channel": "app",
            "order": {"order_id": "O-9", "amount": 900, "currency": "CNY", "category": "apparel",
                      "delivery": "merchant", "status": "delivered"},
            "user_id": "u9", "merchant_id": "m9", "dispute_type": "quality", "claimed_amount": 900,
            "description": "", "negotiation": "failed", "occurred_at": "2026-11-20T10:00:00+08:00"}
    received: list[tuple[str, dict]] = []
    with Connection(url) as conn:
        events.maybe_bind(conn)
        events.declare()
        declare_topology(conn)
        intake_queue(conn.default_channel).purge()
        consumer_conn = app.kombu_connection()
        intake = IntakeConsumer(app, consumer_conn)
        intake.should_stop = False
        producer = Producer(conn.channel())
        producer.publish(b"{not json", exchange=intake_exchange, routing_key="complaint.submitted",
                         declare=[intake_exchange], message_id=uuid.uuid4().hex, content_type="application/json")
        producer.publish(json.dumps(body).encode(), exchange=intake_exchange, routing_key="complaint.submitted",
                         declare=[intake_exchange], message_id=uuid.uuid4().hex, content_type="application/json",
                         delivery_mode=2)
        for _ in intake.consume(limit=2, timeout=10):
            pass
        with database.connection_context():
            ticket = Ticket.get(Ticket.external_ref == body["external_ref"])
            assert ticket.state == "awaiting_takeover"
        Scheduler(app).tick()
        with Consumer(conn, queues=[events], callbacks=[lambda b, m: (received.append(
                (m.delivery_info["routing_key"], json.loads(b) if isinstance(b, (str, bytes)) else b)), m.ack())],
                accept=["json"]):
            end = time.monotonic() + 10
            while not received and time.monotonic() < end:
                try:
                    conn.drain_events(timeout=1)
                except TimeoutError:
                    pass
        consumer_conn.release()
    assert [k for k, _ in received] == ["ticket.awaiting_takeover"]
    assert received[0][1]["from_state"] is None and received[0][1]["ticket_id"] == ticket.id
