"""`disputes demo`: the embedded system end to end with a simulated world, on a small scale."""
from __future__ import annotations

import io
import json
import re

import pytest
from click.testing import CliRunner
from rich.console import Console

from disputes.cli import main
from disputes.cli.books import books
from disputes.settings import Settings
from disputes.wiring import build_app
from tools.demo import demo_policy, print_results, run_demo
from tools.simulation import ANSWERS, OPTIONS, decide, normalize_shares, parse_shares, plan_answers, rng
from tools.simulation.summary import PATH_ROWS, complaints_line, desk_line, paths_table

TICKETS = 30
#: Every merchant answer gets a share, so a small run sees each one.
SHARES = {"direct_refund": 25, "negotiated_reject": 15, "intercept_48h": 25, "platform_judgment": 15, "silent": 20}


@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    return tmp_path_factory.mktemp("demo") / "demo.db"


@pytest.fixture(scope="module")
def result(kept):
    out = io.StringIO()
    demo = run_demo(tickets=TICKETS, seed=11, console=Console(file=out, width=160), merchant_shares=SHARES,
                    timeout=90, keep=kept)
    demo.printed = out.getvalue()  # type: ignore[attr-defined]
    return demo


def test_every_ticket_reaches_a_terminal_state(result):
    assert result.all_terminal and not result.timed_out
    assert result.admitted == TICKETS
    tickets = result.report["tickets"]
    assert tickets["total"] == TICKETS and tickets["open"] == 0


def test_the_merchants_use_every_option_by_their_shares(result):
    # Given shares for all four options and silence, the answers dealt out follow them exactly
    negotiating = sum(result.planned.values())
    assert set(result.planned) == set(ANSWERS)
    for answer, share in normalize_shares(SHARES).items():
        assert abs(result.planned[answer] - share * negotiating) < 1
    # and the system recorded every option (an answer after the deadline would count as silent)
    for option in OPTIONS:
        assert result.by_option[option]["tickets"] >= 1, option
    assert sum(row["tickets"] for row in result.by_option.values()) == negotiating


def test_the_summary_shows_how_many_tickets_each_option_resolved_without_an_agent(result):
    resolved = result.report["tickets"]["by_state"].get("resolved", 0)
    assert sum(row["resolved_without_agent"] for row in result.by_option.values()) == resolved
    for row in result.by_option.values():
        assert row["resolved_without_agent"] + row["to_floor"] + row["withdrawn"] + row["open"] == row["tickets"]
        assert sum(row["resolved_by"].values()) == row["resolved_without_agent"]
    assert result.by_option["platform_judgment"]["resolved_without_agent"] == 0  # it asks for the floor
    assert result.by_option["silent"]["resolved_without_agent"] == 0
    # in one table: the report's, with the answers dealt to the simulated merchants beside it
    assert result.printed.count("Negotiation: ") == 1 and "resolved without an agent" in result.printed
    assert "dealt" in result.printed


def test_every_invariant_of_the_books_holds(result):
    assert result.problems == [] and result.books_ok and result.ok
    assert "every invariant holds" in result.printed


def test_money_is_moved_by_kind_and_every_figure_is_an_integer(result):
    assert result.money["refund_deducted"]["amount"] > 0
    assert all(type(row["count"]) is int and type(row["amount"]) is int for row in result.money.values())
    money = result.report["money"]
    assert money, "the report shows money moved"
    assert all(type(amount) is int for by_currency in money.values() for amount in by_currency.values())
    assert result.printed.count("Money moved") == 1  # one table: every ledger movement, counted


def test_the_payment_paths_end_settled(result):
    # Every platform advance was followed by the merchant's next income, which recovered the debt
    advances = result.money.get("platform_advance", {"count": 0, "amount": 0})
    assert result.world.get("payments reported a merchant's new income", 0) == advances["count"]
    assert result.money.get("debt_settled", {"amount": 0})["amount"] == advances["amount"]
    # and the supervisor decided every payment that waited for approval
    assert not [key for key, n in result.paths.items() if key.endswith("approvals pending") and n]
    assert result.paths["survey answers"] >= 1
    appealed = result.world.get("buyer appealed", 0) + result.world.get("merchant appealed", 0)
    assert result.paths["appeals admitted"] <= appealed


def test_events_arrive_downstream_in_commit_order_and_all_are_published(result):
    assert result.out_of_order == 0
    assert result.report["events"]["unpublished"] == 0
    assert sum(result.events_received.values()) == result.report["events"]["published"]


def test_duplicates_and_the_linked_complaint_create_no_ticket(result):
    assert result.published["complaint.submitted"] > TICKETS + 1
    assert result.report["intake"]["linked_complaints"] == 1


def test_every_complaint_sent_is_accounted_for_in_words(result):
    # Given the complaints sent: one per ticket, the linked one, and a few upstream retries
    sent = result.published["complaint.submitted"]
    repeats = sent - result.distinct["complaint.submitted"]
    assert repeats >= 1
    # Then the summary adds them up, saying what each part is
    line = complaints_line(result)
    assert line.startswith(f"{sent} sent to op.intake = {TICKETS} new tickets + 1 joined an open ticket")
    assert f"+ {repeats} repeats of a complaint already sent (an upstream retry: ignored) + 0 refused" in line
    assert "not accounted for" not in line
    assert sent == TICKETS + 1 + repeats


