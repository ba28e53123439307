"""``intake``: complaints published to RabbitMQ, admitted into PostgreSQL by the real consumer.

Each round publishes N ``complaint.submitted`` messages (persistent, to a private durable queue
bound to a private topic exchange, so no other consumer of ``op.intake`` is disturbed), then
starts the intake consumer (two processes, as deployed for fail-over: the queue has a single
active consumer, so one admits and the other stands by) and waits until every message has its
``processed_message`` row. Then the same N complaints are published again under new message
ids — business duplicates — and must all be refused (no new ticket). Rates come from the rows'
commit times (first to last), so process start-up is not counted.

The baseline is a no-op kombu consumer on the same queue and messages (consume + ack).
"""
from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime

from kombu import Connection, Exchange, Producer, Queue

from workers.intake import ORDERED
from tools.bench.core import (BenchError, Outcome, Procs, Row, Servers, child_env, flush_redis,
                                 fresh_database, make_app, median, pg_connect, ratio, scalar, wait_until, workdir)

DATABASE = "disputes_bench_intake"
REDIS_DB = 13
PROCESSES = [sys.executable, "-m", "tools.bench.processes"]
#: Intake consumer processes: one active, one standby (README "Intake order").
CONSUMERS = 2


@dataclass(frozen=True)
class Sizes:
    complaints: int
    rounds: int
    timeout: float = 180.0


FULL = Sizes(complaints=10_000, rounds=3)
QUICK = Sizes(complaints=400, rounds=3, timeout=60.0)


def run(servers: Servers, quick: bool) -> Outcome:
    sizes = QUICK if quick else FULL
    broker_url = servers.redis_url(REDIS_DB)
    flush_redis(broker_url)
    tag = uuid.uuid4().hex[:8]
    exchange = Exchange(f"bench.intake.{tag}", type="topic", durable=True)
    # Declared as the real intake queue is (a single active consumer: the second process stands by).
    queue = Queue(f"bench.intake.{tag}", exchange=exchange, routing_key="#", durable=True, queue_arguments=ORDERED)
    with fresh_database(servers, DATABASE) as db_url, workdir("intake") as tmp, Procs(tmp) as procs, \
            Connection(servers.amqp) as connection:
        make_app(db_url, broker_url)
        env = child_env(OP_DATABASE_URL=db_url, OP_BROKER_URL=broker_url, OP_INTAKE_URL=servers.amqp)
        channel = connection.channel()
        bound = queue(channel)
        bound.declare()
        producer = Producer(channel, exchange=exchange)
        conn = pg_connect(db_url)
        fresh, dupes, raw = [], [], []
        try:
            for n in range(sizes.rounds):
                source = f"bench-{tag}-{n}"
                raw.append(_raw_round(producer, procs, env, queue, exchange, sizes, source))
                fresh.append(_round(producer, procs, env, conn, queue, exchange, sizes, source, duplicate=False))
                dupes.append(_round(producer, procs, env, conn, queue, exchange, sizes, source, duplicate=True))
        finally:
            conn.close()
            bound.delete()
            exchange(channel).delete()
    ours, dup, base = median([r["per_s"] for r in fresh]), median([r["per_s"] for r in dupes]), median(raw)
    new_tickets = sum(r["new_tickets"] for r in dupes)
    rows = [
        Row("intake", "complaints admitted/s", "1/s", ours, base, "no-op kombu consumer", ratio(ours, base),
            "≥ 0.25 × no-op and ≥ 2,000/s", ours >= 2000 and ours >= 0.25 * base, [r["per_s"] for r in fresh], raw),
        Row("intake", "duplicates refused/s", "1/s", dup, base, "no-op kombu consumer", ratio(dup, base),
            "≥ 0.4 × no-op, all refused", dup >= 0.4 * base and new_tickets == 0, [r["per_s"] for r in dupes], raw),
    ]
    return Outcome("intake", rows, {"sizes": sizes.__dict__, "admitted": fresh, "duplicates": dupes,
                                    "duplicates_that_made_a_ticket": new_tickets, "raw_per_s": raw})


