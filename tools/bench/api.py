"""``api``: 100 concurrent agents doing claim + action against ``disputes api`` over loopback HTTP.

``disputes api --workers 2`` (gunicorn, one process per core) runs as a child process on the benchmark's database and Redis db;
tickets wait in ``awaiting_takeover`` and ``stage2``…``stage4``, and 25 agents per stage each
keep one HTTP/1.1 connection and loop: ``POST /me/claim``, think, ``POST /tickets/{id}/actions``,
think (think time uniform in 0.5–1.5 s: a click a second per agent, 100 requests/s offered).
Every request must answer 200/202 (or 204 when nothing waits); anything else is an error.

The baseline is the same clients against a no-op WSGI app under the same server, processes and threads,
measured in the same run (rounds alternate). A saturation round — no think time — says where
the next limit is (requests/s and p99 at full load).
"""
from __future__ import annotations

import http.client
import json
import random
import socket
import sys
import threading
import time
from dataclasses import dataclass

from models.agent import add_agent
from models.base import database
from tools.bench.core import (DISPUTES, BenchError, Outcome, Procs, Row, Servers, child_env, flush_redis,
                                 fresh_database, make_app, median, percentile, ratio, wait_until, workdir)
from tools.bench.fixtures import insert_tickets

DATABASE = "disputes_bench_api"
REDIS_DB = 12
AGENTS_PER_STAGE = 25
#: Threads per API process (`desk.server.THREADS`), used for the baseline server too.
SERVER_THREADS = 8
#: ``disputes api --workers``: one process per core.
API_PROCESSES = 2
QC_OK = {"verdict": "ok"}
ACTIONS: dict[int, dict] = {
    1: {"action": "to_judgment", "params": {"dispute_status": "merchant_timed_out", "category": "apparel"}},
    2: {"action": "to_judgment", "params": {}, "qc": QC_OK},
    3: {"action": "judge", "params": {"liability": "customer", "remedy": "no_refund"}, "qc": QC_OK},
    4: {"action": "complaint_fee", "params": {"amount": 0}, "qc": QC_OK},
}
STATE_OF_STAGE = {1: "awaiting_takeover", 2: "stage2", 3: "stage3", 4: "stage4"}


@dataclass(frozen=True)
class Sizes:
    seconds: float
    rounds: int
    saturation_seconds: float
    think: tuple[float, float] = (0.5, 1.5)


