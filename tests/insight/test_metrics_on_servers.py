"""`/metrics` on the production servers: the audit SQL on PostgreSQL, queue depths read from Redis
(``LLEN``) and RabbitMQ (passive ``queue_declare``). Skipped when a server is unreachable, unless
``OP_REQUIRE_SERVERS=1``."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Iterator

import dramatiq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from desk.metrics import render_metrics
from disputes.probes import queue_depths
from policy import default_policy_dict, policy_from_dict
from disputes.settings import Settings
from disputes.wiring import App, build_app, pika_url
from models import init_schema
from models.agent import Agent
from models.change import Actor
from models.workflow import apply, open_ticket
from tests.integration.conftest import fresh_pg_database, need

pytestmark = pytest.mark.servers

PG_DATABASE = "disputes_insight"


@pytest.fixture
def pg_app() -> Iterator[App]:
    app = build_app(Settings(database_url=fresh_pg_database(PG_DATABASE)),
                    policy=policy_from_dict(default_policy_dict()))
    with app.db.connection_context():
        init_schema()
        yield app
    app.db.close_all()


def test_the_audit_trail_families_are_counted_by_postgresql(pg_app: App) -> None:
    agent = Agent.create(name="s1", stage=1, token_hash="h1")
    fields = dict(source="shop", channel="app", user_id="u1", merchant_id="m1", order_amount=100, currency="CNY",
                  category="apparel", delivery="platform", order_status="delivered", dispute_type="quality",
                  claimed_amount=50, occurred_at=datetime.now(timezone.utc))
    ids = [open_ticket({**fields, "external_ref": f"r{i}", "order_id": f"o{i}"}, {"negotiation": "failed"},
                       pg_app.policy).ticket.id for i in range(2)]
    apply(ids[0], "take_over", Actor.agent(1, agent.id), {}, pg_app.policy)
    families = {f.name: f for f in text_string_to_metric_families(render_metrics(pg_app).decode())}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("disputes_transitions_total", (("action", "submit"),))] == 2
    count = ("disputes_stage_latency_seconds_count", (("stage", "stage1"), ("state", "awaiting_takeover")))
    assert samples[count] == 1
    assert samples[("disputes_tickets", (("state", "awaiting_takeover"),))] == 1
    assert samples[("disputes_tickets", (("state", "closed"),))] == 0


def _message(queue: str) -> dramatiq.Message:
    return dramatiq.Message(queue_name=queue, actor_name="noop", args=(), kwargs={}, options={})


def test_redis_queue_depth_is_read_from_the_broker() -> None:
    need(6379, "Redis")
    from dramatiq.brokers.redis import RedisBroker
    broker = RedisBroker(url="redis://127.0.0.1:6379/8", namespace=f"insight-{uuid.uuid4().hex[:8]}")
    try:
        broker.declare_queue("stage2")
        for _ in range(3):
            broker.enqueue(_message("stage2"))
        assert queue_depths(broker, ["stage1", "stage2"]) == {"stage1": 0, "stage2": 3}
    finally:
        broker.flush_all()
        broker.close()


def test_rabbitmq_queue_depth_is_a_passive_declare() -> None:
    need(5672, "RabbitMQ")
    from dramatiq.brokers.rabbitmq import RabbitmqBroker
    broker = RabbitmqBroker(url=pika_url("amqp://guest:guest@127.0.0.1:5672//"))
    queue, never_declared = f"insight-{uuid.uuid4().hex[:8]}", f"insight-{uuid.uuid4().hex[:8]}"
    try:
        broker.declare_queue(queue)
        for _ in range(2):
            broker.enqueue(_message(queue))
        depths = {}
        for _ in range(20):  # RabbitMQ counts a publish a moment after confirming it
            depths = queue_depths(broker, [queue, never_declared])
            if depths[queue] == 2:
                break
        assert depths == {queue: 2, never_declared: 0}
    finally:
        broker.channel.queue_delete(queue)
        broker.channel.queue_delete(f"{queue}.DQ")
        broker.channel.queue_delete(f"{queue}.XQ")
        broker.close()
