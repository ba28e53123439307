"""`disputes demo`: the embedded system end to end with a simulated world, on a small scale."""
from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from disputes.demo import demo_policy, run_demo
from disputes.simulation import decide, rng

TICKETS = 20


@pytest.fixture(scope="module")
def result():
    out = io.StringIO()
    demo = run_demo(tickets=TICKETS, seed=11, console=Console(file=out, width=140), timeout=35)
    demo.printed = out.getvalue()  # type: ignore[attr-defined]
    return demo


def test_every_ticket_reaches_a_terminal_state(result):
    assert result.all_terminal and not result.timed_out
    assert result.admitted == TICKETS


def test_the_reports_counts_add_up(result):
    tickets = result.report["tickets"]
    assert tickets["total"] == TICKETS and tickets["open"] == 0
    assert sum(tickets["terminal"].values()) == TICKETS
    assert sum(tickets["by_state"].values()) == TICKETS
    negotiation = result.report["negotiation"]
    assert negotiation["tickets"] + negotiation["straight_to_floor"] == TICKETS


def test_every_money_figure_is_an_integer_in_minor_units(result):
    money = result.report["money"]
    assert money, "a demo moves money"
    assert all(type(amount) is int for by_currency in money.values() for amount in by_currency.values())


def test_events_arrive_downstream_in_commit_order_and_all_are_published(result):
    assert result.out_of_order == 0
    assert result.report["events"]["unpublished"] == 0
    assert sum(result.events_received.values()) == result.report["events"]["published"]


def test_duplicates_and_the_linked_complaint_create_no_ticket(result):
    assert result.published["complaint.submitted"] > TICKETS + 1
    assert result.report["intake"]["linked_complaints"] == 1


def test_the_report_is_printed_and_is_json_ready(result):
    assert "Money moved" in result.printed and "tickets final" in result.printed
    json.dumps(result.report)


def test_the_demo_policy_keeps_the_default_but_shortens_deadlines_to_seconds():
    policy = demo_policy()
    assert policy.deadlines.merchant_response.seconds() == 3
    assert policy.evidence.max_rounds >= 1 and "stage3" in policy.options


def test_agents_only_click_configured_options_and_partial_refunds_stay_within_the_claim():
    options = demo_policy().options_for("stage3").describe()
    ticket = {"id": 1, "version": 3, "allowed_actions": ["judge", "cannot_judge"], "amounts": {"claimed": 1234}}
    liabilities = {c["code"] for c in options["actions"][0]["params"]["liability"]["choices"]}
    for version in range(200):
        action, params, qc = decide(3, ticket, options, rng(1, version))
        assert action in ("judge", "cannot_judge") and qc is not None
        if action == "judge":
            assert params["liability"] in liabilities
            assert 0 < params.get("amount", 1) <= 1234