FULL = Sizes(seconds=20.0, rounds=3, saturation_seconds=8.0)
QUICK = Sizes(seconds=2.5, rounds=3, saturation_seconds=1.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(servers: Servers, quick: bool) -> Outcome:
    sizes = QUICK if quick else FULL
    broker_url = servers.redis_url(REDIS_DB)
    flush_redis(broker_url)
    with fresh_database(servers, DATABASE) as db_url, workdir("api") as tmp, Procs(tmp) as procs:
        app = make_app(db_url, broker_url)
        tokens = _prepare(app, sizes)
        app.db.close_all()
        env = child_env(OP_DATABASE_URL=db_url, OP_BROKER_URL=broker_url, OP_INTAKE_URL="memory://")
        api_port, noop_port = free_port(), free_port()
        procs.start("api", DISPUTES + ["api", "--host", "127.0.0.1", "--port", str(api_port),
                                      "--workers", str(API_PROCESSES)], env)
        procs.start("noop-http", [*_python(), "-m", "tools.bench.processes", "noop-http", str(noop_port),
                                  str(SERVER_THREADS), str(API_PROCESSES)], env)
        for port in (api_port, noop_port):
            wait_until(lambda: _answers(port), 60, f"the HTTP server on port {port}", interval=0.2, check=procs.check)
        ours, base = [], []
        for _ in range(sizes.rounds):
            base.append(_round(noop_port, tokens, sizes.seconds, sizes.think))
            ours.append(_round(api_port, tokens, sizes.seconds, sizes.think))
            procs.check()
        saturation = _round(api_port, tokens, sizes.saturation_seconds, (0.0, 0.0))
        saturation_base = _round(noop_port, tokens, sizes.saturation_seconds, (0.0, 0.0))
    p99, base_p99 = median([r["p99_ms"] for r in ours]), median([r["p99_ms"] for r in base])
    errors = sum(r["errors"] for r in ours)
    rows = [
        Row("api", f"claim + action p99, {4 * AGENTS_PER_STAGE} agents", "ms", p99, base_p99, "no-op WSGI, same server",
            ratio(p99, base_p99), "≤ 3 × no-op p99, no errors", p99 <= 3 * base_p99 and errors == 0,
            [r["p99_ms"] for r in ours], [r["p99_ms"] for r in base]),
        Row("api", "saturated (no think time): requests/s", "1/s", saturation["per_s"], saturation_base["per_s"],
            "no-op WSGI, same server", ratio(saturation["per_s"], saturation_base["per_s"]),
            f"≥ 0.25 × no-op (p99 {saturation['p99_ms']:.0f} ms)",
            saturation["per_s"] >= 0.25 * saturation_base["per_s"], [saturation["per_s"]], [saturation_base["per_s"]]),
    ]
    return Outcome("api", rows, {"sizes": sizes.__dict__, "rounds": ours, "baseline_rounds": base,
                                 "errors": errors, "saturation": saturation, "saturation_baseline": saturation_base})


def _python() -> list[str]:
    return [sys.executable]


def _prepare(app, sizes: Sizes) -> dict[int, list[str]]:
    """Agents (25 per stage, their tokens) and enough waiting tickets for every claim of the run."""
    per_stage = int(AGENTS_PER_STAGE * (sizes.seconds * sizes.rounds + sizes.saturation_seconds * 20) * 1.5) + 200
    with app.db.connection_context():
        tokens = {stage: [add_agent(f"bench-s{stage}-{n}", stage, capacity=100_000) for n in range(AGENTS_PER_STAGE)]
                  for stage in (1, 2, 3, 4)}
        insert_tickets("bench-api", {STATE_OF_STAGE[stage]: per_stage for stage in (1, 2, 3, 4)})
        database.execute_sql("ANALYZE")
    return tokens


def _answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/health")
        conn.getresponse().read()
        conn.close()
        return True
    except OSError:
        return False


def _round(port: int, tokens: dict[int, list[str]], seconds: float, think: tuple[float, float]) -> dict:
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    problems: list[str] = []
    lock = threading.Lock()
    start_line = threading.Barrier(sum(len(t) for t in tokens.values()) + 1)
    stop_at = [0.0]

    def agent(stage: int, token: str, seed: int) -> None:
        r = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        mine: list[float] = []
        seen: dict[str, int] = {}

        def call(method: str, path: str, body: dict | None, ok: tuple[int, ...]) -> tuple[int, dict | None]:
            data = json.dumps(body).encode() if body is not None else b""
            t0 = time.perf_counter()
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            mine.append((time.perf_counter() - t0) * 1000)
            key = f"{path.split('/')[1]}:{response.status}"
            seen[key] = seen.get(key, 0) + 1
            if response.status not in ok:
                with lock:
                    problems.append(f"{method} {path} -> {response.status} {payload[:200]!r}")
            try:
                return response.status, json.loads(payload) if payload else None
            except ValueError:
                return response.status, None

        start_line.wait()
        try:
            while time.monotonic() < stop_at[0]:
                status, ticket = call("POST", "/me/claim", None, (200, 204))
                time.sleep(r.uniform(*think))
                if status == 200 and isinstance(ticket, dict) and "id" in ticket:
                    body = dict(ACTIONS[stage], expected_version=ticket["version"])
                    call("POST", f"/tickets/{ticket['id']}/actions", body, (202,))
                    time.sleep(r.uniform(*think))
        except OSError as error:
            with lock:
                problems.append(f"connection: {error!r}")
        finally:
            conn.close()
            with lock:
                latencies.extend(mine)
                for key, n in seen.items():
                    statuses[key] = statuses.get(key, 0) + n

    threads = [threading.Thread(target=agent, args=(stage, token, stage * 1000 + n), daemon=True)
               for stage, pool in tokens.items() for n, token in enumerate(pool)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.monotonic() + seconds
    start_line.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join(timeout=seconds + 60)
    elapsed = time.perf_counter() - began
    if not latencies:
        raise BenchError(f"no request answered on port {port}: {problems[:3]}")
    return {"requests": len(latencies), "per_s": len(latencies) / elapsed, "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99), "max_ms": max(latencies), "errors": len(problems),
            "statuses": statuses, "first_errors": problems[:5]}
