"""The chaos soak's own guarantees, without servers: its workload is fixed by the seed (so a
fault-free run and a faulted run can be compared), its fault schedule hits every component, its
checks fail on the damage they look for, and `disputes bench chaos` is a command of its own,
outside the default `disputes bench` run."""
from __future__ import annotations

from click.testing import CliRunner

from tools.bench.chaos import fault_schedule
from tools.bench.chaos_checks import compare, run_checks
from tools.bench.chaos_run import RunResult
from tools.bench.chaos_world import make_plan
from disputes.cli import main

CATEGORIES = ["apparel", "electronics", "food"]


def test_the_same_seed_makes_the_same_workload_and_each_ticket_has_a_merchant_of_its_own() -> None:
    a, b = make_plan(5, 50, CATEGORIES), make_plan(5, 50, CATEGORIES)
    assert a.complaints == b.complaints and a.balances == b.balances and a.answers == b.answers
    merchants = [body["merchant_id"] for _, body in a.complaints]
    assert len(set(merchants)) == 50 and set(merchants) == set(a.balances)
    assert make_plan(6, 50, CATEGORIES).complaints != a.complaints


def test_the_fault_schedule_kills_workers_and_schedulers_and_restarts_each_server_once() -> None:
    order = fault_schedule(3)
    assert order.count("redis") == 1 and order.count("postgres") == 1
    assert order.count("intake") >= 1 and order.count("api") >= 1
    assert order.count("scheduler") >= 3 and order.count("worker") >= 8


def _run(tickets: list[dict], audit: list[dict], outbox: list[dict], ledger: list[dict],
         deliveries: list[tuple[str, dict]]) -> RunResult:
    dispatches = {"not done": 0, "dead": 0, "sent more than once": 0, "applied": 0, "refused": 0, "total": 0}
    return RunResult(False, 1.0, [], tickets, audit, outbox, ledger, dispatches, [], deliveries, (0, ""), {}, {})


def _healthy() -> RunResult:
    tickets = [{"id": 1, "ref": "C-1", "state": "closed", "version": 2}]
    audit = [{"ticket_id": 1, "version": 1, "from_state": None, "to_state": "stage1", "action": "submit",
              "actor": "system", "cause": "m1"},
             {"ticket_id": 1, "version": 2, "from_state": "stage1", "to_state": "closed", "action": "x",
              "actor": "agent:1", "cause": "d1"}]
    outbox = [{"id": 1, "ticket_id": 1, "routing_key": "ticket.stage1", "event_id": "e1", "published": True},
              {"id": 2, "ticket_id": 1, "routing_key": "ticket.closed", "event_id": "e2", "published": True}]
    ledger = [{"id": 1, "key": "k", "kind": "refund_deducted", "ref": "C-1", "amount": 100, "currency": "CNY",
               "entries": ["buyer:u=100", "merchant:m=-100"]}]
    return _run(tickets, audit, outbox, ledger, [("ticket.stage1", {"event_id": "e1"}),
                                                 ("ticket.closed", {"event_id": "e2"})])


def test_a_healthy_run_passes_every_check_and_equals_itself() -> None:
    checks, figures = run_checks(1, _healthy())
    assert all(ok for _, ok, _ in checks), checks
    assert all(ok for _, ok, _ in compare(_healthy(), _healthy()))
    assert figures["transitions"] == 2


def test_the_checks_catch_a_cause_applied_twice_events_out_of_order_and_money_that_differs() -> None:
    run = _healthy()
    run.audit[1]["cause"] = "m1"  # the same message applied a second time
    run.deliveries.reverse()  # the closing event before the creation
    failed = {name for name, ok, _ in run_checks(1, run)[0] if not ok}
    assert failed == {"no cause (message, dispatch) applied twice", "each ticket's events delivered in commit order"}
    other = _healthy()
    other.ledger[0]["amount"] = 99
    other.tickets[0]["state"] = "withdrawn"
    failed = {name for name, ok, _ in compare(_healthy(), other) if not ok}
    assert "ledger identical to the fault-free run (ticket, kind, amount, accounts)" in failed
    assert "final state of every ticket identical" in failed


def test_a_lost_event_and_an_unfinished_ticket_fail_the_run() -> None:
    run = _healthy()
    run.deliveries.pop()
    run.tickets[0]["state"] = "stage4"
    failed = {name for name, ok, _ in run_checks(1, run)[0] if not ok}
    assert failed == {"every committed event published and delivered on op.events", "every ticket in a final state"}


def test_bench_chaos_is_a_command_of_its_own_beside_the_default_benchmarks() -> None:
    out = CliRunner().invoke(main, ["bench", "--help"]).output
    assert "--quick" in out and "--only" in out and "chaos" in out
    out = CliRunner().invoke(main, ["bench", "chaos", "--help"]).output
    assert "--seed" in out and "--tickets" in out and "--json" in out
