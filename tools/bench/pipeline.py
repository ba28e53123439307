"""``pipeline``: whole lifecycles on Redis + PostgreSQL, stage workers as separate processes.

Each ticket goes intake → negotiation timeout (the scheduler, a ``1s`` deadline) → takeover →
stage 1 → evidence (the buyer answers through the intake) → stage 2 → stage 3 → stage 4 →
closed: eleven committed state changes. Stage workers are ``dramatiq workers.<queue>
tools.bench.chain_entry --queues <queue>`` processes, one per queue as in the Procfile; the
scheduler is ``disputes scheduler``. Auto-acting agents in this process take the API's code path
(`desk.claims.claim_next`, `desk.actions.submit_action`) without HTTP, one thread per agent.
Complaints and the buyers' evidence go in through the intake's batch admission
(`workers.intake.Intake.admit_batch`, up to 64 messages per transaction, as its consumer admits
what the broker prefetched).

Two baselines (`tools.bench.chain`), chains with as many hops as a lifecycle has state changes,
through the same queues, served by the same worker processes and threads, measured in the same
run (rounds alternate no-op chain, persisted-hop chain, pipeline; as many chains as tickets):

* the persisted-hop chain, the naive persisted worker: each hop is one PostgreSQL transaction
  (a guarded ``UPDATE`` of its chain's row + an ``INSERT`` of an audit row, plain SQL on the
  worker thread's psycopg2 connection), then the send of the next hop. The headline: a state change
  should cost about what such a hop costs (target ≥ 0.5 × its hops/s);
* the no-op chain, the raw ceiling of dramatiq: a hop only sends the next one. Shown for
  information, for the pipeline and for the persisted hop (what a transaction per hop costs).

Figures: state changes per second vs chain hops per second (medians of the rounds; the JSON
keeps every round); per-stage latency is the time from a dispatch's commit to its handler's commit.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass

from desk.actions import submit_action
from desk.claims import claim_next
from desk.errors import ApiError
from models.agent import add_agent
from disputes.settings import QUEUES
from models.agent import Agent
from models.ticket import Ticket
from policy import load_policy
from tools.bench import chain
from tools.bench.core import (DISPUTES, DRAMATIQ, BenchError, Outcome, Procs, Row, Servers, child_env,
                                 flush_redis, fresh_database, make_app, median, pg_connect, percentile, ratio,
                                 scalar, wait_until, workdir, write_policy)
from workers.intake import Delivery, Intake

DATABASE = "disputes_bench_pipeline"
REDIS_DB = 10
#: State changes of one lifecycle (submit, merchant_response_deadline, take_over, request_evidence,
#: submit_evidence, claim, to_judgment, claim, judge, claim, complaint_fee).
CHANGES_PER_TICKET = 11
QC_OK = {"verdict": "ok"}
#: Messages the intake admits together, as its consumer does with what the broker prefetched
#: (`workers.intake`: at most 64 per transaction).
INTAKE_BATCH = 64
DECISIONS: dict[int, dict] = {
    1: {"action": "request_evidence", "params": {"dispute_status": "merchant_timed_out", "category": "apparel",
                                                 "from": "user", "items": ["photo"]}},
    2: {"action": "to_judgment", "params": {}, "qc": QC_OK},
    3: {"action": "judge", "params": {"liability": "customer", "remedy": "no_refund"}, "qc": QC_OK},
    4: {"action": "complaint_fee", "params": {"amount": 0}, "qc": QC_OK},
}


@dataclass(frozen=True)
class Sizes:
    tickets: int
    rounds: int
    processes: int = 1
    threads: int = 8
    agents_per_stage: int = 2
    timeout: float = 240.0


FULL = Sizes(tickets=1000, rounds=3)
QUICK = Sizes(tickets=40, rounds=3, timeout=60.0)


def run(servers: Servers, quick: bool) -> Outcome:
    sizes = QUICK if quick else FULL
    broker_url = servers.redis_url(REDIS_DB)
    flush_redis(broker_url)
    with fresh_database(servers, DATABASE) as db_url, workdir("pipeline") as tmp, Procs(tmp) as procs:
        policy_path = write_policy(tmp, merchant_response="1s")
        app = make_app(db_url, broker_url, policy=load_policy(str(policy_path)))
        env = child_env(OP_DATABASE_URL=db_url, OP_BROKER_URL=broker_url, OP_INTAKE_URL=servers.amqp,
                        OP_POLICY=str(policy_path))
        for queue in QUEUES:
            procs.start(f"workers-{queue}", DRAMATIQ + [f"workers.{queue}", "tools.bench.chain_entry", "--queues", queue,
                                                        "--processes", str(sizes.processes),
                                                        "--threads", str(sizes.threads)], env)
        procs.start("scheduler", DISPUTES + ["scheduler"], env)
        actors = chain.declare_chain(app.broker)
        hops = chain.declare_persisted_chain(app.broker)
        conn = pg_connect(db_url)
        try:
            with conn.cursor() as cur:
                for statement in chain.HOP_SCHEMA:
                    cur.execute(statement)
            agents = _agents(app, sizes.agents_per_stage)
            _warm_up(app, actors, hops, conn, sizes.threads, procs)
            chain_rates, hop_rates, rates, hop_details, details = [], [], [], [], []
            for _ in range(sizes.rounds):
                chain_rates.append(_chain_round(app, actors, sizes.tickets, sizes.timeout, procs))
                hop_details.append(_hop_round(app, hops, conn, sizes.tickets, sizes.timeout, procs))
                hop_rates.append(hop_details[-1]["hops_per_s"])
                result = _pipeline_round(app, agents, sizes.tickets, sizes.timeout, procs)
                rates.append(result["changes_per_s"])
                details.append(result)
        finally:
            conn.close()
        app.broker.close()
    ours, hop, base = median(rates), median(hop_rates), median(chain_rates)
    hops_label = f"{len(chain.ROUTE)} hops"
    rows = [Row("pipeline", "state changes/s", "1/s", ours, hop, f"persisted-hop chain, {hops_label}",
                ratio(ours, hop), "≥ 0.5 × persisted hop", (ours / hop) >= 0.5 if hop else None, rates, hop_rates),
            Row("pipeline", "state changes/s vs raw", "1/s", ours, base, f"no-op chain, {hops_label}",
                ratio(ours, base), "", None, rates, chain_rates),
            Row("pipeline", "persisted-hop chain hops/s", "1/s", hop, base, f"no-op chain, {hops_label}",
                ratio(hop, base), "", None, hop_rates, chain_rates)]
    last = details[len(details) // 2]
    for queue, lat in last["latency_ms"].items():
        rows.append(Row("pipeline", f"{queue} latency p50 / p99", "ms", lat["p50"], None, "", None,
                        f"p99 {lat['p99']:.0f} ms", None, [lat["p99"]], []))
    return Outcome("pipeline", rows, {
        "sizes": sizes.__dict__, "rounds": details,
        "baselines": {"no_op_chain_hops_per_s": chain_rates, "persisted_hop_chain": hop_details},
        "layout": {
            "workers": {q: f"{sizes.processes} process × {sizes.threads} threads" for q in QUEUES},
            "scheduler": "disputes scheduler", "agents": f"{sizes.agents_per_stage} threads per stage, in the bench",
            "chains": f"{sizes.tickets} per round, {hops_label} through {', '.join(dict.fromkeys(chain.ROUTE))}, "
                      "in the same worker processes",
            "persisted_hop": "one transaction per hop: " + chain.HOP_UPDATE + "; " + chain.HOP_INSERT
                             + " (plain SQL on the worker thread's pooled psycopg2 connection)"}})


# ---- the baselines: the no-op chain and the persisted-hop chain -------------------------------

def _chain_round(app, actors: dict, chains: int, timeout: float, procs: Procs) -> float:
    run = uuid.uuid4().hex[:8]
    client = app.broker.client
    start = time.perf_counter()
    first = actors[chain.ROUTE[0]]
    for i in range(chains):
        first.send(run, i, 0)
    wait_until(lambda: int(client.get(chain.counter_key(run)) or 0) >= chains, timeout, "the no-op chains",
               interval=0.01, check=procs.check)
    return chains * len(chain.ROUTE) / (time.perf_counter() - start)


def _hop_round(app, hops: dict, conn, chains: int, timeout: float, procs: Procs) -> dict:
    """`chains` persisted-hop chains, one row each (inserted before the clock starts); the rate,
    then a check that every hop committed its change and its audit row exactly once."""
    run = uuid.uuid4().hex[:8]
    client = app.broker.client
    with conn.cursor() as cur:
        cur.execute("INSERT INTO bench_hop_ticket (run, state, version) SELECT %s, 'new', 0 "
                    "FROM generate_series(1, %s) RETURNING id", (run, chains))
        ids = [row[0] for row in cur.fetchall()]

    def done() -> bool:
        if int(client.get(chain.hop_failed_key(run)) or 0):
            raise BenchError("a persisted hop found its row at another version than it expected")
        return int(client.get(chain.hop_counter_key(run)) or 0) >= chains

    start = time.perf_counter()
    first = hops[chain.ROUTE[0]]
    for ticket_id in ids:
        first.send(run, ticket_id, 0)
    wait_until(done, timeout, "the persisted-hop chains", interval=0.01, check=procs.check)
    elapsed = time.perf_counter() - start
    events = scalar(conn, "SELECT count(*) FROM bench_hop_event e JOIN bench_hop_ticket t ON t.id = e.ticket_id "
                          "WHERE t.run = %s", (run,))
    finished = scalar(conn, "SELECT count(*) FROM bench_hop_ticket WHERE run = %s AND version = %s",
                      (run, len(chain.ROUTE)))
    if events != chains * len(chain.ROUTE) or finished != chains:
        raise BenchError(f"persisted-hop chains: {events} audit rows and {finished} rows at the last version, "
                         f"expected {chains * len(chain.ROUTE)} and {chains}")
    return {"chains": chains, "seconds": round(elapsed, 3), "hops": events, "hops_per_s": events / elapsed}


def _warm_up(app, actors: dict, hops: dict, conn, threads: int, procs: Procs) -> None:
    """Wait until every worker process answers (imports done, consumers running), then run a few
    persisted-hop chains outside the measured rounds (the workers' pools open their connections)."""
    run = "warmup"
    actors[chain.ROUTE[0]].send(run, 0, 0)
    wait_until(lambda: int(app.broker.client.get(chain.counter_key(run)) or 0) >= 1, 90, "the workers to start",
               interval=0.1, check=procs.check)
    _hop_round(app, hops, conn, 2 * threads, 90, procs)


# ---- the pipeline -------------------------------------------------------------------------------

def _agents(app, per_stage: int) -> dict[int, list]:
    agents: dict[int, list] = {}
    with app.db.connection_context():
        for stage in (1, 2, 3, 4):
            for n in range(per_stage):
                add_agent(f"bench-s{stage}-{n}", stage, capacity=1000)
            agents[stage] = list(Agent.select().where(Agent.stage == stage))
    return agents


def _complaint(source: str, i: int) -> bytes:
    return json.dumps({
        "schema_version": 1, "source": source, "external_ref": f"c{i}", "channel": "app",
        "order": {"order_id": f"{source}-o{i}", "amount": 10000, "currency": "CNY", "category": "apparel",
                  "delivery": "platform", "status": "delivered"},
        "user_id": f"u{i}", "merchant_id": f"m{i % 97}", "dispute_type": "quality", "claimed_amount": 6000,
        "description": "the seams came apart", "negotiation": "pending",
        "occurred_at": "2026-11-20T10:00:00+08:00"}).encode()


def _evidence(ticket_id: int) -> bytes:
    return json.dumps({"schema_version": 1, "ticket_id": ticket_id, "party": "user",
                       "items": [{"kind": "photo", "uri": f"https://files.example/{ticket_id}.jpg"}]}).encode()


def _pipeline_round(app, agents: dict[int, list], tickets: int, timeout: float, procs: Procs) -> dict:
    source = f"bench-{uuid.uuid4().hex[:8]}"
    stop = threading.Event()
    errors: list[BaseException] = []
    counts = {"claims": 0, "actions": 0, "refused": 0, "evidence": 0}
    lock = threading.Lock()

    def guarded(work):
        def body(*args):
            try:
                work(*args)
            except BaseException as error:  # noqa: BLE001 - reported, then the round fails
                errors.append(error)
                stop.set()
        return body

    def admit_all() -> None:
        intake = Intake(app)
        with app.db.connection_context():
            for first in range(0, tickets, INTAKE_BATCH):
                if stop.is_set():
                    return
                intake.admit_batch([Delivery("complaint.submitted", _complaint(source, i), f"{source}-c{i}")
                                    for i in range(first, min(first + INTAKE_BATCH, tickets))])

    def parties() -> None:
        intake = Intake(app)
        while not stop.is_set():
            with app.db.connection_context():
                waiting = [t.id for t in Ticket.select(Ticket.id).where(
                    (Ticket.source == source) & (Ticket.state == "awaiting_evidence")).limit(INTAKE_BATCH)]
                if waiting:
                    intake.admit_batch([Delivery("evidence.submitted", _evidence(ticket_id), uuid.uuid4().hex)
                                        for ticket_id in waiting])
            with lock:
                counts["evidence"] += len(waiting)
            if not waiting:
                time.sleep(0.01)

    def agent_loop(stage: int, agent) -> None:
        while not stop.is_set():
            with app.db.connection_context():
                ticket = claim_next(agent, app)
                if ticket is None:
                    idle = True
                else:
                    idle = False
                    body = dict(DECISIONS[stage], expected_version=ticket.version)
                    try:
                        submit_action(ticket.id, agent, body, app)
                        done = "actions"
                    except ApiError:
                        done = "refused"
            if idle:
                time.sleep(0.01)
                continue
            with lock:
                counts["claims"] += 1
                counts[done] += 1

    threads = [threading.Thread(target=guarded(admit_all), name="admit", daemon=True),
               threading.Thread(target=guarded(parties), name="parties", daemon=True)]
    threads += [threading.Thread(target=guarded(agent_loop), args=(stage, agent), name=f"agent-{agent.id}",
                                 daemon=True) for stage, pool in agents.items() for agent in pool]
    conn = pg_connect(app.settings.database_url)
    start = time.perf_counter()
    for thread in threads:
        thread.start()

    def all_closed() -> bool:
        if errors:
            raise BenchError(f"an agent failed: {errors[0]!r}") from errors[0]
        return scalar(conn, "SELECT count(*) FROM ticket WHERE source = %s AND state = 'closed'", (source,)) >= tickets

    try:
        wait_until(all_closed, timeout, f"{tickets} tickets to close", interval=0.05, check=procs.check)
        elapsed = time.perf_counter() - start
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    try:
        return _round_figures(conn, source, tickets, elapsed, counts)
    finally:
        conn.close()


def _round_figures(conn, source: str, tickets: int, elapsed: float, counts: dict) -> dict:
    changes = scalar(conn, "SELECT count(*) FROM ticket_event e JOIN ticket t ON t.id = e.ticket_id "
                           "WHERE t.source = %s", (source,))
    with conn.cursor() as cur:
        cur.execute("SELECT d.queue, d.kind, EXTRACT(EPOCH FROM d.done_at - d.created_at) * 1000 FROM dispatch d "
                    "JOIN ticket t ON t.id = d.ticket_id WHERE t.source = %s AND d.done_at IS NOT NULL", (source,))
        rows = cur.fetchall()
        cur.execute("SELECT EXTRACT(EPOCH FROM closed_at - created_at) FROM ticket WHERE source = %s", (source,))
        lifetimes = [float(r[0]) for r in cur.fetchall() if r[0] is not None]
    by_queue: dict[str, list[float]] = {}
    for queue, kind, ms in rows:
        if kind in ("act", "wake"):
            by_queue.setdefault(queue, []).append(float(ms))
    return {
        "tickets": tickets, "seconds": round(elapsed, 3), "state_changes": changes,
        "changes_per_s": changes / elapsed, "messages_per_ticket": len(rows) / tickets, **counts,
        "latency_ms": {q: {"p50": percentile(v, 50), "p99": percentile(v, 99), "n": len(v)}
                       for q, v in sorted(by_queue.items())},
        "lifecycle_s": {"p50": percentile(lifetimes, 50), "p99": percentile(lifetimes, 99)},
    }
