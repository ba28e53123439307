"""Dispatches sent in a batch on Redis (one pipelined round trip) reach their actor like any other."""
from __future__ import annotations

import dramatiq
import pytest
from dramatiq import Worker

from models.sending import enqueue_many

pytestmark = pytest.mark.servers
REDIS_URL = "redis://127.0.0.1:6379/15"


def test_a_pipelined_batch_of_messages_is_consumed_in_full(servers_up: None) -> None:
    from dramatiq.brokers.redis import RedisBroker
    # Given a Redis broker with one actor and a worker
    broker = RedisBroker(url=REDIS_URL)
    broker.client.flushdb()
    seen: list[int] = []

    @dramatiq.actor(broker=broker, queue_name="bench_batch", actor_name="bench_batch_seen")
    def record(n: int) -> None:
        seen.append(n)

    worker = Worker(broker, worker_threads=2)
    worker.start()
    try:
        # When 50 messages are enqueued as one batch
        messages = [record.message(n) for n in range(50)]
        assert enqueue_many(broker, messages) == 50
        broker.join("bench_batch", timeout=10_000)
        worker.join()
    finally:
        worker.stop()
        broker.client.flushdb()
        broker.close()
    # Then every one ran once
    assert sorted(seen) == list(range(50))
