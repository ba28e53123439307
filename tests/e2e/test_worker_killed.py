"""A stage worker SIGKILLed mid-flight, on RabbitMQ + Redis + PostgreSQL.

Thirty tickets are taken over by a stage-1 agent and sent to judgment through the API while the
stage-1 worker is down, so thirty decisions wait in its Redis queue. The test then holds row
locks on every other ticket (a plain ``SELECT ... FOR UPDATE`` from the test, no production code
changed), starts the stage-1 worker, and waits until all of its threads are stuck inside a
transaction (the dispatch claimed, the ticket UPDATE waiting on the lock) with the rest of its
messages prefetched, unacknowledged, in its memory. Then the whole ``dramatiq`` process group is
SIGKILLed, the locks are released, and a fresh stage-1 worker is started.

Nothing redelivers the dead worker's messages soon (dramatiq's Redis broker re-queues them only
after its heartbeat times out and a random maintenance pass runs), so the scheduler's reconciler
must re-drive every dispatch not done — after ``OP_REDRIVE_AFTER`` (5 s in these tests).
"""
from __future__ import annotations

import time
from contextlib import closing
from collections import Counter, defaultdict

import pytest

from tests.e2e.conftest import Stack, complaint_body, wait_for

pytestmark = pytest.mark.servers

TICKETS = 30
THREADS = 4
#: OP_REDRIVE_AFTER as the e2e stack sets it for `disputes scheduler`.
REDRIVE_AFTER = 5.0