def test_each_path_of_the_simulation_has_one_row_beside_what_the_system_recorded(result):
    # Every counter of the simulated world is named by a row (none shown under its raw key) ...
    named = {key for _, world, _ in PATH_ROWS for key in world}
    assert {key for key, n in result.world.items() if n} <= named
    table = paths_table(result)
    rows = {row.cells[0]: row.cells[1:] for row in table.rows}
    # ... and where nothing came late, the system recorded what the world did
    assert rows["buyer answered the survey"] == (str(result.world["buyer answered the survey"]),) * 2
    assert rows["buyer or merchant appealed the judgment"][1] == str(result.paths["appeals admitted"])


def test_the_printed_results_read_at_80_columns_one_table_per_question(result, kept):
    # Given the demo's results printed on an 80-column console
    app = build_app(Settings(database_url=f"sqlite:///{kept}", broker_url="memory://", intake_url="memory://"),
                    policy=demo_policy())
    out = io.StringIO()
    with app.db.connection_context():
        print_results(result, books(app.policy, app.clock()), Console(file=out, width=80))
    text = out.getvalue()
    # Then no line is wider, and each question has one table
    assert max(len(line) for line in text.splitlines()) <= 80
    for title in ("Tickets: ", "Negotiation: ", "Money moved", "Time per state", "Demo run", "Merchants' funds"):
        assert text.count(title) == 1, title
    assert "Negotiation by merchant answer" not in text and "Since " not in text  # the old repeats
    # with captions in words (no "dim: hidden") and the counts explained
    assert "dim: hidden" not in text and "dimmed: states no agent works on" in text
    words = " ".join(re.sub(r"[│┃]", " ", text).split())  # the table's cells wrap: read them as words
    assert f"{TICKETS} new tickets + 1 joined an open ticket" in words
    assert "policy [options.stageN]" in text  # text is shown as it is, not read as markup


def test_the_report_is_printed_and_is_json_ready(result):
    assert f"{TICKETS} of {TICKETS} tickets final" in result.printed  # not a terminal: plain progress lines
    assert "\r" not in result.printed and "\x1b" not in result.printed
    json.dumps(result.report)


def test_the_kept_database_passes_disputes_ledger(result, kept):
    # Given the database kept by --keep, with the demo's policy beside it
    assert result.database == str(kept) and kept.exists()
    env = {"OP_DATABASE_URL": f"sqlite:///{kept}", "OP_POLICY": f"{kept}.policy.toml"}
    # When `disputes ledger` looks at it
    reply = CliRunner().invoke(main, ["ledger"], env=env)
    # Then it finds every invariant holding
    assert reply.exit_code == 0, reply.output
    assert "every invariant holds" in reply.output


def test_disputes_plan_reads_the_kept_database_and_says_it_is_too_little_to_plan_from(result, kept, tmp_path):
    # Given the database kept by --keep (30 complaints: fewer than a plan needs) and a forecast
    env = {"OP_DATABASE_URL": f"sqlite:///{kept}", "OP_POLICY": f"{kept}.policy.toml"}
    forecast = tmp_path / "tomorrow.csv"
    forecast.write_text("hour,complaints\n9,20\n10,40\n", encoding="utf-8")
    # When `disputes plan` measures it
    reply = CliRunner().invoke(main, ["plan", "--forecast", str(forecast)], env=env)
    # Then it refuses, saying how many complaints it found and how many it needs
    assert reply.exit_code == 1, reply.output
    assert "too little data to plan from" in reply.output and "complaints were admitted" in reply.output
    assert "at least 50 are needed" in reply.output and "Traceback" not in reply.output
    # and a bad forecast is refused naming its line
    forecast.write_text("hour,complaints\n9,20\n10;40\n", encoding="utf-8")
    reply = CliRunner().invoke(main, ["plan", "--forecast", str(forecast)], env=env)
    assert reply.exit_code == 1 and "tomorrow.csv line 3: expected 2 values" in reply.output, reply.output


def test_merchant_shares_are_parsed_checked_and_dealt_out_exactly():
    assert parse_shares("direct_refund=1, silent=3") == {**dict.fromkeys(ANSWERS, 0.0), "direct_refund": 0.25,
                                                         "silent": 0.75}
    for bad in ("direct_refund", "refund=1", "silent=-1", "silent=0", "silent=x"):
        with pytest.raises(ValueError):
            parse_shares(bad)
    plan = plan_answers([str(i) for i in range(10)], normalize_shares({"intercept_48h": 1, "silent": 1}), seed=3)
    assert sorted(plan.values()).count("intercept_48h") == 5 and set(plan.values()) == {"intercept_48h", "silent"}


