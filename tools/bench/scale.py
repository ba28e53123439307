"""``scale``: what one state change costs with 10,000 tickets stored, and with 1,000,000.

The stored tickets look like a platform's history: 86 % closed, the rest waiting on the floor
(``awaiting_takeover``, ``stage2``…``stage4``), each with an audit row. A round takes tickets
through three changes on the code paths production uses — a stage-1 agent's claim
(`desk.claims.claim_next`, which picks the oldest waiting ticket), ``request_evidence`` and the
buyer's ``submit_evidence`` (`models.workflow.apply`) — and divides the time by the changes.
The table is then grown to the large size by ``INSERT ... SELECT`` copies and the rounds repeat.

Figures: cost per change at the large size beside the same at the small size (ratio target
≤ 1.2); and, as a detail, the database's own floor (one UPDATE + one INSERT, one transaction).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from desk.claims import claim_next
from models.agent import add_agent
from models.agent import Agent
from models.audit import TicketEvent
from models.base import database
from models.change import Actor, Role
from models.sending import send_dispatches
from models.ticket import Ticket
from models.workflow import apply
from tools.bench.core import Outcome, Row, Servers, fresh_database, make_app, median, pg_connect, ratio, scalar
from tools.bench.fixtures import columns_of, copy_rows_sql, insert_tickets

DATABASE = "disputes_bench_scale"
SEED_SHARES = {"closed": 86, "awaiting_takeover": 8, "stage2": 2, "stage3": 2, "stage4": 2}
REQUEST = {"dispute_status": "merchant_timed_out", "category": "apparel", "from": "user", "items": ["photo"]}
EVIDENCE = {"party": "user", "items": [{"kind": "photo", "uri": "https://files.example/p.jpg"}]}


@dataclass(frozen=True)
class Sizes:
    small: int
    large: int
    tickets_per_round: int
    rounds: int


FULL = Sizes(small=10_000, large=1_000_000, tickets_per_round=200, rounds=3)
QUICK = Sizes(small=2_000, large=40_000, tickets_per_round=50, rounds=3)


def run(servers: Servers, quick: bool) -> Outcome:
    sizes = QUICK if quick else FULL
    with fresh_database(servers, DATABASE) as db_url:
        app = make_app(db_url, "memory://")
        conn = pg_connect(db_url)
        with app.db.connection_context():
            add_agent("bench-scale-1", 1, capacity=10_000_000)
            agent = Agent.get(Agent.name == "bench-scale-1")
            insert_tickets("bench-scale", {state: sizes.small * share // 100 for state, share in SEED_SHARES.items()})
        _audit_rows(conn, app, 0)
        _analyze(conn)
        small = [_round(app, agent, sizes.tickets_per_round) for _ in range(sizes.rounds)]
        small_floor = [_floor(app, sizes.tickets_per_round) for _ in range(sizes.rounds)]
        started = time.perf_counter()
        _grow(conn, app, sizes.large // sizes.small)
        grow_seconds = time.perf_counter() - started
        stored = scalar(conn, "SELECT count(*) FROM ticket")
        large = [_round(app, agent, sizes.tickets_per_round) for _ in range(sizes.rounds)]
        large_floor = [_floor(app, sizes.tickets_per_round) for _ in range(sizes.rounds)]
        conn.close()
    ms_small, ms_large = median([r["ms_per_change"] for r in small]), median([r["ms_per_change"] for r in large])
    floor_small, floor_large = median(small_floor), median(large_floor)
    rows = [
        Row("scale", f"ms per state change, {stored:,} stored", "ms", ms_large, ms_small,
            f"same, {sizes.small:,} stored", ratio(ms_large, ms_small), "ratio ≤ 1.2",
            (ms_large / ms_small) <= 1.2 if ms_small else None,
            [r["ms_per_change"] for r in large], [r["ms_per_change"] for r in small]),
        Row("scale", f"ms per UPDATE + INSERT (floor), {stored:,} stored", "ms", floor_large, floor_small,
            f"same, {sizes.small:,} stored", ratio(floor_large, floor_small), "", None, large_floor, small_floor),
    ]
    return Outcome("scale", rows, {"sizes": sizes.__dict__, "stored": stored, "grow_seconds": round(grow_seconds, 1),
                                   "small": small, "large": large})


def _analyze(conn) -> None:
    with conn.cursor() as cur:
        cur.execute("ANALYZE")


def _audit_rows(conn, app, after_id: int) -> None:
    """One ``submit`` audit row per ticket above `after_id`, copied from a template row."""
    with app.db.connection_context():
        template = TicketEvent.select().first()
        if template is None:
            first = Ticket.select().order_by(Ticket.id).first()
            template = TicketEvent.create(ticket=first.id, version=1, from_state=None, to_state=first.state,
                                          actor="system", action="submit")
            after_id = first.id
    columns = columns_of(TicketEvent)
    sql = copy_rows_sql("ticket_event", columns, {"ticket_id": "t.id", "to_state": "t.state", "at": "t.created_at"},
                        f"ticket t CROSS JOIN (SELECT * FROM ticket_event WHERE id = {template.id}) s "
                        f"WHERE t.id > {int(after_id)}")
    with conn.cursor() as cur:
        cur.execute(sql)


def _grow(conn, app, factor: int) -> None:
    """Copies of the seed tickets (every column) until the table holds `factor` times as many."""
    before = scalar(conn, "SELECT max(id) FROM ticket")
    columns = columns_of(Ticket)
    sql = copy_rows_sql("ticket", columns, {
        "source": "'bench-scale-' || g", "order_id": "s.order_id || '-' || g"},
        f"ticket s CROSS JOIN generate_series(1, {factor - 1}) AS g WHERE s.source = 'bench-scale'")
    with conn.cursor() as cur:
        cur.execute(sql)
    _audit_rows(conn, app, int(before))
    _analyze(conn)


def _round(app, agent, tickets: int) -> dict:
    stage1 = Actor.agent(1, agent.id)
    timings = {"claim": 0.0, "request_evidence": 0.0, "submit_evidence": 0.0}
    with app.db.connection_context():
        for _ in range(tickets):
            t0 = time.perf_counter()
            ticket = claim_next(agent, app)
            t1 = time.perf_counter()
            assert ticket is not None, "the scale benchmark ran out of waiting tickets"
            outcome = apply(ticket.id, "request_evidence", stage1, REQUEST, app.policy)
            send_dispatches(app.broker, outcome.dispatches)
            t2 = time.perf_counter()
            outcome = apply(ticket.id, "submit_evidence", Actor(Role.USER), EVIDENCE, app.policy)
            send_dispatches(app.broker, outcome.dispatches)
            t3 = time.perf_counter()
            timings["claim"] += t1 - t0
            timings["request_evidence"] += t2 - t1
            timings["submit_evidence"] += t3 - t2
    for queue in app.broker.queues:
        app.broker.flush(queue)
    total = sum(timings.values())
    return {"ms_per_change": total / (3 * tickets) * 1000,
            **{f"{k}_ms": v / tickets * 1000 for k, v in timings.items()}}


def _floor(app, count: int) -> float:
    """Milliseconds per raw UPDATE + INSERT in one transaction on waiting tickets: the least a change costs."""
    with app.db.connection_context():
        ids = [t.id for t in Ticket.select(Ticket.id).where(Ticket.state == "stage3").order_by(Ticket.id).limit(count)]
        start = time.perf_counter()
        for ticket_id in ids:
            with database.atomic():
                Ticket.update(version=Ticket.version + 1).where(Ticket.id == ticket_id).execute()
                version = Ticket.select(Ticket.version).where(Ticket.id == ticket_id).scalar()
                TicketEvent.insert(ticket=ticket_id, version=version, from_state="stage3", to_state="stage3",
                                   actor="bench", action="floor").execute()
        return (time.perf_counter() - start) / max(len(ids), 1) * 1000