def test_stage_worker_sigkilled_mid_flight_loses_nothing_and_applies_nothing_twice(stack: Stack) -> None:
    from models.audit import TicketEvent
    from models.outbox import Dispatch
    from models.ticket import Ticket

    db = stack.app.db
    stack.start_intake()
    stack.start_scheduler()
    stack.start_workers("stage3", ["workers.stage3"], queues=["stage3"], threads=THREADS)
    (s1,) = stack.add_agents(("e2e-s1", 1, TICKETS + 10))

    # Thirty complaints straight to the floor.
    bodies = [complaint_body(negotiation="failed") for _ in range(TICKETS)]
    for body in bodies:
        stack.publish("complaint.submitted", body)

    def all_waiting() -> bool:
        with db.connection_context():
            return Ticket.select().where(Ticket.state == "awaiting_takeover").count() == TICKETS
    wait_for(all_waiting, 30, f"{TICKETS} tickets in awaiting_takeover", on_timeout=stack.logs)

    # The stage-1 agent takes all of them over and decides each — while the stage-1 worker is
    # down, so every decision waits in the stage1 queue.
    options = stack.api("GET", "/options/stage1", s1, expect=200)[1]
    to_judgment = next(a for a in options["actions"] if a["action"] == "to_judgment")
    params = {name: spec["choices"][0]["code"] for name, spec in to_judgment["params"].items()}
    tickets = []
    for _ in range(TICKETS):
        claimed = stack.api("POST", "/me/claim", s1, expect=200)[1]
        assert claimed["state"] == "stage1" and claimed["assignee"] == s1.id
        tickets.append(claimed)
    ids = [t["id"] for t in tickets]
    assert len(set(ids)) == TICKETS
    posted_at = time.monotonic()
    for t in tickets:
        stack.api("POST", f"/tickets/{t['id']}/actions", s1,
                  {"action": "to_judgment", "expected_version": t["version"], "params": params}, expect=202)

    # Lock every other ticket, then let a stage-1 worker at them.
    locked = ids[1::2]
    lock = stack.servers.pg_connect(search_path=stack.schema)
    try:
        with lock.cursor() as cur:
            cur.execute("SELECT id FROM ticket WHERE id = ANY(%s) FOR UPDATE", (locked,))
            assert len(cur.fetchall()) == len(locked)
            lock_pid = lock.get_backend_pid()
        victim = stack.start_workers("stage1", ["workers.stage1"], queues=["stage1"], threads=THREADS)

        def blocked_on_lock() -> list[int] | None:
            """The tickets whose decisions the worker's threads hold mid-transaction: their dispatch
            rows are claimed (row-locked, not committed) by backends waiting on the test's lock."""
            with closing(stack.servers.pg_connect(search_path=stack.schema)) as watch, watch.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", (lock_pid,))
                if cur.fetchone()[0] < THREADS:
                    return None
                cur.execute("SELECT ticket_id FROM dispatch WHERE kind = 'act' AND done_at IS NULL")
                undone = {row[0] for row in cur.fetchall()}
                cur.execute("SELECT ticket_id FROM dispatch WHERE kind = 'act' AND done_at IS NULL "
                            "FOR SHARE SKIP LOCKED")
                free = {row[0] for row in cur.fetchall()}
                watch.rollback()
            return sorted(undone - free)
        in_flight = wait_for(blocked_on_lock, 30, f"all {THREADS} stage-1 worker threads to block mid-transaction",
                             on_timeout=stack.logs)
        assert len(in_flight) == THREADS and set(in_flight) <= set(locked), (in_flight, locked)
        with db.connection_context():
            applied_before_kill = {e.ticket_id for e in TicketEvent.select().where(TicketEvent.action == "to_judgment")}
            claimed_in_flight = {d.ticket_id for d in Dispatch.select().where(
                (Dispatch.kind == "act") & Dispatch.done_at.is_null(False))}
        assert 0 < len(applied_before_kill) < TICKETS
        assert not applied_before_kill & set(locked)
        # The in-flight claims are not committed: nobody else sees those dispatches as done.
        assert claimed_in_flight == applied_before_kill

        victim.kill()  # SIGKILL: dramatiq's parent and its worker process, mid-flight
        assert victim.popen.returncode == -9
    finally:
        lock.rollback()
        lock.close()

    # The killed transactions roll back: nothing half-applied, their dispatches still to do.
    def orphans_gone() -> bool:
        with closing(stack.servers.pg_connect()) as watch, watch.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE state <> 'idle' AND query LIKE 'UPDATE \"ticket\"%'")
            return cur.fetchone()[0] == 0
    wait_for(orphans_gone, 10, "the killed worker's transactions to end")
    with db.connection_context():
        states = {t.id: t.state for t in Ticket.select().where(Ticket.id.in_(locked))}
        assert set(states.values()) == {"stage1"}, states
        undone = (Dispatch.select().where((Dispatch.kind == "act") & Dispatch.done_at.is_null()
                                          & Dispatch.ticket_id.in_(locked)).count())
        assert undone == len(locked)

    stack.start_workers("stage1", ["workers.stage1"], queues=["stage1"], threads=THREADS)

    # The reconciler re-drives what the dead worker held; everything reaches stage 3.
    def all_judged() -> bool:
        with db.connection_context():
            moved = Ticket.select().where(Ticket.id.in_(ids) & (Ticket.state == "stage3")).count()
            open_dispatches = Dispatch.select().where(Dispatch.done_at.is_null()).count()
        return moved == TICKETS and open_dispatches == 0
    remaining = REDRIVE_AFTER - (time.monotonic() - posted_at)
    wait_for(all_judged, remaining + 25, "every ticket in stage3 and every dispatch done", interval=0.5,
             on_timeout=stack.logs)
    stack.assert_alive()

    with db.connection_context():
        # (ticket, version) is unique and each trail is exactly submit, take_over, to_judgment.
        rows = list(TicketEvent.select().where(TicketEvent.ticket.in_(ids))
                    .order_by(TicketEvent.ticket, TicketEvent.version))
        counts = Counter((r.ticket_id, r.version) for r in rows)
        assert max(counts.values()) == 1
        trails: dict[int, list[TicketEvent]] = defaultdict(list)
        for r in rows:
            trails[r.ticket_id].append(r)
        for tid in ids:
            trail = trails[tid]
            steps = [(r.action, r.from_state, r.to_state) for r in trail]
            assert steps == [("submit", None, "awaiting_takeover"), ("take_over", "awaiting_takeover", "stage1"),
                             ("to_judgment", "stage1", "stage3")], (tid, steps)
            assert [r.version for r in trail] == [1, 2, 3]
            for previous, current in zip(trail, trail[1:]):
                assert not (previous.from_state, previous.to_state, previous.action) == \
                    (current.from_state, current.to_state, current.action), (tid, steps)
        # Every dispatch done, none dead or refused; the locked tickets' decisions were sent again.
        dispatches = list(Dispatch.select())
        assert all(d.done_at is not None for d in dispatches)
        assert [d.outcome for d in dispatches if d.outcome != "applied"] == []
        acts = {d.ticket_id: d for d in dispatches if d.kind == "act"}
        assert sorted(acts) == sorted(ids)
        # What the killed worker held mid-transaction came back only through the reconciler.
        assert all(acts[tid].attempts >= 2 for tid in in_flight), {tid: acts[tid].attempts for tid in in_flight}
        assert all(acts[tid].attempts == 1 for tid in applied_before_kill)

    # Downstream saw each transition once.
    def stage3_published() -> list | None:
        events = [b for k, b in stack.tap.drain() if k == "ticket.stage3"]
        return events if len({b["ticket_id"] for b in events}) == TICKETS else None
    stage3_events = wait_for(stage3_published, 15, "a ticket.stage3 event per ticket")
    per_ticket = Counter(b["ticket_id"] for b in stage3_events)
    assert set(per_ticket) == set(ids) and max(per_ticket.values()) == 1, per_ticket
    assert all(b["from_state"] == "stage1" and b["version"] == 3 for b in stage3_events)