def _complaint(source: str, i: int) -> bytes:
    return json.dumps({
        "schema_version": 1, "source": source, "external_ref": f"c{i}", "channel": "app",
        "order": {"order_id": f"{source}-o{i}", "amount": 10000, "currency": "CNY", "category": "apparel",
                  "delivery": "platform", "status": "delivered"},
        "user_id": f"u{i}", "merchant_id": f"m{i % 97}", "dispute_type": "quality", "claimed_amount": 6000,
        "description": "the seams came apart on first wash", "negotiation": "pending" if i % 4 else "failed",
        "occurred_at": "2026-11-20T10:00:00+08:00"}).encode()


def _publish(producer, sizes: Sizes, source: str, prefix: str) -> None:
    for i in range(sizes.complaints):
        producer.publish(_complaint(source, i), routing_key="complaint.submitted", message_id=f"{prefix}-{i}",
                         delivery_mode=2, content_type="application/json", content_encoding="utf-8")


def _round(producer, procs: Procs, env: dict, conn, queue, exchange, sizes: Sizes, source: str, *,
           duplicate: bool) -> dict:
    prefix = f"{source}-{'dup' if duplicate else 'new'}"
    tickets_before = scalar(conn, "SELECT count(*) FROM ticket")
    _publish(producer, sizes, source, prefix)
    consumers = [procs.start("intake", PROCESSES + ["intake", queue.name, exchange.name], env)
                 for _ in range(CONSUMERS)]
    like = f"{prefix}-%"

    def done() -> bool:
        return scalar(conn, "SELECT count(*) FROM processed_message WHERE message_id LIKE %s", (like,)) \
            >= sizes.complaints

    try:
        # Not too often: the count scans the table, on the cores the intake and PostgreSQL share, and the
        # rate comes from the rows' commit times, not from when this noticed.
        wait_until(done, sizes.timeout, f"{sizes.complaints} complaints admitted", interval=0.5, check=procs.check)
    finally:
        for consumer in consumers:
            procs.stop(consumer)
            procs.finished(consumer)
    with conn.cursor() as cur:
        cur.execute("SELECT min(processed_at), max(processed_at) FROM processed_message WHERE message_id LIKE %s",
                    (like,))
        first, last = cur.fetchone()
    rejected = scalar(conn, "SELECT count(*) FROM rejected_message WHERE message_id LIKE %s", (like,))
    new_tickets = scalar(conn, "SELECT count(*) FROM ticket") - tickets_before
    if rejected:
        raise BenchError(f"{rejected} complaints were rejected: see rejected_message")
    span = (last - first).total_seconds() if isinstance(first, datetime) else 0.0
    return {"per_s": (sizes.complaints - 1) / span if span > 0 else float("inf"), "seconds": round(span, 3),
            "new_tickets": new_tickets}


def _raw_round(producer, procs: Procs, env: dict, queue, exchange, sizes: Sizes, source: str) -> float:
    _publish(producer, sizes, f"{source}-raw", f"{source}-raw")
    out = procs.logdir / f"raw-{source}.json"
    consumer = procs.start("raw-intake", PROCESSES + ["raw-intake", queue.name, exchange.name,
                                                      str(sizes.complaints), str(out)], env)
    try:
        consumer.wait(timeout=sizes.timeout)
    except Exception as error:  # noqa: BLE001
        raise BenchError("the no-op consumer did not finish") from error
    procs.finished(consumer)
    seen = json.loads(out.read_text())
    if seen["count"] < sizes.complaints:
        raise BenchError(f"the no-op consumer saw {seen['count']} of {sizes.complaints} messages")
    return (seen["count"] - 1) / max(seen["last"] - seen["first"], 1e-6)