def test_the_cli_refuses_bad_shares_and_an_existing_keep_file(tmp_path):
    reply = CliRunner().invoke(main, ["demo", "--merchant-shares", "refund=10"])
    assert reply.exit_code == 2 and "unknown merchant answer" in reply.output
    existing = tmp_path / "x.db"
    existing.write_text("")
    reply = CliRunner().invoke(main, ["demo", "--keep", str(existing)])
    assert reply.exit_code == 2 and "already exists" in reply.output


@pytest.mark.parametrize("terminal, problems, message", [
    (False, [], "did not reach a terminal state"), (True, ["ticket 1 closed with 5 paid of 0 owed"], "invariant")])
def test_the_cli_exits_non_zero_when_a_ticket_is_open_or_an_invariant_fails(monkeypatch, terminal, problems, message):
    from tools import demo as demo_module
    result = demo_module.DemoResult(report={}, all_terminal=terminal, tickets=1, admitted=1, elapsed=0.1,
                                    timed_out=False, problems=problems)
    monkeypatch.setattr(demo_module, "run_demo", lambda **kwargs: result)
    reply = CliRunner().invoke(main, ["demo", "--tickets", "1"])
    assert reply.exit_code == 1 and message in reply.output


def test_the_demo_policy_keeps_the_default_but_shortens_deadlines_to_seconds():
    policy = demo_policy()
    assert policy.deadlines.merchant_response.seconds() <= 5
    assert policy.complaint_fee.approval_threshold < max(policy.complaint_fee.amounts)  # fees need a supervisor
    assert policy.evidence.max_rounds >= 1 and "stage3" in policy.options


def test_agents_only_click_configured_options_and_partial_refunds_stay_within_the_claim():
    options = demo_policy().options_for("stage3").describe()
    ticket = {"id": 1, "version": 3, "allowed_actions": ["judge", "cannot_judge"],
              "amounts": {"claimed": 1234, "refunded": 0}}
    liabilities = {c["code"] for c in options["actions"][0]["params"]["liability"]["choices"]}
    for version in range(200):
        action, params, qc = decide(3, ticket, options, rng(1, version))
        assert action in ("judge", "cannot_judge") and qc is not None
        if action == "judge":
            assert params["liability"] in liabilities
            assert 0 < params.get("amount", 1) <= 1234


def test_a_judge_never_awards_less_than_the_buyer_already_received():
    options = demo_policy().options_for("stage3").describe()
    ticket = {"id": 2, "version": 9, "allowed_actions": ["judge"], "amounts": {"claimed": 1000, "refunded": 400}}
    for version in range(100):
        action, params, _ = decide(3, {**ticket, "version": version}, options, rng(2, version))
        assert params["liability"] == "merchant"
        assert params["remedy"] == "full_refund" or 400 <= params["amount"] <= 1000


def test_stage4_rejects_a_voucher_for_the_wrong_amount_and_verifies_the_right_one():
    options = demo_policy().options_for("stage4").describe()
    ticket = {"id": 3, "version": 5, "allowed_actions": ["verify_refund", "reject_voucher"],
              "amounts": {"refund": 5000, "refunded": 0}, "payment": {"voucher": "pending"},
              "evidence": [{"party": "merchant", "kind": "voucher", "note": "4500 CNY"}]}
    assert decide(4, ticket, options, rng(3))[0] == "reject_voucher"
    ticket["evidence"].append({"party": "merchant", "kind": "voucher", "note": "5000 CNY"})
    assert decide(4, ticket, options, rng(3))[0] == "verify_refund"


def test_stage4_reads_a_voucher_note_in_major_units_as_people_read_it():
    options = demo_policy().options_for("stage4").describe()
    ticket = {"id": 4, "version": 5, "allowed_actions": ["verify_refund", "reject_voucher"],
              "amounts": {"refund": 123_456, "refunded": 0}, "payment": {"voucher": "pending"},
              "evidence": [{"party": "merchant", "kind": "voucher", "note": "1,230.00 CNY"}]}
    assert decide(4, ticket, options, rng(4))[0] == "reject_voucher"
    ticket["evidence"].append({"party": "merchant", "kind": "voucher", "note": "1,234.56 CNY"})
    assert decide(4, ticket, options, rng(4))[0] == "verify_refund"


def test_the_desk_line_says_what_each_refusal_was():
    line = desk_line({"stage1 claims": 5, "stage1 to_judgment": 5, "stage4 waited for a supervisor": 2,
                      "supervisor approve_payment complaint_fee": 2, "qc flags": 1,
                      "complaint fee over the month's budget (422)": 3, "claim answered 409": 2,
                      "supervisor approve_payment answered 202": 1})
    assert line.startswith("5 tickets claimed (in stage 1 a claim is the take-over), 5 decisions applied; "
                           "the supervisor decided 2 payments awaiting approval (an agent waited for 2 of them")
    assert "3 complaint fees over the month's budget (HTTP 422" in line and "2 claims answered HTTP 409" in line
    assert "1 supervisor approve_payment accepted (HTTP 202) but refused by the stage worker" in line
    assert "qc flags" not in line  # the report's "Quality checks" table answers that
