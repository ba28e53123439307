"""``scheduler``: a slice of timers falling due at once among 1,000,000 pending ones.

``disputes scheduler`` runs as a child process on the benchmark's PostgreSQL database and Redis
db (no stage workers: the wake messages stay queued). Each round inserts a slice of timers all due
at the same instant, one second ahead, and waits until every one became a sent ``wake``
dispatch. Figures, from the database: due timers per second (the slice over the time from its
due instant to its last send), lag from due time to enqueue (p99), and the scheduler's resident
memory with a small backlog and with the full one (flat means their ratio stays near 1).

The baseline is the raw floor of the same work in this process: SELECT a due slice of the same
size from the same table and enqueue one dramatiq message per row, with no bookkeeping.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import dramatiq

from models.base import database
from models.timer import Timer
from tools.bench.core import (DISPUTES, Outcome, Procs, Row, Servers, child_env, flush_redis, fresh_database,
                                 make_app, median, pg_connect, percentile, ratio, rss_kb, scalar, wait_until,
                                 workdir)

DATABASE = "disputes_bench_scheduler"
REDIS_DB = 11


@dataclass(frozen=True)
class Sizes:
    pending: int
    slice: int
    rounds: int
    timeout: float = 120.0


FULL = Sizes(pending=1_000_000, slice=5_000, rounds=3)
QUICK = Sizes(pending=20_000, slice=2_000, rounds=3, timeout=60.0)

_INSERT = """
INSERT INTO timer (ticket_id, action, state, state_version, queue, due_at, status, created_at)
SELECT %(base)s + g, 'evidence_deadline', %(state)s, 1, 'stage2', %(due)s, %(status)s, now() AT TIME ZONE 'utc'
FROM generate_series(1, %(count)s) AS g
"""


def run(servers: Servers, quick: bool) -> Outcome:
    sizes = QUICK if quick else FULL
    broker_url = servers.redis_url(REDIS_DB)
    flush_redis(broker_url)
    with fresh_database(servers, DATABASE) as db_url, workdir("scheduler") as tmp, Procs(tmp) as procs:
        app = make_app(db_url, broker_url)
        conn = pg_connect(db_url)
        env = child_env(OP_DATABASE_URL=db_url, OP_BROKER_URL=broker_url, OP_INTAKE_URL="memory://",
                        OP_REDRIVE_AFTER="3600")
        scheduler = procs.start("scheduler", DISPUTES + ["scheduler"], env)
        small = [_round(conn, sizes, f"small{n}", broker_url, procs, scheduler.pid) for n in range(sizes.rounds)]
        started = time.perf_counter()
        _insert(conn, sizes.pending, "far", "pending", due="now() AT TIME ZONE 'utc' + interval '30 days'", base=0)
        with conn.cursor() as cur:
            cur.execute("ANALYZE timer")
        load_seconds = time.perf_counter() - started
        large, raw = [], []
        for n in range(sizes.rounds):
            large.append(_round(conn, sizes, f"large{n}", broker_url, procs, scheduler.pid))
            raw.append(_raw_floor(conn, app.broker, sizes.slice, n))
            flush_redis(broker_url)
        conn.close()
        app.broker.close()
    rate, base = median([r["per_s"] for r in large]), median(raw)
    lag = median([r["lag_p99_s"] for r in large])
    rss_small, rss_large = median([r["rss_kb"] for r in small]), median([r["rss_kb"] for r in large])
    rss_ratio = rss_large / rss_small if rss_small else float("nan")
    rows = [
        Row("scheduler", f"due timers/s ({sizes.pending:,} pending)", "1/s", rate, base, "raw SELECT + enqueue, one by one",
            ratio(rate, base), "≥ 0.9 × raw and ≥ 5,000/s", rate >= 5000 and rate >= 0.9 * base, [r["per_s"] for r in large], raw),
        Row("scheduler", "lag due → enqueue p99", "s", lag, median([r["lag_p99_s"] for r in small]),
            f"same, {sizes.slice:,} pending", ratio(lag, median([r["lag_p99_s"] for r in small])), "≤ 1 s", lag <= 1.0,
            [r["lag_p99_s"] for r in large], [r["lag_p99_s"] for r in small]),
        Row("scheduler", "scheduler RSS", "MiB", rss_large / 1024, rss_small / 1024,
            f"same, {sizes.slice:,} pending", rss_ratio, "flat (≤ 1.1 ×)", rss_ratio <= 1.1,
            [r["rss_kb"] / 1024 for r in large], [r["rss_kb"] / 1024 for r in small]),
    ]
    return Outcome("scheduler", rows, {"sizes": sizes.__dict__, "load_seconds": round(load_seconds, 1),
                                       "small_backlog": small, "large_backlog": large, "raw_per_s": raw})


def _insert(conn, count: int, state: str, status: str, *, due: str, base: int) -> None:
    with conn.cursor() as cur:
        cur.execute(_INSERT.replace("%(due)s", due), {"base": base, "state": state, "status": status, "count": count})


def _round(conn, sizes: Sizes, tag: str, broker_url: str, procs: Procs, pid: int) -> dict:
    """One slice due at one instant; wait for every dispatch to be sent; lag and rate from the rows."""
    flush_redis(broker_url)
    due = scalar(conn, "SELECT date_trunc('milliseconds', now() AT TIME ZONE 'utc' + interval '1 second')")
    _insert(conn, sizes.slice, tag, "pending", due=f"'{due.isoformat()}'::timestamp", base=10_000_000)
    peak = [rss_kb(pid)]

    def all_sent() -> bool:
        peak.append(rss_kb(pid))
        sent = scalar(conn, "SELECT count(*) FROM dispatch d JOIN timer t ON t.id = (d.payload::json->>'timer_id')::int "
                            "WHERE t.state = %s AND d.sent_at IS NOT NULL", (tag,))
        return sent >= sizes.slice

    wait_until(all_sent, sizes.timeout, f"{sizes.slice} timers to fire", interval=0.05, check=procs.check)
    with conn.cursor() as cur:
        cur.execute("SELECT EXTRACT(EPOCH FROM d.sent_at - t.due_at) FROM dispatch d "
                    "JOIN timer t ON t.id = (d.payload::json->>'timer_id')::int WHERE t.state = %s", (tag,))
        lags = [float(r[0]) for r in cur.fetchall()]
    span = max(lags)
    return {"per_s": sizes.slice / span if span > 0 else float("inf"), "lag_p50_s": percentile(lags, 50),
            "lag_p99_s": percentile(lags, 99), "lag_max_s": span, "rss_kb": max(peak)}


def _raw_floor(conn, broker: dramatiq.Broker, count: int, n: int) -> float:
    """SELECT a due slice and enqueue a message per row: what turning rows into messages costs at least."""
    tag = f"raw{n}"
    _insert(conn, count, tag, "raw", due="now() AT TIME ZONE 'utc' - interval '1 second'", base=20_000_000)
    start = time.perf_counter()
    with database.connection_context():
        rows = list(Timer.select(Timer.id, Timer.queue).where((Timer.status == "raw") & (Timer.state == tag))
                    .order_by(Timer.due_at).limit(count).tuples())
    for timer_id, queue in rows:
        broker.enqueue(dramatiq.Message(queue_name=queue, actor_name="stage2_handle", args=(timer_id,), kwargs={},
                                        options={}))
    return len(rows) / (time.perf_counter() - start)
